//! Choosing the endpoint of one try: the locality by priority spill over the levels' health
//! (or a latency probe on a first try, or panic routing when no level has health left), then
//! the endpoint within it by the service's backend policy (`endpoint_choice`), passing over
//! endpoints at the policy's request limit and failing with that limit when they are all that
//! is left.

use std::sync::atomic::Ordering;
use std::time::Instant;

use mesh_core::api::{LocalityRoute, ServiceRoute};
use mesh_core::policy::backend_policy::{BackendPolicySpec, LimitExceeded};
use mesh_core::spill::{pick_level, priority_loads};
use rand::Rng;

use super::{
    EndpointRef, InFlight, LevelState, Pick, ServiceBalancer, level_views, note_transition,
    select_levels,
};
use crate::outbound::endpoint_choice::{Candidates, EndpointView};

/// What the balancer is told about one try of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct TryRequest<'a> {
    /// The cluster the authority named: then the only level.
    pub only_cluster: Option<&'a str>,
    /// The endpoints earlier tries of the request went to, skipped by this one.
    pub tried: &'a [EndpointRef],
    /// The request's consistent-hash key ([`ServiceBalancer::hash_key`]); `None` when the
    /// service does not hash or the request has no key (the default algorithm then chooses).
    pub hash_key: Option<u64>,
}

/// Why the balancer has no endpoint for a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPick {
    /// No level has an endpoint left that is healthy, not ejected and not tried.
    NoEndpoint,
    /// Endpoints were left, but every one of them is at the service's concurrency limit.
    AtLimit(LimitExceeded),
}
impl ServiceBalancer {
    /// Chooses the endpoint for one try of `request`, skipping the endpoints it tried; why not
    /// when no level has a usable endpoint left.
    pub fn pick(
        &mut self,
        route: &ServiceRoute,
        request: TryRequest<'_>,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Result<Pick, NoPick> {
        let levels = select_levels(route, request.only_cluster);
        let (mut healths, factors) = self.healths(&levels, now);
        // Panic only when the levels themselves have no health left, not when this request
        // used them up or a half-open breaker is at its probe limit.
        if healths.iter().all(|h| *h <= 0.0 || h.is_nan()) {
            return self.pick_in_panic(&levels, request, now, rng);
        }
        // The limit a level's endpoints were all at: the answer if no level is left.
        let mut limited = None;
        // A latency probe is a request's first try only: retries go where the load says.
        if request.tried.is_empty() {
            let views = level_views(&levels, &healths);
            if let Some(index) = self.latency.take_probe(&views, &factors, now) {
                match self.try_level(levels[index], request, now, rng) {
                    LevelOutcome::Picked(pick) => return Ok(pick),
                    LevelOutcome::AtLimit(limit) => limited = Some(limit),
                    LevelOutcome::Unusable => {}
                }
            }
        }
        let no_pick =
            |limited: Option<LimitExceeded>| limited.map_or(NoPick::NoEndpoint, NoPick::AtLimit);
        loop {
            // A level this request has used up counts as having no health, so the spill sends
            // the retry down the order even when the level's share was everything.
            let loads = priority_loads(&healths, self.config.overprovisioning);
            let total: f64 = loads.iter().sum();
            if total <= 0.0 || total.is_nan() {
                return Err(no_pick(limited));
            }
            let Some(level_index) = pick_level(&loads, rng.random::<f64>() * total) else {
                return Err(no_pick(limited));
            };
            match self.try_level(levels[level_index], request, now, rng) {
                LevelOutcome::Picked(pick) => return Ok(pick),
                LevelOutcome::AtLimit(limit) => {
                    limited = Some(limit);
                    healths[level_index] = 0.0;
                }
                LevelOutcome::Unusable => healths[level_index] = 0.0,
            }
        }
    }

