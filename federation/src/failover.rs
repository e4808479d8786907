//! The failover decision, as a pure function: from the local registry, the peers' catalogs,
//! the links and the sidecars' breaker reports, compute every service's locality order (what
//! sidecars route by) and the catalog this cluster exports (what peers route by).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use mesh_core::api::{BreakerSummary, EndpointCount, LocalityRoute, RouteEndpoint, ServiceRoute};
use mesh_core::catalog::{ExportCatalog, ExportedEndpoint, ExportedService};
use mesh_core::locality::{LocalityCandidate, LocalityPolicy, locality_order};
use mesh_core::names::ServiceKey;

use crate::breaker_reports::{BreakerCount, BreakerTally};
use crate::registry::{RegistryEndpoint, ServiceSpec};

/// What is known about one linked peer that holds a catalog.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerInput<'a> {
    /// The peer cluster.
    pub cluster: &'a str,
    /// Its region (from the link).
    pub region: &'a str,
    /// Whether its link is up.
    pub reachable: bool,
    /// Its published RTT.
    pub rtt: Option<Duration>,
    /// Its catalog.
    pub catalog: &'a ExportCatalog,
}

/// Everything the decision depends on, resolved at one instant.
#[derive(Debug, Clone)]
pub(crate) struct FailoverInputs<'a> {
    /// This cluster.
    pub cluster: &'a str,
    /// Its region.
    pub region: &'a str,
    /// Region priority and breaker quorum.
    pub policy: &'a LocalityPolicy,
    /// The local registry's endpoints now.
    pub local: &'a [RegistryEndpoint],
    /// Services the local registry defines with or without endpoints (exported even when
    /// empty).
    pub defined: &'a [(ServiceKey, Arc<ServiceSpec>)],
    /// Linked peers holding a catalog.
    pub peers: &'a [PeerInput<'a>],
    /// The own sidecars' breaker reports.
    pub breakers: &'a BreakerTally,
}

/// The decision for one service.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceDecision {
    /// Localities in failover order, with their endpoints.
    pub route: ServiceRoute,
    /// Endpoint counts per cluster holding the service (including ones left out of the order).
    pub endpoints: Vec<EndpointCount>,
    /// Breaker reports per locality.
    pub breakers: Vec<BreakerSummary>,
    /// True unless the own cluster is first with full health.
    pub failover_active: bool,
}

/// The decision for every service.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FailoverDecision {
    /// Every service known locally or in a peer's catalog.
    pub services: BTreeMap<ServiceKey, ServiceDecision>,
    /// What this cluster exports (every local service), without a version.
    pub exports: BTreeMap<ServiceKey, ExportedService>,
}

/// Computes the decision.
pub(crate) fn decide(inputs: &FailoverInputs<'_>) -> FailoverDecision {
    let mut local: BTreeMap<&ServiceKey, Vec<&RegistryEndpoint>> = BTreeMap::new();
    for e in inputs.local {
        local.entry(&e.service).or_default().push(e);
    }
    let mut keys: BTreeSet<&ServiceKey> = local.keys().copied().collect();
    keys.extend(inputs.defined.iter().map(|(key, _)| key));
    for peer in inputs.peers {
        keys.extend(peer.catalog.services.keys());
    }
    let mut decision = FailoverDecision::default();
    for key in keys {
        let own = local.get(key).map(Vec::as_slice).unwrap_or_default();
        // Plaintext endpoints have no identity to verify and no sidecar a tunnel could reach
        // over TLS: they serve this cluster only.
        let exported: Vec<&RegistryEndpoint> =
            own.iter().copied().filter(|e| !e.plaintext).collect();
        let defined = inputs
            .defined
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, spec)| spec.as_ref());
        if !exported.is_empty() || defined.is_some() {
            decision
                .exports
                .insert(key.clone(), export(inputs, key, &exported, defined));
        }
        decision
            .services
            .insert(key.clone(), decide_service(inputs, key, own));
    }
    decision
}

fn breaker_count(inputs: &FailoverInputs<'_>, key: &ServiceKey, cluster: &str) -> BreakerCount {
    inputs
        .breakers
        .get(&(key.clone(), cluster.to_string()))
        .copied()
        .unwrap_or_default()
}

