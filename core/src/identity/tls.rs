//! rustls configurations for every mTLS hop, built from a workload identity and a trust store.
//!
//! TLS 1.3 only, ring provider, SPIFFE verification on both sides. ALPN is chosen by the caller
//! (`h2` for sidecar and controller hops, `mesh-link/1` for QUIC between gateways).

use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};

use super::rotating::IdentitySource;
use super::verify::{SpiffeVerifier, TrustStore};

/// Errors building TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A trust bundle that cannot be used.
    #[error("trust bundle of {0} is unusable: {1}")]
    BadBundle(String, String),
    /// rustls refused the configuration (for example a key that does not match).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration presenting `identity`: a fixed [`super::WorkloadIdentity`], or a
/// [`super::RotatingIdentity`] whose current certificate every new handshake presents. When
/// `client_auth_optional`, clients without a certificate are let through the handshake (the
/// controller's CSR endpoint) and the handler must check for a peer identity itself.
pub fn server_config(
    identity: &dyn IdentitySource,
    trust: TrustStore,
    alpn: &[&[u8]],
    client_auth_optional: bool,
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(SpiffeVerifier::new(trust, &provider, client_auth_optional));
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(identity.rotating()?));
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // No session resumption: a resumed TLS 1.3 handshake skips certificate verification, so a
    // client whose certificate expired, or whose trust domain was unlinked or whose root was
    // retired since, would still get in. Every handshake verifies the peer afresh.
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}

