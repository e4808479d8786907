//! The exported-service catalog that clusters exchange, its versioned deltas, and the lease under
//! which a peer's catalog is held.
//!
//! Each cluster is authoritative for its own exports. A peer sends a full [`CatalogMessage::Snapshot`]
//! when the link (re)connects, then [`CatalogMessage::Delta`]s that each name the version they
//! apply to. The receiver keeps every peer's catalog in [`PeerCatalogs`]: when a link goes down the
//! catalog stays usable for a grace period (static stability), then is withdrawn so stale
//! endpoints cannot black-hole traffic.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::names::ServiceKey;

/// One endpoint of an exported service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedEndpoint {
    /// Address of the endpoint's sidecar inbound port, as the owning cluster reaches it.
    pub address: SocketAddr,
    /// SPIFFE ID the endpoint's sidecar presents.
    pub identity: String,
    /// Whether the owning cluster considers this endpoint healthy.
    pub healthy: bool,
}

/// An exported service: its endpoints and the owning cluster's verdict on its health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedService {
    /// False when the owning cluster's controller has failed this service away from itself
    /// (its sidecars' breakers are open), so peers stop sending it traffic too.
    pub healthy: bool,
    /// Endpoints, sorted by address.
    pub endpoints: Vec<ExportedEndpoint>,
}

impl ExportedService {
    /// Endpoints the owner marks healthy, when the service as a whole is healthy.
    pub fn healthy_endpoints(&self) -> usize {
        if !self.healthy {
            return 0;
        }
        self.endpoints.iter().filter(|e| e.healthy).count()
    }
}

/// A cluster's catalog of exported services at one version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportCatalog {
    /// The owning cluster.
    pub cluster: String,
    /// Monotonic version, bumped on every change.
    pub version: u64,
    /// Services by key.
    pub services: BTreeMap<ServiceKey, ExportedService>,
}

/// The changes between two versions of one cluster's catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogDelta {
    /// The owning cluster.
    pub cluster: String,
    /// The version this delta applies to.
    pub from_version: u64,
    /// The version after applying it.
    pub to_version: u64,
    /// Services added or changed (whole service entries).
    pub upserts: BTreeMap<ServiceKey, ExportedService>,
    /// Services no longer exported.
    pub removals: Vec<ServiceKey>,
}

/// What flows on a control stream from the owning cluster to a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CatalogMessage {
    /// The whole catalog.
    Snapshot {
        /// The catalog.
        catalog: ExportCatalog,
    },
    /// Changes since `from_version`.
    Delta {
        /// The changes.
        delta: CatalogDelta,
    },
    /// Sent back by a receiver that cannot apply a delta: the owner replies with a snapshot.
    ResyncRequest,
}

/// Why a message could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// A delta whose base version is not the one held: the receiver needs a snapshot.
    #[error(
        "delta from {cluster} applies to version {from} but version {held:?} is held; a snapshot is needed"
    )]
    VersionGap {
        /// The peer.
        cluster: String,
        /// The delta's base.
        from: u64,
        /// What is held, if anything.
        held: Option<u64>,
    },
    /// A message from a cluster other than the link's peer.
    #[error("catalog message names cluster {got} but arrived on the link to {expected}")]
    WrongCluster {
        /// The link's peer.
        expected: String,
        /// The cluster the message named.
        got: String,
    },
    /// A resync request is not something a catalog can apply.
    #[error("a resync request is answered by the sender, not applied")]
    NotApplicable,
}

impl ExportCatalog {
    /// An empty catalog of `cluster` at version 0.
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            version: 0,
            services: BTreeMap::new(),
        }
    }

    /// The delta that turns `self` into `newer` (both of the same cluster).
    pub fn diff(&self, newer: &ExportCatalog) -> CatalogDelta {
        let upserts = newer
            .services
            .iter()
            .filter(|(k, v)| self.services.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let removals = self
            .services
            .keys()
            .filter(|k| !newer.services.contains_key(*k))
            .cloned()
            .collect();
        CatalogDelta {
            cluster: newer.cluster.clone(),
            from_version: self.version,
            to_version: newer.version,
            upserts,
            removals,
        }
    }

    /// Applies a delta whose base is this catalog's version.
    pub fn apply(&mut self, delta: &CatalogDelta) -> Result<(), CatalogError> {
        if delta.cluster != self.cluster {
            return Err(CatalogError::WrongCluster {
                expected: self.cluster.clone(),
                got: delta.cluster.clone(),
            });
        }
        if delta.from_version != self.version {
            return Err(CatalogError::VersionGap {
                cluster: delta.cluster.clone(),
                from: delta.from_version,
                held: Some(self.version),
            });
        }
        for key in &delta.removals {
            self.services.remove(key);
        }
        for (key, svc) in &delta.upserts {
            self.services.insert(key.clone(), svc.clone());
        }
        self.version = delta.to_version;
        Ok(())
    }
}

