//! Where one request of one service goes: the locality (priority level) and the endpoint in it.
//!
//! Level health = the controller's health for the locality x the local view (share of its
//! endpoints not ejected by outlier detection, and 0 while the (service, cluster) breaker is
//! open) x the latency weight (a locality far slower than another usable one gives up traffic,
//! `LatencyWeights`), ramped by `SlowStart` after a recovery, split by `priority_loads`
//! (overprovisioning 1.4). A request's first try may instead be a latency probe of one
//! locality. Inside the chosen level, the service's backend policy chooses
//! (`endpoint_choice`): by default power of two choices over `Ewma x (in_flight + 1)`, or least
//! request, round robin or consistent hashing, among endpoints that are healthy, not ejected,
//! not already tried by this request and under `limits.maxRequestsPerEndpoint`; a level whose
//! endpoints are all at that limit is passed over, and when that leaves nothing the pick fails
//! with the limit ([`NoPick::AtLimit`]) instead of waiting. Outcomes feed the outlier detector,
//! the level's breaker and the endpoint's latency estimate; the caller feeds comparable
//! latencies to the locality's estimate (`observe_locality_latency`). The policy's outlier and
//! breaker overrides apply per service (`policy.rs`); the choice of one try is `pick.rs`. Pure
//! logic: time and randomness come in as arguments, so it is tested without sockets or sleeps.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mesh_core::api::{LocalityRoute, RouteEndpoint, ServiceRoute};
use mesh_core::balance::{DEFAULT_EWMA_DECAY, Ewma};
use mesh_core::breaker::{BreakerState, CircuitBreaker};
use mesh_core::latency_weight::{LatencyWeights, LevelView};
use mesh_core::outlier::OutlierDetector;
use mesh_core::policy::backend_policy::BackendPolicySpec;
use mesh_core::spill::{SlowStart, priority_loads};

use super::endpoint_choice::LevelChooser;
pub use super::resilience::ResilienceConfig;

/// Latency assumed for an endpoint before its first response: zero, so a new endpoint wins its
/// first comparisons and its real latency is learnt at once (the first sample replaces it).
const DEFAULT_RTT: Duration = Duration::ZERO;

/// An endpoint of a given cluster: what a request remembers having tried.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointRef {
    /// The endpoint's cluster.
    pub cluster: String,
    /// Its sidecar's inbound address.
    pub addr: SocketAddr,
}

/// Counts a request in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The balancer's choice for one try.
#[derive(Debug)]
pub struct Pick {
    /// The locality.
    pub cluster: String,
    /// The endpoint.
    pub endpoint: RouteEndpoint,
    /// Held while the request is in flight.
    pub in_flight: InFlight,
}

impl Pick {
    /// The endpoint as a tried-set key.
    pub fn key(&self) -> EndpointRef {
        EndpointRef {
            cluster: self.cluster.clone(),
            addr: self.endpoint.address,
        }
    }
}

/// A breaker state change, to be reported to the controller and shown in metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerTransition {
    /// The locality.
    pub cluster: String,
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
}

/// A locality started or stopped giving its traffic away for being slow, to be logged and shown
/// in metrics: traffic that leaves a healthy region should never be a mystery.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyShift {
    /// The locality.
    pub cluster: String,
    /// Whether it now gives traffic away.
    pub shifted: bool,
    /// Its latency estimate then.
    pub estimate: Option<Duration>,
    /// The factor its health was multiplied by then.
    pub weight: f64,
}

/// Below this latency weight a locality counts as shifted away; it counts as back only at full
/// weight, so an estimate wandering around the tolerance does not flood the log.
const SHIFTED_BELOW: f64 = 0.5;

/// What recording an outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecordEffect {
    /// The endpoint was ejected by this outcome.
    pub ejected: bool,
}

#[derive(Debug)]
struct EndpointStats {
    ewma: Ewma,
    in_flight: Arc<AtomicUsize>,
}

/// One locality's local view.
#[derive(Debug)]
struct LevelState {
    breaker: CircuitBreaker,
    outlier: OutlierDetector,
    endpoints: HashMap<SocketAddr, EndpointStats>,
    /// The endpoints the controller lists healthy, as last seen in a route.
    listed: Vec<SocketAddr>,
    /// Whether latency weighting is giving this locality's traffic away.
    latency_shifted: bool,
    /// The algorithm's state in this locality (round-robin position, hash ring).
    chooser: LevelChooser,
}

impl LevelState {
    fn new(config: &ResilienceConfig) -> Self {
        Self {
            breaker: CircuitBreaker::new(config.breaker.clone()),
            outlier: OutlierDetector::new(config.outlier.clone()),
            endpoints: HashMap::new(),
            listed: Vec::new(),
            latency_shifted: false,
            chooser: LevelChooser::default(),
        }
    }

    fn see(&mut self, route: &LocalityRoute) {
        self.listed = route
            .endpoints
            .iter()
            .filter(|e| e.healthy)
            .map(|e| e.address)
            .collect();
    }

