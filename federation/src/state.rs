//! The controller's whole state, without I/O other than saving links: registry, links, peer
//! catalogs, gateway reports, breaker reports, and the published view recomputed from them.
//! Every method takes `now`, so the behaviour over time is tested with injected instants.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_core::api::{
    BreakerReport, ControllerStatus, GatewayReport, LinkInfo, LinkStatusView, PeerLinkConfig,
    ServiceStatusView, WorkloadRegistration,
};
use mesh_core::catalog::{CatalogError, CatalogMessage, ExportCatalog, ExportedService};
use mesh_core::identity::{SpiffeId, TrustBundle};
use mesh_core::locality::LocalityPolicy;
use mesh_core::names::ServiceKey;
use mesh_core::policy::service_policy::ServicePolicy;

use crate::breaker_reports::{BREAKER_REPORT_TTL, BreakerRefusal, BreakerReports};
use crate::export_cache::{ExportCache, ExportedServices, merge_warming};
use crate::failover::{FailoverInputs, PeerInput, decide};
use crate::links::{LinkChange, LinkError, LinkStore};
use crate::peering::Peering;
use crate::registry::{
    CombinedRegistry, RegistrationError, Registrations, ServiceRegistry, StaticServices,
};
use crate::view::PublishedView;

#[cfg(test)]
mod tests;
mod trust;

/// What the state is built from.
#[derive(Debug, Clone)]
pub(crate) struct StateConfig {
    /// This cluster.
    pub cluster: String,
    /// Its region.
    pub region: String,
    /// Its trust bundle.
    pub own_bundle: TrustBundle,
    /// Region priority and breaker quorum.
    pub policy: LocalityPolicy,
    /// Peer catalog lease grace.
    pub lease_grace: Duration,
    /// Registration lifetime without a heartbeat.
    pub registration_ttl: Duration,
    /// First version of the view and the export catalog. Taking the start time in
    /// milliseconds keeps versions increasing across restarts, so peers and sidecars never
    /// see a restarted controller go back in time.
    pub initial_version: u64,
}

/// Why a catalog message was not applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CatalogRefusal {
    /// The sender is not a linked peer.
    #[error("cluster {0} is not linked with this cluster; run `mesh link` first")]
    NotLinked(String),
    /// The catalog store refused it.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Least time a (re)started controller calls itself warming: three registration heartbeats
/// (one a second), so every live sidecar of the cluster has registered again.
const WARMUP_MIN: Duration = Duration::from_secs(3);

/// Longest time it waits for the catalogs of its linked peers (relayed by its gateway) before
/// it stops calling itself warming: a peer that has not answered by then is likely down.
const WARMUP_MAX: Duration = Duration::from_secs(10);

/// What a tick expired.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Expired {
    /// Workloads whose registration expired.
    pub workloads: Vec<String>,
    /// Peers whose catalog lease ran out.
    pub peers: Vec<String>,
    /// Breaker reports dropped.
    pub breaker_reports: usize,
}

/// The state.
#[derive(Debug)]
pub(crate) struct FederationState {
    config: StateConfig,
    registrations: Arc<Registrations>,
    registry: CombinedRegistry,
    links: LinkStore,
    peering: Peering,
    breakers: BreakerReports,
    exports: ExportCatalog,
    view: Arc<PublishedView>,
    /// The `now` of the first recompute: the start of warm-up.
    started_at: Option<Instant>,
    /// Warm-up is over (for good: a link added later does not start it again).
    warm: bool,
    /// Where the export catalog is cached across restarts.
    export_cache: ExportCache,
    /// The cached catalog of the previous run, merged into the exports while warming.
    cached_exports: Option<ExportedServices>,
    /// The traffic policy in force, per service (the last good one loaded).
    policies: Arc<BTreeMap<ServiceKey, ServicePolicy>>,
}

