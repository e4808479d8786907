//! The sidecar's shared state, independent of where snapshots come from: the last
//! `SidecarSnapshot`, the set of services asked for (on-demand discovery), the balancer of every
//! service, the connection pool and the metrics. The controller subscription (`discovery`) is
//! one driver of it; tests push hand-made snapshots instead.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_core::api::{BreakerObservation, BreakerReport, SidecarSnapshot};
use mesh_core::identity::{SpiffeId, default_trust_domain};
use mesh_core::names::{Destination, ServiceKey};
use tokio::sync::{Notify, watch};

use crate::identity::SidecarIdentity;
use crate::metrics::Metrics;
use crate::outbound::balancer::{EndpointRef, ResilienceConfig, ServiceBalancer};
use crate::outbound::cache::ResponseCache;
use crate::outbound::errors::ProxyError;
use crate::outbound::pool::{ConnectionPool, PoolKey};
use crate::outbound::resolve::{Lookup, lookup};
use crate::snapshot_merge::merge_warming;

/// How long a request for a service not yet asked for waits for the controller's answer.
pub const ON_DEMAND_WAIT: Duration = Duration::from_secs(2);

/// Most services a sidecar follows (asks the controller for): 4096, far above what one
/// workload calls, while an app that makes names up (random `Host` values) cannot grow the
/// set, and the discovery request that lists it, without end. A new name past it is answered
/// 503 `unknown-service` at once.
pub const MAX_INTEREST: usize = 4096;

/// What a sidecar's state is built from.
#[derive(Debug, Clone)]
pub struct StateOptions {
    /// The own cluster.
    pub cluster: String,
    /// Identity and TLS configurations.
    pub identity: SidecarIdentity,
    /// Bound on opening a connection to an endpoint.
    pub connect_timeout: Duration,
    /// Bound on one try until response headers.
    pub request_timeout: Duration,
    /// Resilience settings of every service's balancer.
    pub resilience: ResilienceConfig,
    /// Who answers discovery, for error messages (`controller at 127.0.0.1:7000`).
    pub discovery_source: String,
    /// The response cache's byte budget (`--cache-max-bytes`).
    pub cache_max_bytes: usize,
}

/// The state every part of a sidecar shares.
pub struct SidecarState {
    cluster: String,
    identity: SidecarIdentity,
    resilience: ResilienceConfig,
    connect_timeout: Duration,
    request_timeout: Duration,
    discovery_source: String,
    metrics: Metrics,
    snapshot: watch::Sender<Option<Arc<SidecarSnapshot>>>,
    /// While a restarted controller warms up: the last snapshot of its previous epoch, which
    /// its warming snapshots are merged over.
    restart_base: Mutex<Option<Arc<SidecarSnapshot>>>,
    interest: watch::Sender<BTreeSet<ServiceKey>>,
    balancers: Mutex<HashMap<ServiceKey, Arc<Mutex<ServiceBalancer>>>>,
    pool: ConnectionPool,
    breaker_changed: Notify,
    /// The one response cache, shared by every outbound stack and route.
    cache: Arc<ResponseCache>,
}