    fn stats(&mut self, addr: SocketAddr) -> &mut EndpointStats {
        self.endpoints.entry(addr).or_insert_with(|| EndpointStats {
            ewma: Ewma::new(DEFAULT_RTT, DEFAULT_EWMA_DECAY),
            in_flight: Arc::new(AtomicUsize::new(0)),
        })
    }
}

/// The balancer of one service: its localities' local views and failback ramp, under the
/// service's backend policy.
#[derive(Debug)]
pub struct ServiceBalancer {
    /// The sidecar-wide settings the policy's overrides apply to.
    base: ResilienceConfig,
    /// The settings in force: `base` with the policy's outlier and breaker overrides.
    config: ResilienceConfig,
    /// The service's backend policy in force (the default without one).
    policy: BackendPolicySpec,
    levels: HashMap<String, LevelState>,
    slow_start: SlowStart,
    latency: LatencyWeights,
    transitions: Vec<BreakerTransition>,
    latency_shifts: Vec<LatencyShift>,
}

impl ServiceBalancer {
    /// A balancer that has seen no traffic.
    pub fn new(config: ResilienceConfig) -> Self {
        Self {
            slow_start: SlowStart::new(config.slow_start_window),
            latency: LatencyWeights::new(config.latency.clone()),
            levels: HashMap::new(),
            transitions: Vec::new(),
            latency_shifts: Vec::new(),
            base: config.clone(),
            config,
            policy: BackendPolicySpec::default(),
        }
    }

    /// Each level's share of the traffic at `now` (cluster, load), in failover order; only the
    /// named cluster when `only_cluster` is set.
    pub fn level_loads(
        &mut self,
        route: &ServiceRoute,
        only_cluster: Option<&str>,
        now: Instant,
    ) -> Vec<(String, f64)> {
        let levels = select_levels(route, only_cluster);
        let (healths, _) = self.healths(&levels, now);
        let loads = priority_loads(&healths, self.config.overprovisioning);
        levels
            .iter()
            .map(|l| l.entry.cluster.clone())
            .zip(loads)
            .collect()
    }

    /// Each level's effective health: controller x local view x latency weight, through the
    /// failback ramp; and the latency weights themselves.
    fn healths(&mut self, levels: &[&LocalityRoute], now: Instant) -> (Vec<f64>, Vec<f64>) {
        let raw = self.raw_healths(levels, now);
        let views = level_views(levels, &raw);
        let factors = self.latency.factors(&views);
        self.note_latency_shifts(levels, &factors);
        let healths = levels
            .iter()
            .zip(raw.iter().zip(&factors))
            .map(|(level, (raw, factor))| {
                self.slow_start
                    .effective_health(&level.entry.cluster, raw * factor, now)
            })
            .collect();
        (healths, factors)
    }

    /// Records the levels whose latency weight crossed into or out of giving traffic away.
    fn note_latency_shifts(&mut self, levels: &[&LocalityRoute], factors: &[f64]) {
        for (level, weight) in levels.iter().zip(factors) {
            let cluster = &level.entry.cluster;
            let Some(state) = self.levels.get_mut(cluster) else {
                continue;
            };
            let shifted = if state.latency_shifted {
                *weight < 1.0
            } else {
                *weight < SHIFTED_BELOW
            };
            if shifted != state.latency_shifted {
                state.latency_shifted = shifted;
                self.latency_shifts.push(LatencyShift {
                    cluster: cluster.clone(),
                    shifted,
                    estimate: self.latency.estimate(cluster),
                    weight: *weight,
                });
            }
        }
    }

    /// Each level's health before latency weighting and ramp: controller x local view, 0 while
    /// its breaker is open.
    fn raw_healths(&mut self, levels: &[&LocalityRoute], now: Instant) -> Vec<f64> {
        let Self {
            config,
            levels: states,
            transitions,
            ..
        } = self;
        levels
            .iter()
            .map(|level| {
                let cluster = &level.entry.cluster;
                let state = states
                    .entry(cluster.clone())
                    .or_insert_with(|| LevelState::new(config));
                state.see(level);
                let local_share = state.outlier.healthy_share(&state.listed, now);
                let breaker_open = state.breaker.state(now) == BreakerState::Open;
                note_transition(transitions, cluster, &mut state.breaker);
                let controller = if level.entry.health.is_nan() {
                    0.0
                } else {
                    level.entry.health.clamp(0.0, 1.0)
                };
                if breaker_open {
                    0.0
                } else {
                    controller * local_share
                }
            })
            .collect()
    }

