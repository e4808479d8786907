//! The inbound direction: mTLS from other sidecars and gateways, forwarded to the local app.
//! The walk is in [`server`]; [`app`] is the pooled client of the app.

pub mod app;
pub mod server;

pub use server::serve;
