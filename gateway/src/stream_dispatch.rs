//! Every stream a peer opens starts with a header: read it (bounded), refuse anything malformed,
//! then hand the stream to the control-stream receiver or the tunnel egress.

use std::sync::Arc;

use mesh_core::wire::{StreamKind, TunnelRefusal};
use quinn::{RecvStream, SendStream};
use tokio::sync::Semaphore;

use crate::control_stream;
use crate::link_context::LinkContext;
use crate::peer_link::PeerLink;
use crate::stream_io::{read_header, refuse};
use crate::tunnel_egress;

/// Handles one stream the peer opened on connection `conn_id`; a control stream takes one of
/// the connection's `control_slots` while it runs (see [`control_stream::MAX_CONTROL_STREAMS`]).
pub(crate) async fn handle(
    ctx: Arc<LinkContext>,
    link: Arc<PeerLink>,
    conn_id: usize,
    control_slots: Arc<Semaphore>,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let header = match read_header(&mut recv).await {
        Ok(h) => h,
        Err(e) => {
            ctx.metrics.stream_rejected(e.label());
            tracing::warn!(peer = %link.cluster, reason = e.label(), error = %e, "refusing a stream with a bad header");
            refuse(
                &mut send,
                &mut recv,
                TunnelRefusal::BadHeader,
                &e.to_string(),
            )
            .await;
            return;
        }
    };
    match header.kind {
        StreamKind::Control => {
            if header.cluster != link.cluster {
                let msg = format!(
                    "control stream names cluster {} but arrived on the link to {}",
                    header.cluster, link.cluster
                );
                ctx.metrics.stream_rejected("wrong_cluster");
                tracing::warn!(peer = %link.cluster, error = %msg, "refusing a control stream");
                refuse(&mut send, &mut recv, TunnelRefusal::BadHeader, &msg).await;
                return;
            }
            let Ok(_slot) = control_slots.try_acquire_owned() else {
                let msg = format!(
                    "{} control streams are open on this connection already, the most at once",
                    control_stream::MAX_CONTROL_STREAMS
                );
                ctx.metrics.stream_rejected("too_many_control_streams");
                tracing::warn!(peer = %link.cluster, error = %msg, "refusing a control stream");
                refuse(&mut send, &mut recv, TunnelRefusal::BadHeader, &msg).await;
                return;
            };
            link.confirm(&ctx, conn_id);
            control_stream::run_receiver(ctx.clone(), link.cluster.clone(), send, recv).await;
        }
        StreamKind::Tunnel => tunnel_egress::serve(&ctx, &link.cluster, header, send, recv).await,
    }
}