/// The exported entry of a local service: unhealthy when no endpoint is healthy or a quorum of
/// the own sidecars has the own-locality breaker open, so peers stop sending here too.
fn export(
    inputs: &FailoverInputs<'_>,
    key: &ServiceKey,
    own: &[&RegistryEndpoint],
    defined: Option<&ServiceSpec>,
) -> ExportedService {
    let mut endpoints: Vec<ExportedEndpoint> = own
        .iter()
        .map(|e| ExportedEndpoint {
            address: e.address,
            identity: e.identity.clone(),
            healthy: e.healthy,
        })
        .collect();
    endpoints.sort_by_key(|e| e.address);
    let breaker_open =
        breaker_count(inputs, key, inputs.cluster).quorum_open(inputs.policy.breaker_quorum);
    let any_healthy = endpoints.iter().any(|e| e.healthy);
    let spec = defined.or_else(|| own.iter().find_map(|e| e.spec.as_deref()));
    ExportedService {
        healthy: any_healthy && !breaker_open,
        endpoints,
        ports: spec.map(|s| s.ports.clone()).unwrap_or_default(),
        exported_since: spec.and_then(|s| s.exported_since),
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn decide_service(
    inputs: &FailoverInputs<'_>,
    key: &ServiceKey,
    own: &[&RegistryEndpoint],
) -> ServiceDecision {
    let mut candidates = Vec::new();
    let mut routes: BTreeMap<&str, Vec<RouteEndpoint>> = BTreeMap::new();
    let mut endpoints = Vec::new();
    if !own.is_empty() {
        let healthy = count(own.iter().filter(|e| e.healthy).count());
        let total = count(own.len());
        let breakers = breaker_count(inputs, key, inputs.cluster);
        candidates.push(LocalityCandidate {
            cluster: inputs.cluster.to_string(),
            region: inputs.region.to_string(),
            reachable: true,
            rtt: None,
            healthy_endpoints: healthy,
            total_endpoints: total,
            breaker_open_reports: breakers.open,
            reporting_sidecars: breakers.reporters,
        });
        let mut eps: Vec<RouteEndpoint> = own
            .iter()
            .map(|e| RouteEndpoint {
                address: e.address,
                identity: e.identity.clone(),
                healthy: e.healthy,
                plaintext: e.plaintext,
            })
            .collect();
        eps.sort_by_key(|e| e.address);
        routes.insert(inputs.cluster, eps);
        endpoints.push(EndpointCount {
            cluster: inputs.cluster.to_string(),
            healthy,
            total,
        });
    }
    for peer in inputs.peers {
        let Some(svc) = peer.catalog.services.get(key) else {
            continue;
        };
        let healthy = count(svc.healthy_endpoints());
        let total = count(svc.endpoints.len());
        let breakers = breaker_count(inputs, key, peer.cluster);
        candidates.push(LocalityCandidate {
            cluster: peer.cluster.to_string(),
            region: peer.region.to_string(),
            reachable: peer.reachable,
            rtt: peer.rtt,
            healthy_endpoints: healthy,
            total_endpoints: total,
            breaker_open_reports: breakers.open,
            reporting_sidecars: breakers.reporters,
        });
        let eps = svc
            .endpoints
            .iter()
            .map(|e| RouteEndpoint {
                address: e.address,
                identity: e.identity.clone(),
                // The owner's verdict on the whole service overrides its endpoints'.
                healthy: e.healthy && svc.healthy,
                plaintext: false,
            })
            .collect();
        routes.insert(peer.cluster, eps);
        endpoints.push(EndpointCount {
            cluster: peer.cluster.to_string(),
            healthy,
            total,
        });
    }
    endpoints.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    let order = locality_order(inputs.cluster, inputs.policy, &candidates);
    let failover_active = !order
        .first()
        .is_some_and(|first| first.cluster == inputs.cluster && first.health >= 1.0);
    let localities = order
        .into_iter()
        .map(|entry| LocalityRoute {
            endpoints: routes
                .get(entry.cluster.as_str())
                .cloned()
                .unwrap_or_default(),
            entry,
        })
        .collect();
    let breakers = inputs
        .breakers
        .range((key.clone(), String::new())..)
        .take_while(|((k, _), _)| k == key)
        .map(|((_, cluster), c)| BreakerSummary {
            cluster: cluster.clone(),
            open: c.open,
            reporters: c.reporters,
        })
        .collect();
    ServiceDecision {
        route: ServiceRoute { localities },
        endpoints,
        breakers,
        failover_active,
    }
}

#[cfg(test)]
mod tests;
