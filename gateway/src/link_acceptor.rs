//! Accepting connections from peer gateways: complete the handshake (the verifier refuses
//! unlinked trust domains), identify the peer from its certificate, hand the connection to
//! that peer's link.

use std::sync::Arc;

use quinn::{Connection, Incoming};

use crate::link_context::LinkContext;
use crate::link_dial::HANDSHAKE_TIMEOUT;
use crate::link_set::LinkTable;
use crate::peer_link::{PeerLink, Role};
use crate::quic_endpoint::{codes, describe, handshake_failure_label, peer_id};

/// Accepts connections until the endpoint closes.
pub(crate) async fn accept_loop(ctx: Arc<LinkContext>, table: Arc<LinkTable>) {
    while let Some(incoming) = ctx.endpoint.accept().await {
        tokio::spawn(accept_one(ctx.clone(), table.clone(), incoming));
    }
}

async fn accept_one(ctx: Arc<LinkContext>, table: Arc<LinkTable>, incoming: Incoming) {
    let remote = incoming.remote_address();
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            let reason = handshake_failure_label(&e);
            ctx.metrics.handshake_failure(reason);
            tracing::warn!(%remote, reason, error = %describe(&e), "refused a QUIC handshake from a would-be peer gateway");
            return;
        }
        Err(_) => {
            ctx.metrics.handshake_failure("timeout");
            tracing::warn!(%remote, "QUIC handshake did not finish in {HANDSHAKE_TIMEOUT:?}");
            return;
        }
    };
    match identify(&ctx, &table, &conn) {
        Ok(link) => link.hand_over(conn),
        Err((reason, msg)) => {
            ctx.metrics.handshake_failure(reason);
            tracing::warn!(%remote, reason, error = %msg, "refused a connection from a peer gateway");
            conn.close(codes::WRONG_PEER, msg.as_bytes());
        }
    }
}

/// The link this connection belongs to: the client certificate must be a gateway's, of a
/// linked cluster that dials us.
fn identify(
    ctx: &LinkContext,
    table: &LinkTable,
    conn: &Connection,
) -> Result<Arc<PeerLink>, (&'static str, String)> {
    let Some(id) = peer_id(conn) else {
        return Err((
            "wrong_identity",
            "the client certificate carries no SPIFFE ID".into(),
        ));
    };
    if id.path != "gateway" {
        return Err((
            "wrong_identity",
            format!("{id} is not a gateway identity (spiffe://<trust domain>/gateway)"),
        ));
    }
    let trust = ctx.trust.current();
    let Some(cluster) = trust.cluster_of(&id.trust_domain) else {
        return Err((
            "untrusted_peer",
            format!("trust domain {} is not linked", id.trust_domain),
        ));
    };
    let Some(link) = table.get(cluster) else {
        return Err((
            "not_linked",
            format!("{id} belongs to {cluster}, which is not a linked peer"),
        ));
    };
    if link.role != Role::Accept {
        return Err((
            "unexpected_dialer",
            format!(
                "{cluster} dialed, but {} sorts lower and dials {cluster}",
                ctx.cluster
            ),
        ));
    }
    Ok(link)
}