impl FederationState {
    /// A state over `links` (loaded from disk) and optional static services.
    pub(crate) fn new(
        config: StateConfig,
        links: LinkStore,
        static_services: Option<StaticServices>,
        extra_backends: Vec<Arc<dyn ServiceRegistry>>,
        export_cache: ExportCache,
    ) -> Self {
        let registrations = Arc::new(Registrations::new(
            &config.cluster,
            &config.own_bundle.trust_domain,
            config.registration_ttl,
        ));
        let mut backends: Vec<Arc<dyn ServiceRegistry>> = vec![registrations.clone()];
        if let Some(s) = static_services {
            backends.push(Arc::new(s));
        }
        backends.extend(extra_backends);
        let mut exports = ExportCatalog::new(&config.cluster);
        exports.version = config.initial_version;
        let view = PublishedView::empty(
            &config.cluster,
            config.own_bundle.clone(),
            config.initial_version,
            exports.clone(),
        );
        let mut state = Self {
            peering: Peering::new(config.lease_grace),
            breakers: BreakerReports::new(BREAKER_REPORT_TTL),
            registrations,
            registry: CombinedRegistry::new(backends),
            links,
            exports,
            view: Arc::new(view),
            started_at: None,
            warm: false,
            cached_exports: export_cache.load_recent(config.lease_grace),
            export_cache,
            policies: Arc::default(),
            config,
        };
        // The trust announced to peers is part of the export catalog from the start.
        state.exports.trust = Some(state.announced_trust());
        Arc::make_mut(&mut state.view).exports = state.exports.clone();
        state
    }

    /// Puts `policies` in force (published with the next recompute); false when they already
    /// were.
    pub(crate) fn set_policies(&mut self, policies: BTreeMap<ServiceKey, ServicePolicy>) -> bool {
        if *self.policies == policies {
            return false;
        }
        self.policies = Arc::new(policies);
        true
    }

    /// Every service some cluster has (this cluster's and the linked peers' exports, and
    /// what the view routes): what policy references resolve against.
    pub(crate) fn known_services(&self) -> std::collections::BTreeSet<ServiceKey> {
        let mut known: std::collections::BTreeSet<ServiceKey> =
            self.exporters().into_keys().collect();
        known.extend(self.view.services.keys().cloned());
        known
    }

    /// Registers or renews a workload; true when it is new.
    pub(crate) fn register(
        &mut self,
        path_id: &str,
        reg: WorkloadRegistration,
        caller: &SpiffeId,
        now: Instant,
    ) -> Result<bool, RegistrationError> {
        self.registrations.register(path_id, reg, caller, now)
    }

    /// Removes a workload.
    pub(crate) fn deregister(
        &mut self,
        id: &str,
        caller: &SpiffeId,
    ) -> Result<(), RegistrationError> {
        self.registrations.remove(id, caller)
    }

    /// Stores a breaker report sent by `caller`.
    pub(crate) fn put_breakers(
        &mut self,
        caller: &SpiffeId,
        report: BreakerReport,
        now: Instant,
    ) -> Result<(), BreakerRefusal> {
        self.breakers.put(&caller.to_string(), report, now)
    }

    /// Whether `identity` is that of a workload this cluster's registry knows at `now` (a
    /// registration, a static entry, an EndpointSlice's pod): whose breaker reports count.
    pub(crate) fn has_workload(&self, identity: &str, now: Instant) -> bool {
        self.registry
            .endpoints(now)
            .iter()
            .any(|e| e.identity == identity)
    }

    /// Records the gateway's report.
    pub(crate) fn gateway_report(&mut self, report: GatewayReport, now: Instant) {
        let linked = self.links.iter().map(|l| l.cluster.as_str());
        self.peering.gateway_report(report, linked, now);
    }

    /// Applies a catalog message received from `peer`.
    pub(crate) fn apply_catalog(
        &mut self,
        peer: &str,
        msg: &CatalogMessage,
    ) -> Result<(), CatalogRefusal> {
        if !self.links.contains(peer) {
            return Err(CatalogRefusal::NotLinked(peer.to_string()));
        }
        self.peering.apply(peer, msg)?;
        self.adopt_peer_bundle(peer);
        Ok(())
    }