impl std::fmt::Debug for SidecarState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarState")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl SidecarState {
    /// A state with no snapshot yet and nothing asked for.
    pub fn new(options: StateOptions, metrics: Metrics) -> Arc<Self> {
        let gateway_id = SpiffeId::gateway(&default_trust_domain(&options.cluster));
        let pool = ConnectionPool::new(
            &options.cluster,
            gateway_id,
            options.identity.client.clone(),
            options.connect_timeout,
        );
        let cache = ResponseCache::new(options.cache_max_bytes, metrics.clone());
        Arc::new(Self {
            cluster: options.cluster,
            identity: options.identity,
            resilience: options.resilience,
            connect_timeout: options.connect_timeout,
            request_timeout: options.request_timeout,
            discovery_source: options.discovery_source,
            metrics,
            snapshot: watch::Sender::new(None),
            restart_base: Mutex::new(None),
            interest: watch::Sender::new(BTreeSet::new()),
            balancers: Mutex::new(HashMap::new()),
            pool,
            breaker_changed: Notify::new(),
            cache,
        })
    }

    /// The own cluster.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Identity and TLS configurations.
    pub fn identity(&self) -> &SidecarIdentity {
        &self.identity
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Bound on opening a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Resilience settings of every service.
    pub fn resilience(&self) -> &ResilienceConfig {
        &self.resilience
    }

    /// Bound on one try.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The connection pool.
    pub fn pool(&self) -> &ConnectionPool {
        &self.pool
    }

    /// The response cache.
    pub fn response_cache(&self) -> &Arc<ResponseCache> {
        &self.cache
    }

    /// The last snapshot applied, if any.
    pub fn snapshot(&self) -> Option<Arc<SidecarSnapshot>> {
        self.snapshot.borrow().clone()
    }

    /// The services asked for so far.
    pub fn interest(&self) -> BTreeSet<ServiceKey> {
        self.interest.borrow().clone()
    }

    /// Follows changes of the services asked for.
    pub fn watch_interest(&self) -> watch::Receiver<BTreeSet<ServiceKey>> {
        self.interest.subscribe()
    }

    /// Adds services to the interest set (e.g. known ahead of the first request).
    pub fn ask_for(&self, services: impl IntoIterator<Item = ServiceKey>) {
        let services: Vec<ServiceKey> = services.into_iter().collect();
        self.interest.send_if_modified(|set| {
            let before = set.len();
            set.extend(services);
            set.len() != before
        });
    }

    /// Adds `service` to the interest set unless the set already holds [`MAX_INTEREST`] others;
    /// whether the service is in the set.
    fn ask_for_one(&self, service: &ServiceKey) -> bool {
        let mut followed = true;
        self.interest.send_if_modified(|set| {
            if set.contains(service) {
                return false;
            }
            if set.len() >= MAX_INTEREST {
                followed = false;
                return false;
            }
            set.insert(service.clone())
        });
        followed
    }

    /// Makes `snapshot` the current view: trust bundles, routes, pruned pools and balancers.
    /// A snapshot of another cluster is refused (a mis-wired controller address).
    pub fn apply_snapshot(&self, snapshot: SidecarSnapshot) {
        if snapshot.cluster != self.cluster {
            tracing::error!(
                own = %self.cluster,
                snapshot_cluster = %snapshot.cluster,
                "ignoring a discovery snapshot of another cluster; check --controller"
            );
            return;
        }
        let snapshot = {
            let current = self.snapshot.borrow().clone();
            let mut base = self.restart_base.lock().unwrap_or_else(|p| p.into_inner());
            if !snapshot.warming {
                *base = None;
            } else if let Some(current) = current.filter(|c| c.epoch != snapshot.epoch) {
                // The controller restarted: what we served until now is the base to merge over.
                *base = Some(current);
            }
            match &*base {
                Some(base) => merge_warming(base, snapshot),
                None => snapshot,
            }
        };
        if let Err(e) = self.identity.update_trust(&snapshot.trust_bundles) {
            tracing::warn!(error = %e, "snapshot trust bundles unusable; keeping the previous ones");
        }
        {
            let balancers = self.balancers.lock().unwrap_or_else(|p| p.into_inner());
            for (service, balancer) in balancers.iter() {
                if let Some(route) = snapshot.services.get(service) {
                    balancer
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .retain(route);
                }
            }
        }
        let listed = |cluster: &str, addr: SocketAddr| {
            snapshot.services.values().any(|route| {
                route.localities.iter().any(|l| {
                    l.entry.cluster == cluster && l.endpoints.iter().any(|e| e.address == addr)
                })
            })
        };
        self.pool.retain(|key| match key {
            PoolKey::Endpoint { cluster, addr } => listed(cluster, *addr),
            PoolKey::Gateway(addr) => snapshot.gateway == Some(*addr),
        });
        self.metrics
            .snapshot_version
            .set(i64::try_from(snapshot.version).unwrap_or(i64::MAX));
        tracing::debug!(
            version = snapshot.version,
            services = snapshot.services.len(),
            "snapshot applied"
        );
        self.snapshot.send_replace(Some(Arc::new(snapshot)));
    }

    /// The snapshot that routes `dest`. A service not asked for yet is added to the interest
    /// set and awaited for up to [`ON_DEMAND_WAIT`].
    pub async fn route(&self, dest: &Destination) -> Result<Arc<SidecarSnapshot>, ProxyError> {
        let mut rx = self.snapshot.subscribe();
        let check = |snap: &Option<Arc<SidecarSnapshot>>| -> Result<Option<Arc<SidecarSnapshot>>, ProxyError> {
            let Some(snap) = snap else { return Ok(None) };
            match lookup(snap, dest)? {
                Lookup::Route(_) => Ok(Some(snap.clone())),
                Lookup::Unknown => Err(ProxyError::UnknownService {
                    service: dest.service.clone(),
                    asked: self.discovery_source.clone(),
                }),
                Lookup::NotAsked => Ok(None),
            }
        };
        if let Some(snap) = check(&rx.borrow_and_update())? {
            return Ok(snap);
        }
        if !self.ask_for_one(&dest.service) {
            return Err(ProxyError::InterestFull {
                service: dest.service.clone(),
                limit: MAX_INTEREST,
            });
        }
        let deadline = tokio::time::Instant::now() + ON_DEMAND_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {
                    if let Some(snap) = check(&rx.borrow_and_update())? {
                        return Ok(snap);
                    }
                }
                // Timed out (or, impossibly, the sender is gone: it lives in `self`).
                Ok(Err(_)) | Err(_) => {
                    return Err(ProxyError::DiscoveryTimeout {
                        service: dest.service.clone(),
                        asked: self.discovery_source.clone(),
                        waited: ON_DEMAND_WAIT,
                    });
                }
            }
        }
    }

    /// The balancer of `service`, created on first use.
    pub fn balancer(&self, service: &ServiceKey) -> Arc<Mutex<ServiceBalancer>> {
        let mut balancers = self.balancers.lock().unwrap_or_else(|p| p.into_inner());
        balancers
            .entry(service.clone())
            .or_insert_with(|| Arc::new(Mutex::new(ServiceBalancer::new(self.resilience.clone()))))
            .clone()
    }

    /// Publishes the breaker changes `balancer` has accumulated: metrics now, a report soon.
    pub fn publish_transitions(&self, service: &ServiceKey, balancer: &mut ServiceBalancer) {
        for shift in balancer.take_latency_shifts() {
            let estimate_ms = shift.estimate.map(|e| e.as_secs_f64() * 1000.0);
            if shift.shifted {
                tracing::info!(%service, cluster = %shift.cluster, ?estimate_ms, weight = shift.weight, "locality far slower than another usable one: giving its traffic away");
            } else {
                tracing::info!(%service, cluster = %shift.cluster, ?estimate_ms, "locality fast again: traffic returns to the priority order");
            }
            self.metrics
                .set_latency_shifted(&service.to_string(), &shift.cluster, shift.shifted);
        }
        let transitions = balancer.take_transitions();
        if transitions.is_empty() {
            return;
        }
        let name = service.to_string();
        for t in transitions {
            tracing::info!(service = %name, cluster = %t.cluster, from = %t.from, to = %t.to, "circuit breaker changed");
            self.metrics.set_breaker_state(&name, &t.cluster, t.to);
        }
        self.breaker_changed.notify_one();
    }

    /// Resolves when a breaker changed since the last call (or immediately if one did).
    pub async fn breaker_changed(&self) {
        self.breaker_changed.notified().await
    }

    /// The full breaker state of this sidecar, as reported to the controller.
    pub fn breaker_report(&self, reporter: &str, now: Instant) -> BreakerReport {
        let balancers: Vec<(ServiceKey, Arc<Mutex<ServiceBalancer>>)> = self
            .balancers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut breakers = Vec::new();
        for (service, balancer) in balancers {
            let mut balancer = balancer.lock().unwrap_or_else(|p| p.into_inner());
            for (cluster, state) in balancer.breaker_states(now) {
                self.metrics
                    .set_breaker_state(&service.to_string(), &cluster, state);
                breakers.push(BreakerObservation {
                    service: service.clone(),
                    cluster,
                    state: state.into(),
                });
            }
            // The states were just read; their transitions are in this report already.
            balancer.take_transitions();
        }
        breakers.sort_by(|a, b| (&a.service, &a.cluster).cmp(&(&b.service, &b.cluster)));
        BreakerReport {
            reporter: reporter.to_string(),
            breakers,
        }
    }

    /// Whether outlier detection has ejected `addr` of `service` in `cluster` right now.
    pub fn endpoint_ejected(&self, service: &ServiceKey, cluster: &str, addr: SocketAddr) -> bool {
        let balancer = self.balancer(service);
        let balancer = balancer.lock().unwrap_or_else(|p| p.into_inner());
        balancer.is_ejected(
            &EndpointRef {
                cluster: cluster.to_string(),
                addr,
            },
            now(),
        )
    }
}

