//! The inbound direction: mTLS from other sidecars and gateways, forwarded to the local app.
//! The listener is [`server`]; the whole stack is assembled in [`stack::inbound_stack`]; each
//! of its layers is a module here.

pub mod app;
pub mod authorization;
pub mod errors;
pub mod opaque;
pub mod origin_form;
pub mod rate_limit;
pub mod served_by;
pub mod server;
pub mod stack;
pub mod upgrade;

pub use server::serve_within;