/// How long a peer's catalog stays usable after its link drops: long enough to ride out a
/// gateway restart or a short partition without withdrawing routes, short enough that a dead
/// region stops attracting traffic well before people notice.
pub const DEFAULT_LEASE_GRACE: Duration = Duration::from_secs(30);

/// One peer's catalog and the state of its lease.
#[derive(Debug, Clone)]
pub struct PeerCatalog {
    /// The catalog as last synced.
    pub catalog: ExportCatalog,
    /// Whether the link to the peer is up now.
    pub link_up: bool,
    /// When the link went down, while it is down.
    pub down_since: Option<Instant>,
}

/// The catalogs of all linked peers, each under a lease.
#[derive(Debug, Clone)]
pub struct PeerCatalogs {
    grace: Duration,
    peers: HashMap<String, PeerCatalog>,
}

impl PeerCatalogs {
    /// An empty store whose leases last `grace` after a link drops.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            peers: HashMap::new(),
        }
    }

    /// Applies a message that arrived on the link to `peer`. Receiving anything renews the lease.
    pub fn apply(&mut self, peer: &str, msg: &CatalogMessage) -> Result<(), CatalogError> {
        match msg {
            CatalogMessage::Snapshot { catalog } => {
                if catalog.cluster != peer {
                    return Err(CatalogError::WrongCluster {
                        expected: peer.to_string(),
                        got: catalog.cluster.clone(),
                    });
                }
                self.peers.insert(
                    peer.to_string(),
                    PeerCatalog {
                        catalog: catalog.clone(),
                        link_up: true,
                        down_since: None,
                    },
                );
                Ok(())
            }
            CatalogMessage::Delta { delta } => {
                let Some(entry) = self.peers.get_mut(peer) else {
                    return Err(CatalogError::VersionGap {
                        cluster: peer.to_string(),
                        from: delta.from_version,
                        held: None,
                    });
                };
                entry.catalog.apply(delta)?;
                entry.link_up = true;
                entry.down_since = None;
                Ok(())
            }
            CatalogMessage::ResyncRequest => Err(CatalogError::NotApplicable),
        }
    }

    /// Records the link state of `peer` as reported by the gateway.
    pub fn set_link(&mut self, peer: &str, up: bool, now: Instant) {
        if let Some(entry) = self.peers.get_mut(peer) {
            match (entry.link_up, up) {
                (true, false) => {
                    entry.link_up = false;
                    entry.down_since = Some(now);
                }
                (false, true) => {
                    entry.link_up = true;
                    entry.down_since = None;
                }
                _ => {}
            }
        }
    }

    /// Withdraws the catalogs whose link has been down longer than the grace period; returns
    /// the withdrawn peers.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let grace = self.grace;
        let expired: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| p.down_since.is_some_and(|t| now.duration_since(t) >= grace))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.peers.remove(k);
        }
        expired
    }

    /// Forgets a peer at once (unlink).
    pub fn remove(&mut self, peer: &str) -> bool {
        self.peers.remove(peer).is_some()
    }

    /// The peer's catalog, if held.
    pub fn get(&self, peer: &str) -> Option<&PeerCatalog> {
        self.peers.get(peer)
    }

    /// All held peers.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &PeerCatalog)> {
        self.peers.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16, healthy: bool) -> ExportedEndpoint {
        ExportedEndpoint {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            identity: "spiffe://eu-central.mesh/ns/demo/sa/echo".into(),
            healthy,
        }
    }

    fn catalog(version: u64, services: &[(&str, Vec<ExportedEndpoint>)]) -> ExportCatalog {
        ExportCatalog {
            cluster: "eu-central".into(),
            version,
            services: services
                .iter()
                .map(|(k, eps)| {
                    let svc = ExportedService {
                        healthy: true,
                        endpoints: eps.clone(),
                    };
                    (k.parse().unwrap(), svc)
                })
                .collect(),
        }
    }

    #[test]
    fn diff_then_apply_reaches_the_newer_catalog() {
        let v1 = catalog(
            1,
            &[
                ("echo.demo", vec![ep(1, true)]),
                ("old.demo", vec![ep(2, true)]),
            ],
        );
        let v2 = catalog(
            2,
            &[
                ("echo.demo", vec![ep(1, true), ep(3, true)]),
                ("new.demo", vec![]),
            ],
        );
        let delta = v1.diff(&v2);
        assert_eq!(delta.removals, vec!["old.demo".parse().unwrap()]);
        assert_eq!(delta.upserts.len(), 2);
        let mut held = v1.clone();
        held.apply(&delta).unwrap();
        assert_eq!(held, v2);
    }

    #[test]
    fn delta_on_the_wrong_base_asks_for_a_snapshot() {
        let mut store = PeerCatalogs::new(DEFAULT_LEASE_GRACE);
        let v1 = catalog(1, &[("echo.demo", vec![ep(1, true)])]);
        let v3 = catalog(3, &[]);
        let gap = CatalogMessage::Delta {
            delta: catalog(2, &[]).diff(&v3),
        };
        assert!(matches!(
            store.apply("eu-central", &gap),
            Err(CatalogError::VersionGap { held: None, .. })
        ));
        store
            .apply("eu-central", &CatalogMessage::Snapshot { catalog: v1 })
            .unwrap();
        assert!(matches!(
            store.apply("eu-central", &gap),
            Err(CatalogError::VersionGap { held: Some(1), .. })
        ));
        assert_eq!(store.get("eu-central").unwrap().catalog.version, 1);
    }

    #[test]
    fn snapshot_from_another_cluster_is_refused() {
        let mut store = PeerCatalogs::new(DEFAULT_LEASE_GRACE);
        let msg = CatalogMessage::Snapshot {
            catalog: catalog(1, &[]),
        };
        assert!(matches!(
            store.apply("us-west", &msg),
            Err(CatalogError::WrongCluster { .. })
        ));
        assert!(store.get("us-west").is_none());
    }

    #[test]
    fn lease_keeps_the_catalog_through_the_grace_period_then_withdraws_it() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(30);
        let mut store = PeerCatalogs::new(grace);
        let snap = CatalogMessage::Snapshot {
            catalog: catalog(1, &[("echo.demo", vec![ep(1, true)])]),
        };
        store.apply("eu-central", &snap).unwrap();
        store.set_link("eu-central", false, t0);
        assert!(store.expire(t0 + Duration::from_secs(29)).is_empty());
        assert!(!store.get("eu-central").unwrap().link_up);
        // Reconnecting within the grace period cancels the withdrawal.
        store.set_link("eu-central", true, t0 + Duration::from_secs(29));
        assert!(store.expire(t0 + Duration::from_secs(60)).is_empty());
        // A second drop that lasts the whole grace period withdraws the catalog.
        let t1 = t0 + Duration::from_secs(61);
        store.set_link("eu-central", false, t1);
        assert_eq!(store.expire(t1 + grace), vec!["eu-central".to_string()]);
        assert!(store.get("eu-central").is_none());
    }

    #[test]
    fn healthy_endpoint_count_honours_the_service_verdict() {
        let mut svc = ExportedService {
            healthy: true,
            endpoints: vec![ep(1, true), ep(2, false)],
        };
        assert_eq!(svc.healthy_endpoints(), 1);
        svc.healthy = false;
        assert_eq!(svc.healthy_endpoints(), 0);
    }

    #[test]
    fn messages_have_a_stable_json_form() {
        let json = serde_json::to_value(CatalogMessage::ResyncRequest).unwrap();
        assert_eq!(json, serde_json::json!({"type": "resync_request"}));
        let snap = CatalogMessage::Snapshot {
            catalog: catalog(4, &[("echo.demo", vec![ep(9, true)])]),
        };
        let back: CatalogMessage =
            serde_json::from_str(&serde_json::to_string(&snap).unwrap()).unwrap();
        assert_eq!(back, snap);
    }
}
