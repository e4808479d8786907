//! The outbound direction: a plain HTTP proxy for the local app (HTTP/1.1 in absolute or origin
//! form, HTTP/2 prior knowledge) that sends each request over mTLS HTTP/2 to an endpoint of the
//! destination service, in this cluster or through the gateway in another. The whole stack is
//! assembled in [`stack::outbound_stack`]; each of its layers is a module here, and the other
//! modules are the pure logic and the plumbing those layers use.

pub mod balance;
pub mod balancer;
pub mod body;
pub mod breaker;
pub mod connect;
pub mod connect_error;
pub mod errors;
pub mod pool;
pub mod resilience;
pub mod resolve;
pub mod retry;
pub mod retry_policy;
pub mod stack;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::state::SidecarState;

/// Serves the outbound proxy on `listener` until the future is dropped, which also closes
/// every connection it accepted.
pub async fn serve(listener: TcpListener, state: Arc<SidecarState>) {
    mesh_core::serve::serve_plain(listener, "outbound", stack::outbound_stack(&state)).await
}
