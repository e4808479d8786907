//! The cluster's own services and endpoints, behind the [`ServiceRegistry`] trait so backends
//! (the registration API, a static file, later Kubernetes EndpointSlices) combine into one view.

mod registration;
mod static_file;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mesh_core::catalog::ServicePort;
use mesh_core::names::ServiceKey;

pub(crate) use registration::{RegistrationError, Registrations};
pub use static_file::StaticFileError;
pub(crate) use static_file::StaticServices;

/// One endpoint of a local service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegistryEndpoint {
    /// The service it serves.
    pub service: ServiceKey,
    /// Its sidecar's inbound (mTLS) address.
    pub address: SocketAddr,
    /// The SPIFFE ID its sidecar presents.
    pub identity: String,
    /// Whether it is healthy now.
    pub healthy: bool,
    /// Reached over plain HTTP/2 without TLS (static file `plaintext: true`); kept local,
    /// never exported.
    pub plaintext: bool,
    /// What the service's definition says beyond its endpoints (Kubernetes backend: from the
    /// Service and its ServiceExport; other backends: nothing), shared by its endpoints.
    pub spec: Option<Arc<ServiceSpec>>,
}

/// A service's definition as exported: what a `ServiceImport` is made from, and what two
/// clusters exporting the service must agree on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ServiceSpec {
    /// Its ports, sorted.
    pub ports: Vec<ServicePort>,
    /// When it was exported (the `ServiceExport`'s creation, Unix seconds): the oldest export
    /// of a service defines it when clusters disagree (KEP-1645).
    pub exported_since: Option<u64>,
}

/// A source of the cluster's own endpoints.
pub(crate) trait ServiceRegistry: Send + Sync + std::fmt::Debug {
    /// A short name for logs (`registrations`, `static file services.yaml`).
    fn name(&self) -> &str;

    /// Every endpoint the backend knows at `now`, with its health.
    fn endpoints(&self, now: Instant) -> Vec<RegistryEndpoint>;

    /// Services the backend defines whether or not they have endpoints now (Kubernetes: every
    /// valid `ServiceExport`), so that an exported service with no ready pod yet is still
    /// exported (and imported elsewhere), with no endpoints. Backends defined by their
    /// endpoints alone have none.
    fn defined(&self) -> Vec<(ServiceKey, Arc<ServiceSpec>)> {
        Vec::new()
    }
}

/// Several backends seen as one; the first backend that lists an address for a service wins.
#[derive(Debug, Clone, Default)]
pub(crate) struct CombinedRegistry {
    backends: Vec<Arc<dyn ServiceRegistry>>,
}

impl CombinedRegistry {
    /// A registry over `backends`, in precedence order.
    pub(crate) fn new(backends: Vec<Arc<dyn ServiceRegistry>>) -> Self {
        for b in &backends {
            tracing::debug!(backend = b.name(), "registry backend enabled");
        }
        Self { backends }
    }
}

impl ServiceRegistry for CombinedRegistry {
    fn name(&self) -> &str {
        "combined"
    }

    fn endpoints(&self, now: Instant) -> Vec<RegistryEndpoint> {
        let mut seen = HashSet::new();
        let mut out: Vec<RegistryEndpoint> = self
            .backends
            .iter()
            .flat_map(|b| b.endpoints(now))
            .filter(|e| seen.insert((e.service.clone(), e.address)))
            .collect();
        out.sort_by(|a, b| (&a.service, a.address).cmp(&(&b.service, b.address)));
        out
    }

    fn defined(&self) -> Vec<(ServiceKey, Arc<ServiceSpec>)> {
        let mut seen = HashSet::new();
        self.backends
            .iter()
            .flat_map(|b| b.defined())
            .filter(|(key, _)| seen.insert(key.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Vec<RegistryEndpoint>);

    impl ServiceRegistry for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn endpoints(&self, _now: Instant) -> Vec<RegistryEndpoint> {
            self.0.clone()
        }
    }

    fn ep(port: u16, healthy: bool) -> RegistryEndpoint {
        RegistryEndpoint {
            service: "echo.demo".parse().unwrap(),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            identity: "spiffe://us-east.mesh/ns/demo/sa/echo".into(),
            healthy,
            plaintext: false,
            spec: None,
        }
    }

    #[test]
    fn combined_registry_merges_sorts_and_lets_the_first_backend_win() {
        let a: Arc<dyn ServiceRegistry> = Arc::new(Fixed(vec![ep(2, false)]));
        let b: Arc<dyn ServiceRegistry> = Arc::new(Fixed(vec![ep(2, true), ep(1, true)]));
        let all = CombinedRegistry::new(vec![a, b]).endpoints(Instant::now());
        assert_eq!(all, vec![ep(1, true), ep(2, false)]);
    }
}
