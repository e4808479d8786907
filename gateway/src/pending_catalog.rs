//! The message a control-stream receiver holds while its controller is unreachable, and how a
//! newer message from the peer is folded into it.
//!
//! Only the latest state matters to the controller, so a pending message is never queued behind
//! another: a newer snapshot replaces it, a delta that continues it is folded into it, and a
//! delta that does not line up means a snapshot is needed (the receiver sends a resync request).

use mesh_core::catalog::{CatalogDelta, CatalogMessage};

/// Folds `newer` into `pending`; `None` when they cannot be combined and a snapshot is needed.
pub(crate) fn fold(pending: CatalogMessage, newer: CatalogMessage) -> Option<CatalogMessage> {
    match (pending, newer) {
        (_, snapshot @ CatalogMessage::Snapshot { .. }) => Some(snapshot),
        (CatalogMessage::Snapshot { mut catalog }, CatalogMessage::Delta { delta }) => {
            catalog.apply(&delta).ok()?;
            Some(CatalogMessage::Snapshot { catalog })
        }
        (CatalogMessage::Delta { delta: first }, CatalogMessage::Delta { delta: second }) => {
            merge_deltas(first, second).map(|delta| CatalogMessage::Delta { delta })
        }
        // A resync request or a kind of a later release is never pending on the receiving side
        // (the reader does not deliver them); nothing to fold into.
        (CatalogMessage::ResyncRequest | CatalogMessage::Unknown, _)
        | (_, CatalogMessage::ResyncRequest | CatalogMessage::Unknown) => None,
    }
}

/// One delta equivalent to applying `first` then `second`, when `second` continues `first`.
fn merge_deltas(first: CatalogDelta, second: CatalogDelta) -> Option<CatalogDelta> {
    if first.cluster != second.cluster || first.to_version != second.from_version {
        return None;
    }
    let mut upserts = first.upserts;
    let mut removals = first.removals;
    for key in &second.removals {
        upserts.remove(key);
        if !removals.contains(key) {
            removals.push(key.clone());
        }
    }
    for (key, svc) in second.upserts {
        removals.retain(|k| k != &key);
        upserts.insert(key, svc);
    }
    Some(CatalogDelta {
        cluster: second.cluster,
        from_version: first.from_version,
        to_version: second.to_version,
        upserts,
        removals,
        // The later announcement of trust wins; none in either keeps what the receiver holds.
        trust: second.trust.or(first.trust),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::catalog::{ExportCatalog, ExportedEndpoint, ExportedService};

    fn catalog(version: u64, services: &[(&str, u16)]) -> ExportCatalog {
        let mut c = ExportCatalog::new("eu-central");
        c.version = version;
        for (name, port) in services {
            c.services.insert(
                name.parse().unwrap(),
                ExportedService {
                    healthy: true,
                    endpoints: vec![ExportedEndpoint {
                        address: std::net::SocketAddr::from(([127, 0, 0, 1], *port)),
                        identity: "spiffe://eu-central.mesh/ns/demo/sa/x".into(),
                        healthy: true,
                    }],
                    ports: Vec::new(),
                    exported_since: None,
                },
            );
        }
        c
    }

    fn delta(from: &ExportCatalog, to: &ExportCatalog) -> CatalogMessage {
        CatalogMessage::Delta {
            delta: from.diff(to),
        }
    }

    #[test]
    fn a_newer_snapshot_replaces_anything() {
        let v1 = catalog(1, &[("a.demo", 1)]);
        let v2 = catalog(2, &[("b.demo", 2)]);
        let snap2 = CatalogMessage::Snapshot {
            catalog: v2.clone(),
        };
        assert_eq!(fold(delta(&v1, &v2), snap2.clone()), Some(snap2.clone()));
        assert_eq!(
            fold(CatalogMessage::Snapshot { catalog: v1 }, snap2.clone()),
            Some(snap2)
        );
    }

    #[test]
    fn a_delta_continuing_a_pending_snapshot_is_applied_to_it() {
        let v1 = catalog(1, &[("a.demo", 1)]);
        let v2 = catalog(2, &[("a.demo", 1), ("b.demo", 2)]);
        let got = fold(
            CatalogMessage::Snapshot {
                catalog: v1.clone(),
            },
            delta(&v1, &v2),
        );
        assert_eq!(got, Some(CatalogMessage::Snapshot { catalog: v2 }));
    }

    #[test]
    fn consecutive_deltas_merge_into_one_that_reaches_the_same_catalog() {
        let v1 = catalog(1, &[("a.demo", 1), ("b.demo", 2), ("c.demo", 3)]);
        // v2 drops b, changes a, adds d; v3 re-adds b, drops d, changes c.
        let v2 = catalog(2, &[("a.demo", 11), ("c.demo", 3), ("d.demo", 4)]);
        let v3 = catalog(3, &[("a.demo", 11), ("b.demo", 22), ("c.demo", 33)]);
        let Some(CatalogMessage::Delta { delta: merged }) = fold(delta(&v1, &v2), delta(&v2, &v3))
        else {
            panic!("deltas that line up must merge");
        };
        assert_eq!((merged.from_version, merged.to_version), (1, 3));
        let mut got = v1.clone();
        got.apply(&merged).unwrap();
        assert_eq!(got, v3);
    }

    #[test]
    fn deltas_that_do_not_line_up_need_a_snapshot() {
        let v1 = catalog(1, &[("a.demo", 1)]);
        let v2 = catalog(2, &[("b.demo", 2)]);
        let v3 = catalog(3, &[("c.demo", 3)]);
        assert_eq!(fold(delta(&v1, &v2), delta(&v1, &v3)), None);
        assert_eq!(
            fold(CatalogMessage::Snapshot { catalog: v1 }, delta(&v2, &v3)),
            None
        );
    }
}
