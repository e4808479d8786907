//! The inbound listener, in phases: accept -> TLS handshake (mandatory client certificate,
//! verified against every trust bundle known: own and linked clusters) -> HTTP/2 -> each
//! request through the [inbound stack](super::stack::inbound_stack). A failure in any phase is
//! logged with the peer and cause. A connection that capture redirected here from one of the
//! app's ports comes from outside the mesh and is the inbound policy's (see
//! `crate::transparent`).

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_core::identity::peer_spiffe_id;
use mesh_core::names::ServiceKey;
use mesh_core::serve::{Listening, accept_loop_capped, serve_connection_with, tls_handshake};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::stack::inbound_stack;
use crate::facts::PeerIdentity;
use crate::state::SidecarState;
use crate::transparent::Capture;
use crate::transparent::original_dst::redirected_from;

/// Serves inbound mTLS on `listener` for `service`, forwarding to the app at `app`, until the
/// future is dropped, which also closes every connection it accepted. `advertised` is the
/// address peers reach this sidecar at (its endpoint in the catalog). Within `listening`'s
/// bounds (`Listening::uncapped(ServeLimits::default())` for the defaults and no cap).
pub async fn serve_within(
    listener: TcpListener,
    state: Arc<SidecarState>,
    service: ServiceKey,
    app: SocketAddr,
    advertised: SocketAddr,
    capture: Arc<Capture>,
    listening: Listening,
) {
    let acceptor = TlsAcceptor::from(state.identity().server.clone());
    let stack = inbound_stack(&state, service, app, advertised);
    let Listening { limits, cap } = listening;
    accept_loop_capped(listener, "inbound", cap, move |stream, peer| {
        let acceptor = acceptor.clone();
        let stack = stack.clone();
        let capture = capture.clone();
        async move {
            if let Some(original) = redirected_from(&stream) {
                return capture.inbound_plaintext(stream, peer, original).await;
            }
            // The verifier's refusal names an unlinked trust domain and what to run.
            let Some(tls) = tls_handshake(&acceptor, stream, peer, "inbound").await else {
                return;
            };
            let client = peer_spiffe_id(tls.get_ref().1.peer_certificates());
            tracing::debug!(%peer, client = ?client.as_ref().map(|id| id.to_string()), "inbound connection");
            // The caller's identity goes down with each of the connection's requests.
            let caller = client.map(PeerIdentity::new);
            let stack = stack.map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                if let Some(caller) = &caller {
                    req.extensions_mut().insert(caller.clone());
                }
                req
            });
            serve_connection_with(tls, peer, "inbound", limits, stack).await;
        }
    })
    .await
}
