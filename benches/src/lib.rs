//! Benchmarks of the mesh. This crate owns `mesh-bench`, the end-to-end harness: an open-loop
//! load generator (HdrHistogram, latency measured from each request's intended send time so
//! coordinated omission is corrected; HTTP/1.1 and HTTP/2), the topology it measures (one
//! upstream server behind every path: direct, one sidecar hop, the mTLS sidecar pair, the
//! cross-cluster path through two gateways and QUIC, nginx and HAProxy as reference proxies),
//! CPU and memory sampling from `/proc`, the QUIC link and control-plane measurements, DNS
//! throughput with `dnsperf` against the mesh's DNS and CoreDNS, and the report (Markdown, JSON,
//! SVG). The criterion micro-benchmarks of the pure hot paths live in
//! `benches/`.
//!
//! It does not implement or change any component: every path runs the real `mesh` binary as
//! separate processes, started through `mesh-launcher`'s `Process`. Numbers are only compared
//! within one run on one machine; the report records the machine and conditions with them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
pub mod compare;
pub mod control_plane;
pub mod dns;
pub mod dnsperf;
pub mod error;
pub mod latency;
pub mod link;
pub mod load;
pub mod machine;
pub mod procstat;
pub mod reference;
pub mod report;
pub mod servers;
pub mod topology;

pub use args::BenchArgs;
pub use compare::run;
pub use error::BenchError;
