//! Trust on the links: what this cluster announces in its catalog (its own bundle, the roots it
//! holds for each peer), the peer bundles it adopts from theirs, and what each peer holds for
//! it (the acknowledgement a root rotation waits for).

use std::collections::BTreeMap;

use mesh_core::catalog::CatalogTrust;
use mesh_core::identity::TrustBundle;
use mesh_core::identity::rotation::{
    BundleUpdate, PeerRoots, accept_peer_bundle, bundle_fingerprints,
};

use super::FederationState;

impl FederationState {
    /// Replaces this cluster's own bundle (a root rotation step); published with the next
    /// recompute to the sidecars, the gateway and, in the catalog, every peer. True when it
    /// changed.
    pub(crate) fn set_own_bundle(&mut self, bundle: TrustBundle) -> bool {
        if self.config.own_bundle == bundle {
            return false;
        }
        self.config.own_bundle = bundle;
        true
    }

    /// What this cluster announces on its links.
    pub(super) fn announced_trust(&self) -> CatalogTrust {
        let held_roots: BTreeMap<String, Vec<String>> = self
            .links
            .iter()
            .filter_map(|l| {
                let fps = bundle_fingerprints(&l.trust_bundle.ca_pem).ok()?;
                Some((l.trust_bundle.trust_domain.clone(), fps))
            })
            .collect();
        CatalogTrust {
            bundle: Some(self.config.own_bundle.clone()),
            held_roots,
        }
    }