    /// Links with a peer (idempotent).
    pub(crate) fn add_link(&mut self, info: LinkInfo) -> Result<LinkChange, LinkError> {
        self.links.add(info)
    }

    /// Unlinks a peer: its link, trust and catalog go at once.
    pub(crate) fn remove_link(&mut self, cluster: &str) -> Result<LinkInfo, LinkError> {
        let removed = self.links.remove(cluster)?;
        self.peering.forget(cluster);
        Ok(removed)
    }

    /// Every cluster exporting each service, with its entry: this cluster's exports and the
    /// catalogs held of linked peers (what `ServiceImport`s are made from).
    pub(crate) fn exporters(&self) -> BTreeMap<ServiceKey, Vec<(String, ExportedService)>> {
        let mut all: BTreeMap<ServiceKey, Vec<(String, ExportedService)>> = BTreeMap::new();
        for (key, svc) in &self.exports.services {
            all.entry(key.clone())
                .or_default()
                .push((self.config.cluster.clone(), svc.clone()));
        }
        for link in self.links.iter() {
            let Some(held) = self.peering.catalog(&link.cluster) else {
                continue;
            };
            for (key, svc) in &held.catalog.services {
                all.entry(key.clone())
                    .or_default()
                    .push((link.cluster.clone(), svc.clone()));
            }
        }
        all
    }

    /// This cluster's name.
    pub(crate) fn cluster(&self) -> &str {
        &self.config.cluster
    }

    /// Every link.
    pub(crate) fn links(&self) -> Vec<LinkInfo> {
        self.links.iter().cloned().collect()
    }

    /// This cluster's link info, once the gateway has said where it listens.
    pub(crate) fn link_info(&self) -> Option<LinkInfo> {
        Some(LinkInfo {
            cluster: self.config.cluster.clone(),
            region: self.config.region.clone(),
            trust_bundle: self.config.own_bundle.clone(),
            gateway_addr: self.peering.gateway_quic_addr()?,
        })
    }

    /// Expires registrations, breaker reports and peer leases (and takes links down when the
    /// gateway fell silent).
    pub(crate) fn tick(&mut self, now: Instant) -> Expired {
        Expired {
            workloads: self.registrations.expire(now),
            peers: self.peering.tick(now),
            breaker_reports: self.breakers.expire(now),
        }
    }

    /// Recomputes the view; returns it when it changed (with a new version).
    pub(crate) fn recompute(&mut self, now: Instant) -> Option<Arc<PublishedView>> {
        let local = self.registry.endpoints(now);
        let defined = self.registry.defined();
        let tally = self.breakers.tally(now);
        let peers: Vec<PeerInput<'_>> = self
            .links
            .iter()
            .filter_map(|link| {
                let held = self.peering.catalog(&link.cluster)?;
                Some(PeerInput {
                    cluster: &link.cluster,
                    region: &link.region,
                    reachable: held.link_up,
                    rtt: self.peering.rtt(&link.cluster),
                    catalog: &held.catalog,
                })
            })
            .collect();
        let decision = decide(&FailoverInputs {
            cluster: &self.config.cluster,
            region: &self.config.region,
            policy: &self.config.policy,
            local: &local,
            defined: &defined,
            peers: &peers,
            breakers: &tally,
        });
        let warming = self.warming(now);
        let mut exports = decision.exports;
        match &self.cached_exports {
            Some(cached) if warming => merge_warming(&mut exports, cached),
            _ => self.cached_exports = None,
        }
        let trust = Some(self.announced_trust());
        if exports != self.exports.services || trust != self.exports.trust {
            self.exports = ExportCatalog {
                cluster: self.config.cluster.clone(),
                version: self.exports.version + 1,
                services: exports,
                trust,
            };
            self.export_cache.save(&self.exports);
        }
        let mut next = PublishedView {
            version: self.view.version,
            cluster: self.config.cluster.clone(),
            own_bundle: self.config.own_bundle.clone(),
            peer_bundles: self.links.iter().map(|l| l.trust_bundle.clone()).collect(),
            gateway_tunnel: self.peering.gateway_tunnel_addr(),
            peers: self
                .links
                .iter()
                .map(|l| PeerLinkConfig {
                    cluster: l.cluster.clone(),
                    trust_bundle: l.trust_bundle.clone(),
                    gateway_addr: l.gateway_addr,
                })
                .collect(),
            services: decision.services,
            exports: self.exports.clone(),
            policies: self.policies.clone(),
            epoch: self.config.initial_version,
            warming,
        };
        if next.same_content(&self.view) {
            return None;
        }
        next.version = self.view.version + 1;
        self.view = Arc::new(next);
        Some(self.view.clone())
    }

