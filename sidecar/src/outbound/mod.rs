//! The outbound direction: a plain HTTP proxy for the local app (HTTP/1.1 in absolute or origin
//! form, HTTP/2 prior knowledge) that sends each request over mTLS HTTP/2 to an endpoint of the
//! destination service, in this cluster or through the gateway in another. The whole stack is
//! assembled in [`stack::outbound_service`]; each of its layers is a module here, and the other
//! modules are the pure logic and the plumbing those layers use.

pub mod balance;
pub mod balancer;
pub mod body;
pub mod breaker;
pub mod cache;
pub mod connect;
pub mod connect_error;
pub mod endpoint_choice;
pub mod errors;
pub mod fault;
pub mod grpc_status;
pub mod mirror;
pub mod pool;
pub mod rate_limit;
pub mod resilience;
pub mod resolve;
pub mod retry;
pub mod retry_policy;
pub mod route;
pub mod stack;
pub mod upgrade;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use mesh_core::serve::ConnectionCap;
use tokio::net::TcpListener;

use crate::state::SidecarState;
use crate::transparent::Capture;

/// Serves the outbound listener until the future is dropped, which also closes every
/// connection it accepted: the app's proxy requests, and the connections capture redirects
/// to it (`capture` decides what becomes of those, within its limits). No connection cap.
pub async fn serve(listener: TcpListener, state: Arc<SidecarState>, capture: Arc<Capture>) {
    serve_within(listener, state, capture, ConnectionCap::unlimited()).await
}

/// [`serve`] holding at most `cap` connections (one more is closed at once and counted).
pub async fn serve_within(
    listener: TcpListener,
    state: Arc<SidecarState>,
    capture: Arc<Capture>,
    cap: ConnectionCap,
) {
    let budgets = stack::retry_budgets(&state);
    let http = stack::outbound_service::<Incoming>(&state, budgets.clone());
    let opaque = stack::outbound_service::<Empty<Bytes>>(&state, budgets);
    mesh_core::serve::accept_loop_capped(listener, "outbound", cap, move |stream, peer| {
        let (capture, http, opaque) = (capture.clone(), http.clone(), opaque.clone());
        async move { capture.outbound(stream, peer, http, opaque).await }
    })
    .await
}
