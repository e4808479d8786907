//! The east-west gateway of one cluster (`mesh gateway`).
//!
//! It owns the QUIC links to the gateways of linked clusters (one connection per peer, mTLS
//! with SPIFFE IDs, keep-alive, reconnect with jittered backoff, link health reported to the
//! controller), the tunnel port where local sidecars open HTTP/2 `CONNECT` tunnels that it maps
//! onto QUIC streams, the remote end of those tunnels (authorised against this cluster's
//! exports, then spliced to the endpoint), and the control streams that carry export catalogs
//! between controllers.
//!
//! It does not decide anything about routing or failover (the controller does), it never
//! terminates the inner TLS between sidecars (it only copies bytes), and it keeps no state of
//! its own: everything comes from the controller's `GatewaySnapshot`, and the last one stays in
//! force while the controller is away. The controller may run as several replicas: the gateway
//! reports to and delivers peers' catalogs to every one of them (`controller_set`).
#![forbid(unsafe_code)]

mod ack_watch;
mod args;
mod catalog_frame;
mod catalog_sink;
mod connect_request;
mod control_stream;
mod controller_session;
mod controller_set;
mod error;
mod export_policy;
mod gateway_core;
mod link_acceptor;
mod link_connection;
mod link_context;
mod link_dial;
mod link_set;
mod metrics;
mod peer_link;
mod pending_catalog;
mod quic_endpoint;
mod replica_table;
mod run;
mod splice;
mod stream_dispatch;
mod stream_io;
mod tunnel_egress;
mod tunnel_ingress;

pub use args::{GatewayArgs, GatewayConfig};
pub use catalog_frame::{FrameError, MAX_FRAME_LEN, encode_frame, read_frame, write_frame};
pub use catalog_sink::{CatalogSink, Delivery, DeliveryError, DeliveryFuture};
pub use connect_request::IngressError;
/// For the fuzz targets (`fuzz/`): the tunnel port's request parsing.
#[doc(hidden)]
pub use connect_request::{ConnectTarget, parse_connect};
pub use controller_set::{ResolveControllers, ResolveFuture, SystemResolver};
pub use error::GatewayError;
pub use export_policy::{Refusal, authorise_tunnel};
pub use gateway_core::{GatewayCore, GatewaySettings, LinkBoard};
pub use quic_endpoint::SERVER_NAME;
pub use run::{run, run_with_resolver};