/// A client configuration presenting `identity` (fixed or rotating, see [`server_config`]; or
/// none, for the first CSR) and verifying the server against `trust`.
pub fn client_config(
    identity: Option<&dyn IdentitySource>,
    trust: TrustStore,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(SpiffeVerifier::new(trust, &provider, false));
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match identity {
        Some(id) => builder.with_client_cert_resolver(Arc::new(id.rotating()?)),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::identity::{ClusterCa, SpiffeId, TrustBundle, WorkloadIdentity, peer_spiffe_id};

    fn bundle(ca: &ClusterCa, cluster: &str) -> TrustBundle {
        TrustBundle {
            trust_domain: ca.trust_domain().to_string(),
            cluster: cluster.to_string(),
            ca_pem: ca.cert_pem().to_string(),
        }
    }

    async fn handshake(
        server_id: &dyn IdentitySource,
        server_trust: TrustStore,
        client_id: &dyn IdentitySource,
        client_trust: TrustStore,
    ) -> Result<Option<SpiffeId>, String> {
        handshake_seeing(server_id, server_trust, client_id, client_trust)
            .await
            .map(|(id, _)| id)
    }

    /// A handshake; the server's view of the client's SPIFFE ID and leaf certificate.
    async fn handshake_seeing(
        server_id: &dyn IdentitySource,
        server_trust: TrustStore,
        client_id: &dyn IdentitySource,
        client_trust: TrustStore,
    ) -> Result<(Option<SpiffeId>, Vec<u8>), String> {
        let server = TlsAcceptor::from(Arc::new(
            server_config(server_id, server_trust, &[b"h2"], false).unwrap(),
        ));
        let client = TlsConnector::from(Arc::new(
            client_config(Some(client_id), client_trust, &[b"h2"]).unwrap(),
        ));
        let (a, b) = tokio::io::duplex(64 * 1024);
        let srv = tokio::spawn(async move {
            let mut s = server.accept(a).await.map_err(|e| e.to_string())?;
            let certs = s.get_ref().1.peer_certificates();
            let peer = peer_spiffe_id(certs);
            let leaf = certs
                .and_then(|c| c.first())
                .map(|c| c.to_vec())
                .unwrap_or_default();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((peer, leaf))
        });
        let name = rustls::pki_types::ServerName::try_from("mesh.invalid").unwrap();
        let mut c = client.connect(name, b).await.map_err(|e| e.to_string())?;
        c.write_all(b"ping").await.map_err(|e| e.to_string())?;
        c.flush().await.map_err(|e| e.to_string())?;
        srv.await.unwrap()
    }

    #[tokio::test]
    async fn every_handshake_verifies_afresh_without_resuming_a_session() {
        let east = ClusterCa::generate("us-east.mesh").unwrap();
        let eu = ClusterCa::generate("eu-central.mesh").unwrap();
        let day = Duration::from_secs(86400);
        let server_id = east.issue(&SpiffeId::gateway("us-east.mesh"), day).unwrap();
        let client_id = eu
            .issue(&SpiffeId::gateway("eu-central.mesh"), day)
            .unwrap();
        let both =
            || TrustStore::new(&[bundle(&east, "us-east"), bundle(&eu, "eu-central")]).unwrap();
        let server_trust = both();
        let acceptor = TlsAcceptor::from(Arc::new(
            server_config(&server_id, server_trust.clone(), &[b"h2"], false).unwrap(),
        ));
        // One client configuration for both handshakes: it would offer to resume the first.
        let connector = TlsConnector::from(Arc::new(
            client_config(Some(&client_id), both(), &[b"h2"]).unwrap(),
        ));
        let once = |acceptor: TlsAcceptor, connector: TlsConnector| async move {
            let (a, b) = tokio::io::duplex(64 * 1024);
            let srv = tokio::spawn(async move {
                let mut s = acceptor.accept(a).await.map_err(|e| e.to_string())?;
                let mut buf = [0u8; 4];
                s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
                s.write_all(b"pong").await.map_err(|e| e.to_string())?;
                s.flush().await.map_err(|e| e.to_string())
            });
            let name = rustls::pki_types::ServerName::try_from("mesh.invalid").unwrap();
            let client = async {
                let mut c = connector
                    .connect(name, b)
                    .await
                    .map_err(|e| e.to_string())?;
                c.write_all(b"ping").await.map_err(|e| e.to_string())?;
                c.flush().await.map_err(|e| e.to_string())?;
                let mut buf = [0u8; 4];
                c.read_exact(&mut buf).await.map_err(|e| e.to_string())
            };
            let (c, s) = tokio::join!(client, srv);
            c.and(s.unwrap())
        };
        once(acceptor.clone(), connector.clone()).await.unwrap();
        // eu-central is unlinked: the same client must now be refused, not resumed.
        server_trust.replace(&[bundle(&east, "us-east")]).unwrap();
        let err = once(acceptor, connector).await.unwrap_err();
        assert!(!err.is_empty());
    }

    #[tokio::test]
    async fn a_rotated_identity_is_presented_on_the_next_handshake() {
        let east = ClusterCa::generate("us-east.mesh").unwrap();
        let trust = TrustStore::new(&[bundle(&east, "us-east")]).unwrap();
        let id = SpiffeId::workload("us-east.mesh", "demo", "client");
        let first = east.issue(&id, Duration::from_secs(60)).unwrap();
        let server: WorkloadIdentity = east
            .issue(&SpiffeId::gateway("us-east.mesh"), Duration::from_secs(60))
            .unwrap();
        let client = crate::identity::RotatingIdentity::new(first.clone()).unwrap();
        let (_, seen) = handshake_seeing(&server, trust.clone(), &client, trust.clone())
            .await
            .unwrap();
        assert_eq!(seen, first.chain[0].to_vec());
        let second = east.issue(&id, Duration::from_secs(60)).unwrap();
        client.replace(second.clone()).unwrap();
        let (peer, seen) = handshake_seeing(&server, trust.clone(), &client, trust)
            .await
            .unwrap();
        assert_eq!(
            seen,
            second.chain[0].to_vec(),
            "the renewed certificate is presented"
        );
        assert_eq!(peer, Some(id));
    }

    #[tokio::test]
    async fn linked_domains_handshake_and_see_each_others_spiffe_ids() {
        let east = ClusterCa::generate("us-east.mesh").unwrap();
        let eu = ClusterCa::generate("eu-central.mesh").unwrap();
        let day = Duration::from_secs(86400);
        let a = east
            .issue(&SpiffeId::workload("us-east.mesh", "demo", "client"), day)
            .unwrap();
        let b = eu
            .issue(&SpiffeId::workload("eu-central.mesh", "demo", "echo"), day)
            .unwrap();
        let both = TrustStore::new(&[bundle(&east, "us-east"), bundle(&eu, "eu-central")]).unwrap();
        let peer = handshake(&b, both.clone(), &a, both.clone()).await.unwrap();
        assert_eq!(peer, Some(a.id.clone()));
    }

    #[tokio::test]
    async fn unlinked_domain_is_refused_with_an_actionable_message() {
        let east = ClusterCa::generate("us-east.mesh").unwrap();
        let eu = ClusterCa::generate("eu-central.mesh").unwrap();
        let day = Duration::from_secs(86400);
        let a = east
            .issue(&SpiffeId::workload("us-east.mesh", "demo", "client"), day)
            .unwrap();
        let b = eu
            .issue(&SpiffeId::workload("eu-central.mesh", "demo", "echo"), day)
            .unwrap();
        let only_east = TrustStore::new(&[bundle(&east, "us-east")]).unwrap();
        let err = handshake(
            &a,
            only_east.clone(),
            &b,
            TrustStore::new(&[bundle(&east, "us-east"), bundle(&eu, "eu-central")]).unwrap(),
        )
        .await
        .unwrap_err();
        assert!(!err.is_empty());
        // The verifier's own message, as the server logs it:
        let bundles = only_east.current();
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        let msg = bundles
            .verify_chain(&b.chain[0], &[], rustls::pki_types::UnixTime::now(), &algs)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("trust domain eu-central.mesh, which is not linked"),
            "{msg}"
        );
        assert!(msg.contains("mesh link"), "{msg}");
    }

    #[tokio::test]
    async fn a_cluster_cannot_mint_another_domains_identity() {
        let east = ClusterCa::generate("us-east.mesh").unwrap();
        let eu = ClusterCa::generate("eu-central.mesh").unwrap();
        // A rogue CA that claims eu-central's trust domain.
        let rogue = ClusterCa::generate("eu-central.mesh").unwrap();
        let day = Duration::from_secs(86400);
        let forged = rogue
            .issue(&SpiffeId::gateway("eu-central.mesh"), day)
            .unwrap();
        let trust =
            TrustStore::new(&[bundle(&east, "us-east"), bundle(&eu, "eu-central")]).unwrap();
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        let err = trust
            .current()
            .verify_chain(
                &forged.chain[0],
                &[],
                rustls::pki_types::UnixTime::now(),
                &algs,
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not chain to that domain's root"),
            "{err}"
        );
    }
}
