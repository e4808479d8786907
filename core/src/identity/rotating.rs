//! A workload identity that can be swapped while configurations built on it stay in use.
//!
//! [`RotatingIdentity`] is a shared cell holding the current certificate and key. It resolves
//! the certificate for rustls on both sides (`ResolvesServerCert`, `ResolvesClientCert`), so a
//! TLS or QUIC configuration is built once and every *new* handshake presents whatever is
//! current; connections and QUIC links already established keep the certificate they started
//! with. Renewal ([`crate::renewal`]) calls [`RotatingIdentity::replace`].

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::FromDer;

use super::ca::WorkloadIdentity;
use super::spiffe::SpiffeId;
use super::tls::TlsError;

/// When the current certificate was received and until when it is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// When this process received (or issued) the certificate: the start of its lifetime for
    /// the renewal schedule. The certificate's own `notBefore` is backdated for clock skew, so
    /// it would make the lifetime look longer than it is.
    pub received: SystemTime,
    /// The certificate's `notAfter`.
    pub not_after: SystemTime,
}

impl Validity {
    /// How long until expiry as seen at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or(Duration::ZERO)
    }

    /// Whether the certificate has expired at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

struct Current {
    identity: Arc<WorkloadIdentity>,
    key: Arc<CertifiedKey>,
    validity: Validity,
    generation: u64,
}

/// The current certificate of a component, shared by every configuration built on it.
#[derive(Clone)]
pub struct RotatingIdentity {
    current: Arc<RwLock<Current>>,
    /// Asks the renewal loop to renew now (a root rotation switched the signing root).
    renew_now: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for RotatingIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cur = self.read();
        f.debug_struct("RotatingIdentity")
            .field("id", &cur.identity.id)
            .field("generation", &cur.generation)
            .finish_non_exhaustive()
    }
}

/// Reads `notAfter` of the leaf certificate.
pub fn not_after(identity: &WorkloadIdentity) -> Result<SystemTime, String> {
    let leaf = identity
        .chain
        .first()
        .ok_or_else(|| "the certificate chain is empty".to_string())?;
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let secs = parsed.validity().not_after.timestamp();
    let secs = u64::try_from(secs).map_err(|_| format!("notAfter {secs} is before 1970"))?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

fn certified_key(identity: &WorkloadIdentity) -> Result<(Arc<CertifiedKey>, SystemTime), TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(identity.chain.clone(), identity.private_key(), &provider)?;
    let not_after = not_after(identity).map_err(|e| {
        TlsError::Config(rustls::Error::General(format!(
            "certificate of {}: {e}",
            identity.id
        )))
    })?;
    Ok((Arc::new(key), not_after))
}

impl RotatingIdentity {
    /// A cell presenting `identity`, received now.
    pub fn new(identity: WorkloadIdentity) -> Result<Self, TlsError> {
        Self::received_at(identity, SystemTime::now())
    }

    /// A cell presenting `identity`, received at `received`.
    pub fn received_at(identity: WorkloadIdentity, received: SystemTime) -> Result<Self, TlsError> {
        let (key, not_after) = certified_key(&identity)?;
        Ok(Self {
            current: Arc::new(RwLock::new(Current {
                identity: Arc::new(identity),
                key,
                validity: Validity {
                    received: received.min(not_after),
                    not_after,
                },
                generation: 0,
            })),
            renew_now: Arc::default(),
        })
    }

    /// Asks whoever renews this identity to renew it now rather than on schedule (kept until
    /// the renewal loop next waits).
    pub fn request_renewal(&self) {
        self.renew_now.notify_one();
    }