    /// An endpoint of `level` for this try, by the service's algorithm among its endpoints
    /// that are healthy, not ejected, not tried and under their limit, if its breaker admits
    /// the request.
    fn try_level(
        &mut self,
        level: &LocalityRoute,
        request: TryRequest<'_>,
        now: Instant,
        rng: &mut impl Rng,
    ) -> LevelOutcome {
        let cluster = &level.entry.cluster;
        let Some(state) = self.levels.get_mut(cluster) else {
            return LevelOutcome::Unusable;
        };
        let candidates = candidates(state, level, request.tried, true, &self.policy, now);
        if !candidates.any() {
            // Before the breaker: a try that cannot go anyway must not take a probe's slot.
            return candidates
                .limited()
                .map_or(LevelOutcome::Unusable, LevelOutcome::AtLimit);
        }
        // A half-open breaker admits only its probes; the rest spill to other levels.
        let admitted = state.breaker.allow_request(now);
        note_transition(&mut self.transitions, cluster, &mut state.breaker);
        if !admitted {
            return LevelOutcome::Unusable;
        }
        choose_in_level(state, level, &candidates, &self.policy, request, rng)
            .map_or(LevelOutcome::Unusable, LevelOutcome::Picked)
    }

    /// Panic routing, as Envoy does below its panic threshold: when no level has any usable
    /// health left (every endpoint ejected, every breaker open, and so every locality reported
    /// broken to the controller), the health views are more likely stale than right: a
    /// restarted gateway makes every remote endpoint fail for a moment, and refusing everything
    /// until the breakers cool down would turn that blip into seconds of outage. Route by the
    /// owners' view alone: in locality order, any endpoint its cluster lists as healthy that
    /// this request has not tried, ejected or not. Concurrency limits still hold: they protect
    /// the endpoints, whatever the health views say.
    fn pick_in_panic(
        &mut self,
        levels: &[&LocalityRoute],
        request: TryRequest<'_>,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Result<Pick, NoPick> {
        let mut limited = None;
        for level in levels {
            let config = &self.config;
            let state = self
                .levels
                .entry(level.entry.cluster.clone())
                .or_insert_with(|| LevelState::new(config));
            let candidates = candidates(state, level, request.tried, false, &self.policy, now);
            if !candidates.any() {
                limited = limited.or(candidates.limited());
                continue;
            }
            if let Some(pick) =
                choose_in_level(state, level, &candidates, &self.policy, request, rng)
            {
                return Ok(pick);
            }
        }
        Err(limited.map_or(NoPick::NoEndpoint, NoPick::AtLimit))
    }
}

/// What one level offered a try.
enum LevelOutcome {
    /// An endpoint.
    Picked(Pick),
    /// Nothing: no endpoint healthy, not ejected and not tried, or its breaker refused.
    Unusable,
    /// Nothing: every endpoint that could take the try is at this limit.
    AtLimit(LimitExceeded),
}

/// The endpoints of `level` as the chooser sees them for this try: eligible when listed
/// healthy, not tried by this request and (with `skip_ejected`, outside panic routing) not
/// ejected; usable when also under the policy's limit.
fn candidates(
    state: &mut LevelState,
    level: &LocalityRoute,
    tried: &[EndpointRef],
    skip_ejected: bool,
    policy: &BackendPolicySpec,
    now: Instant,
) -> Candidates {
    let cluster = &level.entry.cluster;
    let views = level
        .endpoints
        .iter()
        .map(|e| {
            let eligible = e.healthy
                && !(skip_ejected && state.outlier.is_ejected(e.address, now))
                && !tried
                    .iter()
                    .any(|t| &t.cluster == cluster && t.addr == e.address);
            let stats = state.stats(e.address);
            let in_flight = stats.in_flight.load(Ordering::Relaxed);
            EndpointView {
                eligible,
                in_flight,
                cost: stats.ewma.get(now) * (in_flight + 1) as f64,
            }
        })
        .collect();
    Candidates::new(views, &policy.limits)
}

/// The endpoint of `level` the service's algorithm chooses among `candidates`, counted in
/// flight from now on.
fn choose_in_level(
    state: &mut LevelState,
    level: &LocalityRoute,
    candidates: &Candidates,
    policy: &BackendPolicySpec,
    request: TryRequest<'_>,
    rng: &mut impl Rng,
) -> Option<Pick> {
    let cluster = &level.entry.cluster;
    let index = state.chooser.choose(
        &policy.load_balancer,
        cluster,
        &level.endpoints,
        candidates,
        request.hash_key,
        rng,
    )?;
    let chosen = &level.endpoints[index];
    let in_flight = state.stats(chosen.address).in_flight.clone();
    in_flight.fetch_add(1, Ordering::Relaxed);
    Some(Pick {
        cluster: cluster.to_string(),
        endpoint: chosen.clone(),
        in_flight: InFlight(in_flight),
    })
}
