//! Trust bundles of linked clusters and the certificate verifier built on them.
//!
//! A [`TrustStore`] holds the current [`TrustBundles`] and can be swapped at run time (a link or
//! unlink changes it); rustls configurations built by this module consult it on every handshake,
//! so trust changes apply to new connections without rebuilding anything. A certificate is
//! accepted when its SPIFFE trust domain is known and its chain leads to that domain's own root:
//! one linked cluster cannot mint identities of another.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};
use serde::{Deserialize, Serialize};

use super::spiffe::spiffe_id_of_cert;
use super::tls::TlsError;

/// One trust domain's root certificate(s), as exchanged by `mesh link`. A wire message: unknown
/// fields from a later release are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustBundle {
    /// The trust domain, e.g. `eu-central.mesh`.
    pub trust_domain: String,
    /// The cluster the bundle belongs to.
    pub cluster: String,
    /// Root certificate(s) in PEM.
    pub ca_pem: String,
}

/// Parsed trust bundles, by trust domain.
#[derive(Debug, Default)]
pub struct TrustBundles {
    by_domain: BTreeMap<String, (String, RootCertStore)>,
    /// The fingerprints of each domain's roots, sorted (see [`super::rotation`]).
    fingerprints: BTreeMap<String, Vec<String>>,
}

impl TrustBundles {
    /// Parses bundles; a bundle whose PEM holds no usable certificate is an error naming it.
    pub fn parse(bundles: &[TrustBundle]) -> Result<Self, TlsError> {
        let mut by_domain = BTreeMap::new();
        let mut fingerprints = BTreeMap::new();
        for b in bundles {
            let certs: Vec<CertificateDer<'static>> =
                rustls_pemfile::certs(&mut b.ca_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| TlsError::BadBundle(b.trust_domain.clone(), e.to_string()))?;
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsError::BadBundle(
                    b.trust_domain.clone(),
                    "no usable certificate".into(),
                ));
            }
            by_domain.insert(b.trust_domain.clone(), (b.cluster.clone(), roots));
            fingerprints.insert(
                b.trust_domain.clone(),
                super::rotation::bundle_fingerprints(&b.ca_pem).unwrap_or_default(),
            );
        }
        Ok(Self {
            by_domain,
            fingerprints,
        })
    }

    /// Whether `bundle`'s domain is held with exactly `bundle`'s roots.
    pub fn same_roots(&self, bundle: &TrustBundle) -> bool {
        let Some(held) = self.fingerprints.get(&bundle.trust_domain) else {
            return false;
        };
        super::rotation::bundle_fingerprints(&bundle.ca_pem).is_ok_and(|f| f == *held)
    }

    /// Known trust domains.
    pub fn trust_domains(&self) -> impl Iterator<Item = &str> {
        self.by_domain.keys().map(String::as_str)
    }

    /// The cluster whose trust domain is `td`.
    pub fn cluster_of(&self, td: &str) -> Option<&str> {
        self.by_domain.get(td).map(|(c, _)| c.as_str())
    }

    pub(super) fn verify_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        algs: &WebPkiSupportedAlgorithms,
    ) -> Result<(), rustls::Error> {
        let id = spiffe_id_of_cert(end_entity).map_err(|e| untrusted(e.to_string()))?;
        let Some((_, roots)) = self.by_domain.get(&id.trust_domain) else {
            let known: Vec<&str> = self.trust_domains().collect();
            return Err(untrusted(format!(
                "peer {id} presented a certificate from trust domain {}, which is not linked \
                 with this cluster (linked: {}); run `mesh link <this cluster's admin> <peer's admin>`",
                id.trust_domain,
                known.join(", ")
            )));
        };
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            roots,
            intermediates,
            now,
            algs.all,
        )
        .map_err(|e| {
            let held = self
                .fingerprints
                .get(&id.trust_domain)
                .map(|f| {
                    f.iter()
                        .map(|f| super::rotation::short(f))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            untrusted(format!(
                "peer {id} claims trust domain {} but its certificate does not chain to that \
                 domain's root (roots held here: {held}): {e}; a certificate of a root retired \
                 by `mesh ca rotate` must be reissued by the domain's current root",
                id.trust_domain
            ))
        })
    }
}

#[derive(Debug)]
struct Untrusted(String);

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Untrusted {}

fn untrusted(msg: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Untrusted(
        msg,
    )))))
}

/// The current trust bundles, swappable at run time.
#[derive(Debug, Clone, Default)]
pub struct TrustStore(Arc<RwLock<Arc<TrustBundles>>>);

impl TrustStore {
    /// A store holding `bundles`.
    pub fn new(bundles: &[TrustBundle]) -> Result<Self, TlsError> {
        Ok(Self(Arc::new(RwLock::new(Arc::new(TrustBundles::parse(
            bundles,
        )?)))))
    }

    /// Replaces the bundles; new handshakes use them at once.
    pub fn replace(&self, bundles: &[TrustBundle]) -> Result<(), TlsError> {
        let parsed = Arc::new(TrustBundles::parse(bundles)?);
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = parsed;
        Ok(())
    }

    /// The bundles now in force.
    pub fn current(&self) -> Arc<TrustBundles> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Verifies peers (servers and clients alike) against a [`TrustStore`].
#[derive(Debug)]
pub(super) struct SpiffeVerifier {
    store: TrustStore,
    algs: WebPkiSupportedAlgorithms,
    client_auth_optional: bool,
}

impl SpiffeVerifier {
    pub(super) fn new(
        store: TrustStore,
        provider: &CryptoProvider,
        client_auth_optional: bool,
    ) -> Self {
        Self {
            store,
            algs: provider.signature_verification_algorithms,
            client_auth_optional,
        }
    }
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Names are SPIFFE IDs, not DNS names: the caller checks the peer's ID after the
        // handshake against the identity the catalog lists for the endpoint.
        self.store
            .current()
            .verify_chain(end_entity, intermediates, now, &self.algs)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for SpiffeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; sending none keeps this independent of the swappable store.
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.client_auth_optional
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.store
            .current()
            .verify_chain(end_entity, intermediates, now, &self.algs)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