    /// After a catalog message from `peer` was applied: stores the bundle it announces when it
    /// is a step of its root rotation (its own trust domain only, sharing a root with the
    /// bundle held; see [`accept_peer_bundle`]). Refusals are logged; the catalog stays applied.
    pub(super) fn adopt_peer_bundle(&mut self, peer: &str) {
        let Some(announced) = self
            .peering
            .catalog(peer)
            .and_then(|held| held.catalog.trust.as_ref())
            .and_then(|t| t.bundle.clone())
        else {
            return;
        };
        let Some(held) = self.links.bundle(peer) else {
            return;
        };
        match accept_peer_bundle(held, &announced) {
            Ok(BundleUpdate::Unchanged) => {}
            Ok(BundleUpdate::Replace(bundle)) => {
                let roots = bundle_fingerprints(&bundle.ca_pem)
                    .map(|f| f.len())
                    .unwrap_or(0);
                match self.links.replace_bundle(peer, bundle) {
                    Ok(()) => tracing::info!(
                        %peer,
                        roots,
                        "the peer's trust bundle changed on the link (root rotation); stored"
                    ),
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "the peer's new trust bundle was not stored")
                    }
                }
            }
            Err(reason) => {
                tracing::warn!(%peer, %reason, "the peer's announced trust bundle is refused")
            }
        }
    }

    /// What each linked peer last said it holds for this cluster's trust domain.
    pub(crate) fn peer_roots(&self) -> Vec<PeerRoots> {
        let own = &self.config.own_bundle.trust_domain;
        self.links
            .iter()
            .map(|l| PeerRoots {
                cluster: l.cluster.clone(),
                held: self
                    .peering
                    .catalog(&l.cluster)
                    .and_then(|c| c.catalog.trust.as_ref())
                    .and_then(|t| t.held_roots.get(own).cloned()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use mesh_core::api::LinkInfo;
    use mesh_core::catalog::{CatalogMessage, ExportCatalog};
    use mesh_core::identity::ClusterCa;
    use mesh_core::locality::LocalityPolicy;

    use super::*;
    use crate::export_cache::ExportCache;
    use crate::links::LinkStore;
    use crate::state::StateConfig;

    fn bundle_of(cluster: &str, roots: &[&ClusterCa]) -> TrustBundle {
        TrustBundle {
            trust_domain: format!("{cluster}.mesh"),
            cluster: cluster.into(),
            ca_pem: roots.iter().map(|r| r.cert_pem()).collect(),
        }
    }

    fn home(own: TrustBundle) -> FederationState {
        FederationState::new(
            StateConfig {
                cluster: "home".into(),
                region: "us".into(),
                own_bundle: own,
                policy: LocalityPolicy::default(),
                lease_grace: Duration::from_secs(30),
                registration_ttl: Duration::from_secs(3),
                initial_version: 100,
            },
            LinkStore::ephemeral("home", "home.mesh"),
            None,
            Vec::new(),
            ExportCache::ephemeral(),
        )
    }

    fn snapshot(cluster: &str, version: u64, trust: CatalogTrust) -> CatalogMessage {
        let mut catalog = ExportCatalog::new(cluster);
        catalog.version = version;
        catalog.trust = Some(trust);
        CatalogMessage::Snapshot { catalog }
    }

    #[test]
    fn a_peer_bundle_on_the_link_replaces_its_own_domain_only() {
        let home_root = ClusterCa::generate("home.mesh").unwrap();
        let eu_old = ClusterCa::generate("eu.mesh").unwrap();
        let eu_new = ClusterCa::generate("eu.mesh").unwrap();
        let ap = ClusterCa::generate("ap.mesh").unwrap();
        let mut s = home(bundle_of("home", &[&home_root]));
        for (cluster, root) in [("eu", &eu_old), ("ap", &ap)] {
            s.add_link(LinkInfo {
                cluster: cluster.into(),
                region: "eu".into(),
                trust_bundle: bundle_of(cluster, &[root]),
                gateway_addr: "127.0.0.1:7000".parse().unwrap(),
            })
            .unwrap();
        }
        // eu announces both its roots and that it holds home's one root.
        let home_fps = bundle_fingerprints(home_root.cert_pem()).unwrap();
        let both = bundle_of("eu", &[&eu_old, &eu_new]);
        let trust = CatalogTrust {
            bundle: Some(both.clone()),
            held_roots: [("home.mesh".to_string(), home_fps.clone())].into(),
        };
        s.apply_catalog("eu", &snapshot("eu", 1, trust)).unwrap();
        assert_eq!(s.links.bundle("eu"), Some(&both));
        let view = s.recompute(Instant::now()).unwrap();
        assert!(view.peer_bundles.contains(&both), "published to sidecars");
        assert!(
            view.peers.iter().any(|p| p.trust_bundle == both),
            "and the gateway"
        );
        assert_eq!(
            s.peer_roots(),
            vec![
                PeerRoots {
                    cluster: "ap".into(),
                    held: None
                },
                PeerRoots {
                    cluster: "eu".into(),
                    held: Some(home_fps)
                },
            ]
        );
        // eu cannot speak for ap's domain.
        let forged = CatalogTrust {
            bundle: Some(TrustBundle {
                trust_domain: "ap.mesh".into(),
                cluster: "eu".into(),
                ca_pem: eu_new.cert_pem().into(),
            }),
            held_roots: Default::default(),
        };
        s.apply_catalog("eu", &snapshot("eu", 2, forged)).unwrap();
        assert_eq!(s.links.bundle("ap"), Some(&bundle_of("ap", &[&ap])));
        assert_eq!(s.links.bundle("eu"), Some(&both));

        // Our own rotation: the new bundle is announced in the export catalog.
        let home_new = ClusterCa::generate("home.mesh").unwrap();
        assert!(s.set_own_bundle(bundle_of("home", &[&home_root, &home_new])));
        let view = s.recompute(Instant::now()).unwrap();
        let announced = view.exports.trust.clone().unwrap();
        assert_eq!(
            announced
                .bundle
                .map(|b| bundle_fingerprints(&b.ca_pem).unwrap().len()),
            Some(2)
        );
        assert_eq!(
            announced.held_roots.len(),
            2,
            "the roots held for eu and ap"
        );
    }
}
