//! A peer gateway driven by hand: a QUIC connection to a test gateway made with a peer's
//! gateway identity, on which a test writes control-stream frames of its own making.

use std::sync::Arc;

use anyhow::{Context, Result};
use mesh_core::api::ALPN_MESH_LINK;
use mesh_core::identity::TrustStore;
use quinn::crypto::rustls::QuicClientConfig;

use super::{Cluster, TestGateway, exports, wait_until};

/// Publishes to `gateway` (of `local`) a snapshot that knows `peer` at a dead address (so
/// `gateway` never dials it) and exports nothing, then dials `gateway` as `peer`'s gateway.
/// Gives the client endpoint (keep it for as long as the connection) and the connection.
pub(crate) async fn dial_as_peer(
    peer: &Cluster,
    local: &Cluster,
    gateway: &TestGateway,
) -> Result<(quinn::Endpoint, quinn::Connection)> {
    gateway.publish(local.snapshot(
        1,
        vec![peer.peer("127.0.0.1:9".parse()?)],
        exports(&local.name, 1, &[]),
    ));
    // Dial only once the gateway follows that snapshot (it knows the peer and trusts its
    // bundle): a connection accepted before would find no link to deliver its catalog to.
    wait_until(
        &format!("{} knows its peer {}", local.name, peer.name),
        || gateway.core.board().status(&peer.name).is_some(),
    )
    .await?;
    let tls = mesh_core::identity::client_config(
        Some(&peer.gateway_id),
        TrustStore::new(std::slice::from_ref(&local.bundle))?,
        &[ALPN_MESH_LINK],
    )?;
    let client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let conn = endpoint
        .connect_with(client, gateway.core.quic_addr(), mesh_gateway::SERVER_NAME)?
        .await
        .with_context(|| format!("the handshake of {}'s hand-driven gateway", peer.name))?;
    Ok((endpoint, conn))
}

/// One control-stream frame: `body` (a catalog message as JSON) behind its length.
pub(crate) fn control_frame(body: &[u8]) -> Result<Vec<u8>> {
    let mut frame = u32::try_from(body.len())?.to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    Ok(frame)
}