    /// Resolves when [`request_renewal`](Self::request_renewal) was called.
    pub async fn renewal_requested(&self) {
        self.renew_now.notified().await;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Presents `identity` on every new handshake from now on. It must carry the same SPIFFE ID
    /// (a component never changes who it is) and a key that matches its certificate.
    pub fn replace(&self, identity: WorkloadIdentity) -> Result<(), TlsError> {
        self.replace_at(identity, SystemTime::now())
    }

    /// [`replace`](Self::replace), received at `received`.
    pub fn replace_at(
        &self,
        identity: WorkloadIdentity,
        received: SystemTime,
    ) -> Result<(), TlsError> {
        let (key, not_after) = certified_key(&identity)?;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if identity.id != cur.identity.id {
            return Err(TlsError::Config(rustls::Error::General(format!(
                "a renewed certificate names {}, but this component is {}",
                identity.id, cur.identity.id
            ))));
        }
        *cur = Current {
            identity: Arc::new(identity),
            key,
            validity: Validity {
                received: received.min(not_after),
                not_after,
            },
            generation: cur.generation + 1,
        };
        Ok(())
    }

    /// The certificate and key presented now.
    pub fn current(&self) -> Arc<WorkloadIdentity> {
        self.read().identity.clone()
    }

    /// The SPIFFE ID presented (the same for the whole life of the cell).
    pub fn id(&self) -> SpiffeId {
        self.read().identity.id.clone()
    }

    /// When the current certificate was received and when it expires.
    pub fn validity(&self) -> Validity {
        self.read().validity
    }

    /// How many times the certificate was replaced.
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    fn key(&self) -> Arc<CertifiedKey> {
        self.read().key.clone()
    }
}

impl ResolvesServerCert for RotatingIdentity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

impl ResolvesClientCert for RotatingIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Anything a TLS configuration can present: a fixed [`WorkloadIdentity`] (a cell of its own
/// that never changes) or a shared [`RotatingIdentity`].
pub trait IdentitySource {
    /// The cell the configuration resolves certificates from.
    fn rotating(&self) -> Result<RotatingIdentity, TlsError>;
}

impl IdentitySource for WorkloadIdentity {
    fn rotating(&self) -> Result<RotatingIdentity, TlsError> {
        RotatingIdentity::new(self.clone())
    }
}

impl IdentitySource for RotatingIdentity {
    fn rotating(&self) -> Result<RotatingIdentity, TlsError> {
        Ok(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ClusterCa;

    fn issue(ca: &ClusterCa, id: &SpiffeId, secs: u64) -> WorkloadIdentity {
        ca.issue(id, Duration::from_secs(secs)).unwrap()
    }

    #[test]
    fn replace_swaps_what_is_resolved_and_keeps_the_id() {
        let ca = ClusterCa::generate("us-east.mesh").unwrap();
        let id = SpiffeId::gateway("us-east.mesh");
        let first = issue(&ca, &id, 60);
        let cell = RotatingIdentity::new(first.clone()).unwrap();
        let shared = cell.rotating().unwrap();
        let before = ResolvesClientCert::resolve(&shared, &[], &[]).unwrap();
        assert_eq!(before.cert, first.chain);
        let second = issue(&ca, &id, 120);
        cell.replace(second.clone()).unwrap();
        let after = ResolvesClientCert::resolve(&shared, &[], &[]).unwrap();
        assert_eq!(
            after.cert, second.chain,
            "every clone sees the new certificate"
        );
        assert_eq!(shared.generation(), 1);
        assert!(shared.validity().not_after > cell.validity().received);

        let other = issue(&ca, &SpiffeId::workload("us-east.mesh", "demo", "echo"), 60);
        let err = cell.replace(other).unwrap_err().to_string();
        assert!(
            err.contains("this component is spiffe://us-east.mesh/gateway"),
            "{err}"
        );
        assert_eq!(
            cell.current().chain,
            second.chain,
            "a refused swap changes nothing"
        );
    }

    #[test]
    fn validity_counts_from_receipt_not_from_the_backdated_not_before() {
        let ca = ClusterCa::generate("us-east.mesh").unwrap();
        let id = SpiffeId::gateway("us-east.mesh");
        let now = SystemTime::now();
        let cell = RotatingIdentity::received_at(issue(&ca, &id, 30), now).unwrap();
        let v = cell.validity();
        assert_eq!(v.received, now);
        let lifetime = v.not_after.duration_since(v.received).unwrap();
        assert!(
            lifetime <= Duration::from_secs(31) && lifetime >= Duration::from_secs(28),
            "{lifetime:?}"
        );
        assert!(!v.expired(now));
        assert!(v.expired(v.not_after));
        assert_eq!(
            v.remaining(v.not_after + Duration::from_secs(5)),
            Duration::ZERO
        );
    }
}
