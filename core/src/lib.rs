//! Shared library of the mesh: configuration types and validation, identity and certificates,
//! the catalog model and the lease under which peers' catalogs are held, the wire header of QUIC
//! streams, the JSON API between components, and the pure traffic logic (load balancing, outlier
//! detection, circuit breaking, retry budgets, priority spill, locality order).
//!
//! The pure-logic modules take time as an argument (`now: Instant`) and never touch sockets, so
//! they are deterministic and tested without sleeps. The few I/O helpers here (admin server,
//! controller client, TLS builders) are shared by every component; component behaviour lives in
//! the component crates, not here.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_token;
pub mod api;
pub mod argv;
pub mod backoff;
pub mod balance;
pub mod bootstrap;
pub mod breaker;
pub mod catalog;
pub mod config;
pub mod control_client;
pub mod host_port;
pub mod http;
pub mod identity;
pub mod latency_weight;
pub mod locality;
pub mod member_args;
pub mod names;
pub mod outlier;
pub mod peer_catalogs;
pub mod policy;
pub mod renewal;
pub mod retry_budget;
pub mod serve;
pub mod spill;
pub mod telemetry;
pub mod wire;
