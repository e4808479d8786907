//! The CA as the CA service uses it: the root that signs can be swapped by a root rotation
//! step while requests are being signed, and every certificate signed is recorded in the
//! [`IssueLedger`] with its root.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mesh_core::identity::rotation::renew_if_signing_root_changed;
use mesh_core::identity::{
    CaError, ClusterCa, RotatingIdentity, SpiffeId, TrustBundle, TrustStore, WorkloadIdentity,
};

use super::ledger::IssueLedger;
use super::unix_ms;

#[derive(Debug)]
struct Current {
    ca: Arc<ClusterCa>,
    fingerprint: String,
}

/// The cluster's CA, swappable, with its ledger and the trust store of its own roots.
#[derive(Debug)]
pub(crate) struct SigningCa {
    trust_domain: String,
    current: RwLock<Current>,
    ledger: Mutex<IssueLedger>,
    own_trust: TrustStore,
    /// The controller's own identities, renewed at once when a switch changes the signing root.
    own_identities: Mutex<Vec<RotatingIdentity>>,
}

impl SigningCa {
    /// Wraps `ca`, for `cluster`; the ledger starts now.
    pub(crate) fn new(ca: ClusterCa, cluster: &str) -> Self {
        let own_trust = TrustStore::new(&[bundle_of(&ca, cluster)]).unwrap_or_else(|e| {
            // A loaded CA's own root always parses; an empty store refuses every client.
            tracing::error!(error = %e, "the CA's own roots do not parse as a trust bundle");
            TrustStore::default()
        });
        Self {
            trust_domain: ca.trust_domain().to_string(),
            current: RwLock::new(Current {
                fingerprint: ca.signing_fingerprint(),
                ca: Arc::new(ca),
            }),
            ledger: Mutex::new(IssueLedger::new(unix_ms())),
            own_trust,
            own_identities: Mutex::default(),
        }
    }

    fn read(&self) -> (Arc<ClusterCa>, String) {
        let c = self.current.read().unwrap_or_else(|p| p.into_inner());
        (c.ca.clone(), c.fingerprint.clone())
    }

    /// The CA in force.
    pub(crate) fn current(&self) -> Arc<ClusterCa> {
        self.read().0
    }

    /// Puts `ca` in force (a rotation step): it signs from now on, and the own trust store
    /// holds its trusted roots.
    pub(crate) fn replace(&self, ca: ClusterCa, cluster: &str) -> Result<(), CaError> {
        let bundle = bundle_of(&ca, cluster);
        self.own_trust
            .replace(std::slice::from_ref(&bundle))
            .map_err(|e| CaError::Refused(e.to_string()))?;
        {
            let mut c = self.current.write().unwrap_or_else(|p| p.into_inner());
            c.fingerprint = ca.signing_fingerprint();
            c.ca = Arc::new(ca);
        }
        for identity in self
            .own_identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            renew_if_signing_root_changed(identity, &bundle);
        }
        Ok(())
    }

    /// Renews `identity` (the controller's own) at once when a switch changes the signing root.
    pub(crate) fn renew_on_switch(&self, identity: RotatingIdentity) {
        self.own_identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(identity);
    }

    /// A trust store of this cluster's roots, kept current through rotations (the controller
    /// verifies its own sidecars and gateway with it).
    pub(crate) fn own_trust(&self) -> TrustStore {
        self.own_trust.clone()
    }

    /// The trust domain.
    pub(crate) fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Every root trusted now, in PEM.
    pub(crate) fn trusted_pem(&self) -> String {
        self.current().trusted_pem().to_string()
    }

    /// The ledger.
    pub(crate) fn ledger(&self) -> IssueLedger {
        self.ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn record(&self, id: &SpiffeId, root: &str, validity: Duration) {
        self.ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(&id.to_string(), root, unix_ms(), validity);
    }

    /// [`ClusterCa::sign_csr`] with the root in force, recorded.
    pub(crate) fn sign_csr(
        &self,
        csr_pem: &str,
        validity: Duration,
        authorise: impl FnOnce(&SpiffeId) -> Result<(), String>,
    ) -> Result<(SpiffeId, String), CaError> {
        let (ca, root) = self.read();
        let (id, pem) = ca.sign_csr(csr_pem, validity, authorise)?;
        self.record(&id, &root, validity);
        Ok((id, pem))
    }

    /// [`ClusterCa::issue`] with the root in force, recorded.
    pub(crate) fn issue(
        &self,
        id: &SpiffeId,
        validity: Duration,
    ) -> Result<WorkloadIdentity, CaError> {
        let (ca, root) = self.read();
        let identity = ca.issue(id, validity)?;
        self.record(id, &root, validity);
        Ok(identity)
    }

    /// [`ClusterCa::issue_serving`] with the root in force, recorded.
    pub(crate) fn issue_serving(
        &self,
        id: &SpiffeId,
        dns_names: &[String],
        ips: &[IpAddr],
        validity: Duration,
    ) -> Result<WorkloadIdentity, CaError> {
        let (ca, root) = self.read();
        let identity = ca.issue_serving(id, dns_names, ips, validity)?;
        self.record(id, &root, validity);
        Ok(identity)
    }
}

/// The trust bundle of `ca` (every root it trusts) for `cluster`.
pub(crate) fn bundle_of(ca: &ClusterCa, cluster: &str) -> TrustBundle {
    TrustBundle {
        trust_domain: ca.trust_domain().to_string(),
        cluster: cluster.to_string(),
        ca_pem: ca.trusted_pem().to_string(),
    }
}