/// The time the pure logic is fed: tokio's clock, so tests with a paused clock drive it.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::resolve::destination;
    use crate::test_state::{snapshot, state};

    #[tokio::test(start_paused = true)]
    async fn a_full_interest_set_refuses_new_names_at_once_and_keeps_the_old() {
        let state = state();
        state.apply_snapshot(snapshot(vec![]));
        let names = (0..MAX_INTEREST).map(|i| format!("svc-{i}.ns").parse::<ServiceKey>().unwrap());
        state.ask_for(names);
        let new = destination("made-up.ns.svc.clusterset.local").unwrap();
        let started = tokio::time::Instant::now();
        let err = state.route(&new).await.unwrap_err();
        assert!(
            matches!(
                err,
                ProxyError::InterestFull {
                    limit: MAX_INTEREST,
                    ..
                }
            ),
            "{err}"
        );
        assert!(started.elapsed() < ON_DEMAND_WAIT, "answered at once");
        assert!(err.is_unknown_service());
        assert_eq!(state.interest().len(), MAX_INTEREST);
        // A name already followed still waits for the controller, as before.
        let old = destination("svc-7.ns.svc.clusterset.local").unwrap();
        let err = state.route(&old).await.unwrap_err();
        assert!(matches!(err, ProxyError::DiscoveryTimeout { .. }), "{err}");
    }
}