    /// Whether the controller is still relearning what it knew before it started: for
    /// `WARMUP_MIN`, then until every linked peer's catalog has arrived, at most `WARMUP_MAX`.
    fn warming(&mut self, now: Instant) -> bool {
        if self.warm {
            return false;
        }
        let started_at = *self.started_at.get_or_insert(now);
        let elapsed = now.saturating_duration_since(started_at);
        let warming = elapsed < WARMUP_MIN
            || (elapsed < WARMUP_MAX
                && self
                    .links
                    .iter()
                    .any(|link| self.peering.catalog(&link.cluster).is_none()));
        self.warm = !warming;
        warming
    }

    /// The view now published.
    pub(crate) fn view(&self) -> Arc<PublishedView> {
        self.view.clone()
    }

    /// Live registrations.
    pub(crate) fn workloads(&self, now: Instant) -> usize {
        self.registrations.count(now)
    }

    /// Per linked peer: name, link up, endpoints in its held catalog.
    pub(crate) fn peer_gauges(&self, now: Instant) -> Vec<(String, bool, usize)> {
        self.links
            .iter()
            .map(|l| {
                let up = self.peering.link_state(&l.cluster, now) == crate::peering::LinkState::Up;
                let endpoints = self
                    .peering
                    .catalog(&l.cluster)
                    .map(|c| c.catalog.services.values().map(|s| s.endpoints.len()).sum())
                    .unwrap_or(0);
                (l.cluster.clone(), up, endpoints)
            })
            .collect()
    }

    /// `GET /v1/status`.
    pub(crate) fn status(&self, now: Instant) -> ControllerStatus {
        let gateway_connected = self.peering.gateway_alive(now);
        let links = self
            .links
            .iter()
            .map(|l| {
                let reported = self.peering.reported(&l.cluster, now);
                let last_error = if gateway_connected {
                    reported.and_then(|(s, _)| s.last_error.clone())
                } else {
                    Some(match self.peering.gateway_quic_addr() {
                        Some(_) => {
                            "the gateway stopped reporting; links are considered down".into()
                        }
                        None => "the gateway has not reported yet".into(),
                    })
                };
                LinkStatusView {
                    cluster: l.cluster.clone(),
                    region: l.region.clone(),
                    state: self
                        .peering
                        .link_state(&l.cluster, now)
                        .as_str()
                        .to_string(),
                    rtt_seconds: reported.and_then(|(s, _)| s.rtt_seconds),
                    loss: reported.map(|(s, _)| s.loss).unwrap_or(0.0),
                    catalog_version: self.peering.catalog(&l.cluster).map(|c| c.catalog.version),
                    last_error,
                }
            })
            .collect();
        let services = self
            .view
            .services
            .iter()
            .map(|(key, d)| ServiceStatusView {
                service: key.clone(),
                localities: d.route.localities.iter().map(|l| l.entry.clone()).collect(),
                endpoints: d.endpoints.clone(),
                breakers: d.breakers.clone(),
                failover_active: d.failover_active,
            })
            .collect();
        ControllerStatus {
            cluster: self.config.cluster.clone(),
            region: self.config.region.clone(),
            version: self.view.version,
            gateway_connected,
            links,
            services,
            workloads: u32::try_from(self.workloads(now)).unwrap_or(u32::MAX),
        }
    }
}
