//! The published view: everything the controller streams, at one version. Sidecars and the
//! gateway each see a projection of it ([`PublishedView::sidecar_snapshot`],
//! [`PublishedView::gateway_snapshot`]) and are sent a message only when their projection
//! changes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_core::api::{GatewaySnapshot, PeerLinkConfig, SidecarSnapshot};
use mesh_core::catalog::ExportCatalog;
use mesh_core::identity::TrustBundle;
use mesh_core::names::ServiceKey;
use mesh_core::policy::service_policy::ServicePolicy;

use crate::failover::ServiceDecision;

/// The controller's published view.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PublishedView {
    /// Bumped on every change of anything below.
    pub version: u64,
    /// This cluster.
    pub cluster: String,
    /// This cluster's trust bundle.
    pub own_bundle: TrustBundle,
    /// Trust bundles of the linked peers.
    pub peer_bundles: Vec<TrustBundle>,
    /// The gateway's tunnel address, once reported.
    pub gateway_tunnel: Option<SocketAddr>,
    /// The linked peers, as the gateway dials them.
    pub peers: Vec<PeerLinkConfig>,
    /// The failover decision per service.
    pub services: BTreeMap<ServiceKey, ServiceDecision>,
    /// The export catalog (versioned on its own, bumped only when its content changes).
    pub exports: ExportCatalog,
    /// The traffic policy of each service that has one.
    pub policies: Arc<BTreeMap<ServiceKey, ServicePolicy>>,
    /// When this controller instance started (Unix ms).
    pub epoch: u64,
    /// The controller is still relearning what it knew before it (re)started.
    pub warming: bool,
}

impl PublishedView {
    /// The empty view of a cluster that knows nothing yet.
    pub(crate) fn empty(
        cluster: &str,
        own_bundle: TrustBundle,
        version: u64,
        exports: ExportCatalog,
    ) -> Self {
        Self {
            version,
            cluster: cluster.to_string(),
            own_bundle,
            peer_bundles: Vec::new(),
            gateway_tunnel: None,
            peers: Vec::new(),
            services: BTreeMap::new(),
            exports,
            policies: Arc::default(),
            epoch: version,
            warming: true,
        }
    }

    /// Whether two views differ in anything but their version.
    pub(crate) fn same_content(&self, other: &PublishedView) -> bool {
        self.cluster == other.cluster
            && self.own_bundle == other.own_bundle
            && self.peer_bundles == other.peer_bundles
            && self.gateway_tunnel == other.gateway_tunnel
            && self.peers == other.peers
            && self.services == other.services
            && self.exports == other.exports
            && self.policies == other.policies
            && self.epoch == other.epoch
            && self.warming == other.warming
    }

    /// What a sidecar that asked for `services` sees.
    pub(crate) fn sidecar_snapshot(&self, services: &[ServiceKey]) -> SidecarSnapshot {
        let mut routes = BTreeMap::new();
        let mut unknown = Vec::new();
        let mut policies = BTreeMap::new();
        for key in services {
            if let Some(policy) = self.policies.get(key) {
                policies.insert(key.clone(), policy.clone());
            }
            match self.services.get(key) {
                Some(decision) => {
                    routes.insert(key.clone(), decision.route.clone());
                }
                None => unknown.push(key.clone()),
            }
        }
        let mut trust_bundles = vec![self.own_bundle.clone()];
        trust_bundles.extend(self.peer_bundles.iter().cloned());
        SidecarSnapshot {
            version: self.version,
            cluster: self.cluster.clone(),
            trust_bundles,
            gateway: self.gateway_tunnel,
            services: routes,
            unknown,
            policies,
            epoch: self.epoch,
            warming: self.warming,
        }
    }

    /// What the gateway sees.
    pub(crate) fn gateway_snapshot(&self) -> GatewaySnapshot {
        GatewaySnapshot {
            version: self.version,
            cluster: self.cluster.clone(),
            trust_bundle: self.own_bundle.clone(),
            peers: self.peers.clone(),
            exports: self.exports.clone(),
        }
    }
}

/// A streamed message whose content can be compared without its version.
pub(crate) trait Snapshot: serde::Serialize + Send + 'static {
    /// Whether the two messages differ in anything but their version.
    fn same_content(&self, other: &Self) -> bool;
}

impl Snapshot for SidecarSnapshot {
    fn same_content(&self, other: &Self) -> bool {
        self.cluster == other.cluster
            && self.trust_bundles == other.trust_bundles
            && self.gateway == other.gateway
            && self.services == other.services
            && self.unknown == other.unknown
            && self.policies == other.policies
            && self.epoch == other.epoch
            && self.warming == other.warming
    }
}

impl Snapshot for GatewaySnapshot {
    fn same_content(&self, other: &Self) -> bool {
        self.cluster == other.cluster
            && self.trust_bundle == other.trust_bundle
            && self.peers == other.peers
            && self.exports == other.exports
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::api::ServiceRoute;

    use super::*;

    fn bundle(cluster: &str) -> TrustBundle {
        TrustBundle {
            trust_domain: format!("{cluster}.mesh"),
            cluster: cluster.into(),
            ca_pem: "pem".into(),
        }
    }

    #[test]
    fn sidecars_see_what_they_asked_for_and_unknowns_apart() {
        let mut view = PublishedView::empty("home", bundle("home"), 3, ExportCatalog::new("home"));
        view.peer_bundles.push(bundle("eu"));
        view.services.insert(
            "echo.demo".parse().unwrap(),
            ServiceDecision {
                route: ServiceRoute { localities: vec![] },
                endpoints: vec![],
                breakers: vec![],
                failover_active: true,
            },
        );
        let asked: Vec<ServiceKey> =
            vec!["echo.demo".parse().unwrap(), "nope.demo".parse().unwrap()];
        let snap = view.sidecar_snapshot(&asked);
        assert_eq!(snap.version, 3);
        assert_eq!(snap.services.len(), 1);
        assert_eq!(
            snap.unknown,
            vec!["nope.demo".parse::<ServiceKey>().unwrap()]
        );
        assert_eq!(snap.trust_bundles.len(), 2);
        let mut later = view.clone();
        later.version = 4;
        assert!(later.sidecar_snapshot(&asked).same_content(&snap));
        later.gateway_tunnel = Some("127.0.0.1:1".parse().unwrap());
        assert!(!later.sidecar_snapshot(&asked).same_content(&snap));
        assert!(!later.same_content(&view));
        assert!(
            later
                .gateway_snapshot()
                .same_content(&view.gateway_snapshot())
        );
    }
}
