//! The catalogs of linked peers, each held under a lease: when a link goes down the peer's
//! catalog stays usable for a grace period (static stability), then is withdrawn so stale
//! endpoints cannot black-hole traffic. The catalog model and its messages are in
//! [`crate::catalog`]; this module only decides what is held and for how long.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::catalog::{CatalogError, CatalogMessage, ExportCatalog};

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
            // A kind added by a later release carries nothing this release must hold (see
            // `CatalogMessage::Unknown`); it changes neither the catalog nor the lease.
            CatalogMessage::Unknown => Ok(()),
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
    use crate::catalog::tests::{catalog, ep};

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
    fn a_message_kind_of_a_later_release_changes_nothing() {
        let mut store = PeerCatalogs::new(DEFAULT_LEASE_GRACE);
        store.apply("eu-central", &CatalogMessage::Unknown).unwrap();
        assert!(store.get("eu-central").is_none());
        let snap = CatalogMessage::Snapshot {
            catalog: catalog(1, &[("echo.demo", vec![ep(1, true)])]),
        };
        store.apply("eu-central", &snap).unwrap();
        store.apply("eu-central", &CatalogMessage::Unknown).unwrap();
        assert_eq!(store.get("eu-central").unwrap().catalog.version, 1);
    }
}
