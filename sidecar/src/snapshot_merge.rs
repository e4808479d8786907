//! Static stability across a controller restart. A controller keeps no registrations on disk:
//! for its first seconds it relearns them from heartbeats and its peers' catalogs from its
//! gateway, and its snapshots say so (`warming`). Applied as they are, they would withdraw
//! services that exist ("not exported by any linked cluster") or fail traffic over for a
//! locality whose endpoints have not registered again yet. So when the controller's epoch
//! changes, the sidecar keeps what it served until then as a base and merges every warming
//! snapshot of the new epoch over it, taking only additions: a service's new route is taken
//! when it keeps every locality of the base route with at least as many endpoints, else the
//! base route stays; a service routed before stays routed; trust bundles and the gateway
//! address are only added. A cluster just starting has no earlier epoch and takes its
//! snapshots as they come. The first snapshot of a warm controller replaces everything.

use mesh_core::api::{ServiceRoute, SidecarSnapshot};

/// `warming` applied over `previous`: routes that only grow are taken, any other route of
/// `previous` is kept; what only `warming` knows is added.
pub fn merge_warming(previous: &SidecarSnapshot, warming: SidecarSnapshot) -> SidecarSnapshot {
    let SidecarSnapshot {
        version,
        cluster,
        mut trust_bundles,
        gateway,
        mut services,
        unknown,
        mut policies,
        epoch,
        warming: _,
    } = warming;
    for (key, policy) in &previous.policies {
        policies
            .entry(key.clone())
            .or_insert_with(|| policy.clone());
    }
    for (key, route) in &previous.services {
        let grows = services.get(key).is_some_and(|new| covers(new, route));
        if !grows {
            services.insert(key.clone(), route.clone());
        }
    }
    let unknown = unknown
        .into_iter()
        .filter(|key| !services.contains_key(key))
        .collect();
    for bundle in &previous.trust_bundles {
        if !trust_bundles
            .iter()
            .any(|b| b.trust_domain == bundle.trust_domain)
        {
            trust_bundles.push(bundle.clone());
        }
    }
    SidecarSnapshot {
        version,
        cluster,
        trust_bundles,
        gateway: gateway.or(previous.gateway),
        services,
        unknown,
        policies,
        epoch,
        warming: true,
    }
}

/// Whether `new` has every locality of `old` with at least as many endpoints.
fn covers(new: &ServiceRoute, old: &ServiceRoute) -> bool {
    old.localities.iter().all(|o| {
        new.localities
            .iter()
            .any(|n| n.entry.cluster == o.entry.cluster && n.endpoints.len() >= o.endpoints.len())
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use mesh_core::api::{LocalityRoute, RouteEndpoint};
    use mesh_core::identity::TrustBundle;
    use mesh_core::locality::LocalityEntry;
    use mesh_core::names::ServiceKey;

    use super::*;

    fn key(name: &str) -> ServiceKey {
        name.parse().unwrap()
    }

    /// A route over `clusters`, each `cluster:endpoints`.
    fn route(clusters: &str) -> ServiceRoute {
        ServiceRoute {
            localities: clusters
                .split(',')
                .map(|c| {
                    let (cluster, n) = c.split_once(':').unwrap_or((c, "1"));
                    LocalityRoute {
                        entry: LocalityEntry {
                            cluster: cluster.into(),
                            health: 1.0,
                            reason: "test".into(),
                        },
                        endpoints: (0..n.parse::<u16>().unwrap())
                            .map(|p| RouteEndpoint {
                                address: SocketAddr::from(([10, 0, 0, 1], 9000 + p)),
                                identity: "spiffe://x.mesh/ns/demo/sa/echo".into(),
                                healthy: true,
                                plaintext: false,
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }

    fn bundle(domain: &str) -> TrustBundle {
        TrustBundle {
            trust_domain: domain.into(),
            cluster: domain.trim_end_matches(".mesh").into(),
            ca_pem: format!("pem of {domain}"),
        }
    }

    fn snapshot(
        version: u64,
        services: &[(&str, &str)],
        unknown: &[&str],
        bundles: &[&str],
        gateway: Option<SocketAddr>,
        warming: bool,
    ) -> SidecarSnapshot {
        SidecarSnapshot {
            version,
            cluster: "us-east".into(),
            trust_bundles: bundles.iter().map(|d| bundle(d)).collect(),
            gateway,
            services: services
                .iter()
                .map(|(k, c)| (key(k), route(c)))
                .collect::<BTreeMap<_, _>>(),
            unknown: unknown.iter().map(|k| key(k)).collect(),
            policies: Default::default(),
            epoch: version,
            warming,
        }
    }

    #[test]
    fn a_warming_controller_adds_but_never_withdraws_or_reroutes() {
        let gateway: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let previous = snapshot(
            7,
            &[
                ("echo.demo", "us-east:2,us-west:2"),
                ("db.demo", "us-west"),
                ("api.demo", "us-east:1"),
            ],
            &[],
            &["us-east.mesh", "us-west.mesh"],
            Some(gateway),
            false,
        );
        // Freshly restarted: one of echo's local endpoints not registered yet, db unknown
        // (us-west's catalog not relayed yet), api grown by a replica, a service it did not
        // know, and no gateway report yet.
        let warming = snapshot(
            9,
            &[
                ("echo.demo", "us-east:1,us-west:2"),
                ("api.demo", "us-east:2"),
                ("web.demo", "us-east"),
            ],
            &["db.demo", "gone.demo"],
            &["us-east.mesh"],
            None,
            true,
        );
        let merged = merge_warming(&previous, warming);
        assert_eq!(merged.version, 9);
        assert!(merged.warming);
        assert_eq!(
            merged.services[&key("echo.demo")],
            route("us-east:2,us-west:2")
        );
        assert_eq!(merged.services[&key("db.demo")], route("us-west"));
        assert_eq!(merged.services[&key("api.demo")], route("us-east:2"));
        assert_eq!(merged.services[&key("web.demo")], route("us-east"));
        assert_eq!(merged.unknown, vec![key("gone.demo")]);
        assert_eq!(merged.gateway, Some(gateway));
        let domains: Vec<&str> = merged
            .trust_bundles
            .iter()
            .map(|b| b.trust_domain.as_str())
            .collect();
        assert_eq!(domains, vec!["us-east.mesh", "us-west.mesh"]);
    }

    #[test]
    fn a_cluster_just_starting_learns_its_routes_as_they_grow() {
        let before = snapshot(
            3,
            &[("echo.demo", "us-west")],
            &["web.demo"],
            &[],
            None,
            true,
        );
        let grown = snapshot(
            4,
            &[("echo.demo", "us-east:2,us-west"), ("web.demo", "us-east")],
            &[],
            &[],
            None,
            true,
        );
        let merged = merge_warming(&before, grown);
        assert_eq!(
            merged.services[&key("echo.demo")],
            route("us-east:2,us-west")
        );
        assert_eq!(merged.services[&key("web.demo")], route("us-east"));
        assert!(merged.unknown.is_empty());
    }
}
