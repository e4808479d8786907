//! The remote end of a tunnel, in phases: authorise against this cluster's exports, connect to
//! the endpoint (bounded), reply, then splice. Nothing connects before authorisation passed.

use std::time::Duration;

use mesh_core::wire::{StreamHeader, TunnelRefusal, TunnelReply};
use quinn::{RecvStream, SendStream};
use tokio::net::TcpStream;

use crate::export_policy::authorise_tunnel;
use crate::link_context::LinkContext;
use crate::splice::{SpliceCounters, splice};
use crate::stream_io::refuse;

/// Bound on connecting to an endpoint: endpoints are in this cluster, so a slow connect means a
/// dead one, and the peer's sidecar should retry elsewhere rather than wait.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves a tunnel that `peer` opened with `header`.
pub(crate) async fn serve(
    ctx: &LinkContext,
    peer: &str,
    header: StreamHeader,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let exports = ctx.current_exports();
    let endpoint = match authorise_tunnel(&ctx.cluster, &exports, &header) {
        Ok(endpoint) => endpoint,
        Err(refusal) => {
            if refusal.kind == TunnelRefusal::BadHeader {
                ctx.metrics.stream_rejected("bad_field");
            }
            ctx.metrics.tunnel(peer, "egress", refusal.kind.label());
            tracing::warn!(
                %peer,
                service = %header.service,
                endpoint = ?header.endpoint,
                trace = %header.trace,
                reason = refusal.kind.label(),
                error = %refusal.message,
                "tunnel refused"
            );
            refuse(&mut send, &mut recv, refusal.kind, &refusal.message).await;
            return;
        }
    };

    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return connect_failed(
                ctx,
                peer,
                &header,
                send,
                recv,
                format!("connecting to {endpoint}: {e}"),
            )
            .await;
        }
        Err(_) => {
            let msg = format!("connecting to {endpoint} timed out after {CONNECT_TIMEOUT:?}");
            return connect_failed(ctx, peer, &header, send, recv, msg).await;
        }
    };
    let _ = tcp.set_nodelay(true);

    if let Err(e) = send.write_all(&TunnelReply::Accepted.encode()).await {
        tracing::debug!(%peer, %endpoint, error = %e, "peer went away before the tunnel reply");
        return;
    }
    ctx.metrics.tunnel(peer, "egress", "accepted");
    tracing::debug!(%peer, service = %header.service, %endpoint, trace = %header.trace, "tunnel accepted");
    let _active = ctx.metrics.active_tunnel(peer);
    let counters = SpliceCounters::new(&ctx.metrics, peer);
    match splice(tcp, send, recv, &counters).await {
        Ok(done) => {
            tracing::debug!(%peer, %endpoint, to_peer = done.to_peer, from_peer = done.from_peer, "tunnel closed")
        }
        Err(e) => tracing::debug!(%peer, %endpoint, error = %e, "tunnel broke"),
    }
}

async fn connect_failed(
    ctx: &LinkContext,
    peer: &str,
    header: &StreamHeader,
    mut send: SendStream,
    mut recv: RecvStream,
    msg: String,
) {
    ctx.metrics
        .tunnel(peer, "egress", TunnelRefusal::ConnectFailed.label());
    tracing::warn!(%peer, service = %header.service, trace = %header.trace, error = %msg, "tunnel endpoint unreachable");
    refuse(&mut send, &mut recv, TunnelRefusal::ConnectFailed, &msg).await;
}