    /// Records the outcome of one try on `endpoint` that took `latency`: outlier detection, the
    /// latency estimate, and the locality's healthy share for its breaker.
    pub fn record_try(
        &mut self,
        endpoint: &EndpointRef,
        success: bool,
        latency: Duration,
        now: Instant,
    ) -> RecordEffect {
        let Self {
            config,
            levels,
            transitions,
            ..
        } = self;
        let state = levels
            .entry(endpoint.cluster.clone())
            .or_insert_with(|| LevelState::new(config));
        let mut effect = RecordEffect::default();
        if success {
            state.outlier.record_success(endpoint.addr, now);
        } else {
            effect.ejected = state.outlier.record_failure(endpoint.addr, now);
        }
        // Failures are recorded at their real latency, with no penalty: taking a failing
        // endpoint out is outlier detection's job, and a penalty would hide it from P2C before
        // it could collect the consecutive failures that eject it.
        state.stats(endpoint.addr).ewma.observe(latency, now);
        if !state.listed.is_empty() {
            let share = state.outlier.healthy_share(&state.listed, now);
            state.breaker.observe_healthy_share(share, now);
        }
        note_transition(transitions, &endpoint.cluster, &mut state.breaker);
        effect
    }

    /// Adds the latency of a successful try served by `cluster` to its locality's estimate for
    /// latency weighting. The caller passes only tries comparable between localities: not those
    /// whose time includes streaming a large request body.
    pub fn observe_locality_latency(&mut self, cluster: &str, latency: Duration, now: Instant) {
        self.latency.observe(cluster, latency, now);
    }

    /// Records whether `cluster` served a request (its breaker's failure rate; a half-open
    /// breaker's probe result). Called once per request and locality tried.
    pub fn record_request(&mut self, cluster: &str, success: bool, now: Instant) {
        let Self {
            config,
            levels,
            transitions,
            ..
        } = self;
        let state = levels
            .entry(cluster.to_string())
            .or_insert_with(|| LevelState::new(config));
        if success {
            state.breaker.record_success(now);
        } else {
            state.breaker.record_failure(now);
        }
        note_transition(transitions, cluster, &mut state.breaker);
    }

    /// Breaker changes since the last call.
    pub fn take_transitions(&mut self) -> Vec<BreakerTransition> {
        std::mem::take(&mut self.transitions)
    }

    /// Latency shifts since the last call.
    pub fn take_latency_shifts(&mut self) -> Vec<LatencyShift> {
        std::mem::take(&mut self.latency_shifts)
    }

    /// Every breaker's state at `now` (advancing cool-downs), by cluster.
    pub fn breaker_states(&mut self, now: Instant) -> Vec<(String, BreakerState)> {
        let Self {
            levels,
            transitions,
            ..
        } = self;
        let mut states: Vec<(String, BreakerState)> = levels
            .iter_mut()
            .map(|(cluster, level)| {
                let state = level.breaker.state(now);
                note_transition(transitions, cluster, &mut level.breaker);
                (cluster.clone(), state)
            })
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }

    /// Whether outlier detection has ejected the endpoint at `now`.
    pub fn is_ejected(&self, endpoint: &EndpointRef, now: Instant) -> bool {
        self.levels
            .get(&endpoint.cluster)
            .is_some_and(|l| l.outlier.is_ejected(endpoint.addr, now))
    }

    /// Follows a new route: forgets endpoints and localities it no longer lists.
    pub fn retain(&mut self, route: &ServiceRoute) {
        let clusters: Vec<&str> = route
            .localities
            .iter()
            .map(|l| l.entry.cluster.as_str())
            .collect();
        for level in &route.localities {
            if let Some(state) = self.levels.get_mut(&level.entry.cluster) {
                let addrs: Vec<SocketAddr> = level.endpoints.iter().map(|e| e.address).collect();
                state.outlier.retain(&addrs);
                state.endpoints.retain(|addr, _| addrs.contains(addr));
                state.see(level);
            }
        }
        // Breakers of vanished localities are kept: their state is still reported until the
        // locality is gone from every route, and a returning locality remembers it was broken.
        self.slow_start.retain(&clusters);
        self.latency.retain(&clusters);
    }
}

/// The levels as latency weighting sees them: usable while they have health.
fn level_views<'a>(levels: &[&'a LocalityRoute], healths: &[f64]) -> Vec<LevelView<'a>> {
    levels
        .iter()
        .zip(healths)
        .map(|(level, health)| LevelView {
            name: &level.entry.cluster,
            usable: *health > 0.0,
        })
        .collect()
}

fn select_levels<'a>(
    route: &'a ServiceRoute,
    only_cluster: Option<&str>,
) -> Vec<&'a LocalityRoute> {
    route
        .localities
        .iter()
        .filter(|l| only_cluster.is_none_or(|c| l.entry.cluster == c))
        .collect()
}

fn note_transition(out: &mut Vec<BreakerTransition>, cluster: &str, breaker: &mut CircuitBreaker) {
    if let Some((from, to)) = breaker.take_transition() {
        out.push(BreakerTransition {
            cluster: cluster.to_string(),
            from,
            to,
        });
    }
}

mod pick;
mod policy;

pub use pick::{NoPick, TryRequest};

#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod tests;
