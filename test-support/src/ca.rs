//! The CA fixture: a test cluster with its own root, trust bundle and state-directory files,
//! issuing identities of its trust domain.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::identity::{
    ClusterCa, SpiffeId, TrustBundle, WorkloadIdentity, default_trust_domain,
};

/// Validity of the identities a test cluster issues: longer than any test.
pub const TEST_CERT_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// One test cluster's trust: its CA and the bundle peers trust it with.
#[derive(Debug, Clone)]
pub struct TestCluster {
    /// The cluster name (`us-east`).
    pub name: String,
    /// Its root (shared so clones issue from the same CA).
    pub ca: Arc<ClusterCa>,
    /// Its trust bundle (`<name>.mesh`).
    pub bundle: TrustBundle,
}

impl TestCluster {
    /// A cluster named `name` with a fresh root for `<name>.mesh`.
    pub fn new(name: &str) -> Self {
        let trust_domain = default_trust_domain(name);
        let ca = ClusterCa::generate(&trust_domain).expect("generating a test CA");
        let bundle = TrustBundle {
            trust_domain,
            cluster: name.to_string(),
            ca_pem: ca.cert_pem().to_string(),
        };
        Self {
            name: name.to_string(),
            ca: Arc::new(ca),
            bundle,
        }
    }

    /// Its trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.bundle.trust_domain
    }

    /// The SPIFFE ID of workload `account` in `namespace`.
    pub fn workload_id(&self, namespace: &str, account: &str) -> SpiffeId {
        SpiffeId::workload(self.trust_domain(), namespace, account)
    }

    /// The SPIFFE ID of its gateway.
    pub fn gateway_id(&self) -> SpiffeId {
        SpiffeId::gateway(self.trust_domain())
    }

    /// Issues an identity for `id`, valid for [`TEST_CERT_VALIDITY`].
    pub fn issue(&self, id: &SpiffeId) -> WorkloadIdentity {
        self.ca
            .issue(id, TEST_CERT_VALIDITY)
            .expect("issuing a test identity")
    }

    /// Writes the state-directory files a controller and its members read: `ca.crt`,
    /// `ca.key` and `join-token` (holding `token`).
    pub fn write_state_dir(&self, dir: &Path, token: &str) {
        self.ca.write_to(dir).expect("writing the test CA");
        std::fs::write(dir.join("join-token"), format!("{token}\n"))
            .expect("writing the join token");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_identities_of_its_own_trust_domain() {
        let c = TestCluster::new("us-east");
        assert_eq!(c.trust_domain(), "us-east.mesh");
        let ident = c.issue(&c.workload_id("demo", "echo"));
        assert_eq!(
            ident.id.to_string(),
            "spiffe://us-east.mesh/ns/demo/sa/echo"
        );
        assert_eq!(c.gateway_id().trust_domain, "us-east.mesh");
    }
}
