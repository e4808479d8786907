//! The outbound direction: a plain HTTP proxy for the local app (HTTP/1.1 in absolute or origin
//! form, HTTP/2 prior knowledge) that sends each request over mTLS HTTP/2 to an endpoint of the
//! destination service, in this cluster or through the gateway in another. The whole request
//! walk is in [`proxy`]; the other modules are the pieces it calls.

pub mod balancer;
pub mod body;
pub mod connect_error;
pub mod errors;
pub mod pool;
pub mod proxy;
pub mod resilience;
pub mod resolve;
pub mod retry;

use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::state::SidecarState;

/// Serves the outbound proxy on `listener` until the future is dropped, which also closes
/// every connection it accepted.
pub async fn serve(listener: TcpListener, state: Arc<SidecarState>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
                (stream, peer) = mesh_core::telemetry::accept(&listener, "outbound") => {
                    let state = state.clone();
                    connections.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, std::convert::Infallible>(proxy::handle(&state, req).await) }
                        });
                        let mut builder = auto::Builder::new(TokioExecutor::new());
                        // The timer bounds how long a client may take to send its request head (slowloris).
        builder.http1().timer(TokioTimer::new());
        builder.http2().adaptive_window(true).timer(TokioTimer::new());
                        if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                            tracing::debug!(%peer, error = %e, "outbound connection ended with an error");
                        }
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
    }
}
