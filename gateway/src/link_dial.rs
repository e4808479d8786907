//! Dialing a peer gateway and checking, after the handshake, that it is that peer's gateway.

use std::time::Duration;

use mesh_core::api::PeerLinkConfig;
use mesh_core::identity::SpiffeId;
use quinn::Connection;

use crate::link_context::LinkContext;
use crate::quic_endpoint::{SERVER_NAME, codes, describe, handshake_failure_label, peer_id};

/// Outer bound on one handshake. QUIC gives up by itself after the idle timeout; this only
/// guards against a handshake that keeps making progress without finishing.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed attempt to link.
#[derive(Debug)]
pub(crate) struct LinkFailure {
    /// Metrics label.
    pub label: &'static str,
    /// For the log and `mesh status`.
    pub message: String,
    /// Whether it counts as a failed handshake.
    pub handshake: bool,
}

/// Dials the peer described by `cfg`; the connection is returned only if the peer presented
/// the SPIFFE ID of that cluster's gateway.
pub(crate) async fn dial(
    ctx: &LinkContext,
    cfg: &PeerLinkConfig,
) -> Result<Connection, LinkFailure> {
    if let Some(message) = ctx.expired_certificate() {
        // The peer would refuse the handshake; say why instead of dialing.
        return Err(LinkFailure {
            label: "certificate_expired",
            message,
            handshake: false,
        });
    }
    let connecting = ctx
        .endpoint
        .connect_with(ctx.client_config.clone(), cfg.gateway_addr, SERVER_NAME)
        .map_err(|e| LinkFailure {
            label: "other",
            message: format!("cannot dial {}: {e}", cfg.gateway_addr),
            handshake: false,
        })?;
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Err(_) => {
            return Err(LinkFailure {
                label: "timeout",
                message: format!(
                    "handshake with {} did not finish in {HANDSHAKE_TIMEOUT:?}",
                    cfg.gateway_addr
                ),
                handshake: true,
            });
        }
        Ok(Err(e)) => {
            return Err(LinkFailure {
                label: handshake_failure_label(&e),
                message: format!("{}: {}", cfg.gateway_addr, describe(&e)),
                handshake: true,
            });
        }
        Ok(Ok(conn)) => conn,
    };
    let expected = SpiffeId::gateway(&cfg.trust_bundle.trust_domain);
    match peer_id(&conn) {
        Some(id) if id == expected => Ok(conn),
        other => {
            let presented = other
                .map(|id| id.to_string())
                .unwrap_or_else(|| "no SPIFFE ID".into());
            let message = format!(
                "{} presented {presented}, but the gateway of {} must present {expected}",
                cfg.gateway_addr, cfg.cluster
            );
            conn.close(codes::WRONG_PEER, message.as_bytes());
            Err(LinkFailure {
                label: "wrong_identity",
                message,
                handshake: true,
            })
        }
    }
}
