//! The QUIC endpoint shared by every link: bound once, both server (peers that sort lower dial
//! us) and client (we dial peers that sort higher), with mTLS from the gateway identity and the
//! swappable trust store of linked clusters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::api::ALPN_MESH_LINK;
use mesh_core::identity::{IdentitySource, RotatingIdentity, SpiffeId, TrustStore, peer_spiffe_id};
use mesh_core::telemetry::bind_error;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, ConnectionError, Endpoint, IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::CertificateDer;

use crate::error::GatewayError;

/// Server name sent when dialing. Peers are identified by their SPIFFE ID, checked after the
/// handshake, not by DNS names.
pub const SERVER_NAME: &str = "gateway.mesh.invalid";

/// Concurrent bidirectional streams a peer may open: one per tunnel, and every pooled
/// sidecar-to-sidecar connection of a whole cluster can ride one link.
const MAX_BIDI_STREAMS: u32 = 4096;
/// Per-stream receive window: 8 MiB keeps one tunnel at line rate over a 100 ms, ~600 Mbit/s
/// path, while the connection window bounds the total buffered per peer.
const STREAM_RECEIVE_WINDOW: u32 = 8 * 1024 * 1024;
/// Per-connection receive window (all streams of one peer together).
const CONNECTION_RECEIVE_WINDOW: u32 = 64 * 1024 * 1024;
/// Per-connection send buffer.
const SEND_WINDOW: u64 = 64 * 1024 * 1024;

/// QUIC application error codes this gateway closes connections and streams with.
pub(crate) mod codes {
    use quinn::VarInt;
    /// Clean shutdown or unlink.
    pub(crate) const CLOSED: VarInt = VarInt::from_u32(0);
    /// The peer is not who it must be (wrong SPIFFE ID, unexpected dialer).
    pub(crate) const WRONG_PEER: VarInt = VarInt::from_u32(1);
    /// A newer connection from the same peer replaced this one.
    pub(crate) const REPLACED: VarInt = VarInt::from_u32(2);
    /// The peer never confirmed the link with its control stream.
    pub(crate) const UNCONFIRMED: VarInt = VarInt::from_u32(3);
    /// The peer acknowledged nothing for too long: the path is broken in at least one direction.
    pub(crate) const UNRESPONSIVE: VarInt = VarInt::from_u32(4);
    /// The closing side's own certificate expired (its renewal failing).
    pub(crate) const CERT_EXPIRED: VarInt = VarInt::from_u32(5);
    /// A stream refused (bad header, not exported) or broken mid-splice.
    pub(crate) const STREAM_REFUSED: VarInt = VarInt::from_u32(16);
}

/// The transport settings of every link connection.
pub(crate) fn transport_config(
    keep_alive: Duration,
    idle_timeout: Duration,
) -> Result<Arc<TransportConfig>, GatewayError> {
    let idle = IdleTimeout::try_from(idle_timeout)
        .map_err(|e| GatewayError::Quic(format!("idle timeout {idle_timeout:?}: {e}")))?;
    let mut t = TransportConfig::default();
    t.keep_alive_interval(Some(keep_alive))
        .max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_BIDI_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW))
        .send_window(SEND_WINDOW);
    Ok(Arc::new(t))
}

/// The server side: client certificates are mandatory and verified against `trust`.
pub(crate) fn server_config(
    identity: &RotatingIdentity,
    trust: TrustStore,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ServerConfig, GatewayError> {
    let tls = mesh_core::identity::server_config(identity, trust, &[ALPN_MESH_LINK], false)?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| GatewayError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport);
    Ok(cfg)
}

/// The client side used to dial peers.
pub(crate) fn client_config(
    identity: &RotatingIdentity,
    trust: TrustStore,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ClientConfig, GatewayError> {
    let tls = mesh_core::identity::client_config(
        Some(identity as &dyn IdentitySource),
        trust,
        &[ALPN_MESH_LINK],
    )?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| GatewayError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport);
    Ok(cfg)
}

/// Binds the UDP socket (errors name the gateway and the address) and starts the endpoint.
pub(crate) fn bind_endpoint(
    addr: SocketAddr,
    server: quinn::ServerConfig,
) -> Result<Endpoint, GatewayError> {
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|e| bind_error("gateway", "quic", addr, &e))?;
    Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| bind_error("gateway", "quic", addr, &e).into())
}

/// The SPIFFE ID of the peer of an established connection.
pub(crate) fn peer_id(conn: &Connection) -> Option<SpiffeId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    peer_spiffe_id(Some(certs.as_slice()))
}

/// TLS alerts that mean "your certificate is not acceptable" (RFC 8446 section 6.2).
const CERTIFICATE_ALERTS: [u8; 7] = [42, 43, 44, 45, 46, 48, 116];

fn is_certificate_alert(code: quinn::TransportErrorCode) -> bool {
    let code = u64::from(code);
    (0x100..=0x1ff).contains(&code) && CERTIFICATE_ALERTS.contains(&((code & 0xff) as u8))
}

/// Short metrics label for a failed handshake.
pub(crate) fn handshake_failure_label(err: &ConnectionError) -> &'static str {
    match err {
        ConnectionError::TransportError(e) if is_certificate_alert(e.code) => "untrusted_peer",
        ConnectionError::TransportError(_) => "tls",
        ConnectionError::ConnectionClosed(c) if is_certificate_alert(c.error_code) => {
            "refused_by_peer"
        }
        ConnectionError::ConnectionClosed(_) | ConnectionError::ApplicationClosed(_) => {
            "closed_by_peer"
        }
        ConnectionError::TimedOut => "timeout",
        ConnectionError::Reset => "reset",
        ConnectionError::VersionMismatch => "version_mismatch",
        ConnectionError::LocallyClosed | ConnectionError::CidsExhausted => "other",
    }
}

/// A person-readable account of a connection error: the verifier's message where there is one
/// (it names the unlinked trust domain and the command that fixes it).
pub(crate) fn describe(err: &ConnectionError) -> String {
    match err {
        ConnectionError::TransportError(e) if !e.reason.is_empty() => e.reason.clone(),
        ConnectionError::ConnectionClosed(c) if !c.reason.is_empty() => format!(
            "the peer refused the connection: {}",
            String::from_utf8_lossy(&c.reason)
        ),
        ConnectionError::ApplicationClosed(c) if !c.reason.is_empty() => format!(
            "the peer closed the connection: {}",
            String::from_utf8_lossy(&c.reason)
        ),
        other => other.to_string(),
    }
}
