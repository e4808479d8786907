//! Latency-aware locality weighting: a locality far slower than another usable locality gives
//! up traffic to it, so a slow region (an overloaded database behind it, a bad deploy, a long
//! GC) is routed around without failing a single request, while the configured priority order
//! still decides between localities of similar speed.
//!
//! Each locality has a time-weighted latency estimate, fed with the latency of successful tries
//! only (failures are outlier detection's and the breaker's business). A locality whose estimate
//! exceeds `tolerance x (fastest other usable locality) + slack` keeps `(tolerated / estimate)^3`
//! of its health: 10x slower than tolerated keeps 0.1% of it; 2x keeps 12.5%. The factor
//! multiplies the level health that priority spill works with (`spill`), so the traffic given
//! up goes down the configured order.
//!
//! A locality can only be compared once it has been measured. Two kinds of probe (one request,
//! at most every `probe_interval` per locality) keep the comparison honest: an unmeasured
//! usable locality is probed when some measured one is slower than `slack` (it may be the
//! faster one), and a penalized locality is probed when its estimate is older than the
//! interval (it may have recovered). A service faster than `slack` everywhere never probes.
//! Pure logic: time comes in as `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Default tolerance: a locality may be twice as slow as the fastest other usable one (plus
/// the slack) before it gives up traffic; within that, the configured priority order decides.
pub const DEFAULT_TOLERANCE: f64 = 2.0;

/// Default slack: 50 ms, a cross-region round trip or two; a locality faster than this is
/// never penalized, so ordinary differences (a remote region's WAN round trip) never move
/// traffic and a fast service never sends probes.
pub const DEFAULT_SLACK: Duration = Duration::from_millis(50);

/// Default decay time of a locality's estimate: 2 s, so one slow response at 100 req/s moves it
/// by about 0.5% of the difference while a whole slow region shows within a second or two.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(2);

/// Default probe interval: 5 s; a recovered region gets its traffic back within about that.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Exponent of the penalty: steep, so a region far slower than tolerated keeps almost nothing
/// (its p99 is not the caller's p99), while a mildly slow one keeps most of its traffic.
const PENALTY_EXPONENT: i32 = 3;

/// Settings of the latency weighting.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyWeightConfig {
    /// Turns the weighting off (factors all 1, no probes).
    pub enabled: bool,
    /// How many times slower than the fastest other usable locality a locality may be.
    pub tolerance: f64,
    /// Latency a locality may always add on top of `tolerance x fastest`.
    pub slack: Duration,
    /// Decay time of each locality's estimate.
    pub decay: Duration,
    /// Least time between two probes of one locality.
    pub probe_interval: Duration,
}

impl Default for LatencyWeightConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tolerance: DEFAULT_TOLERANCE,
            slack: DEFAULT_SLACK,
            decay: DEFAULT_DECAY,
            probe_interval: DEFAULT_PROBE_INTERVAL,
        }
    }
}

/// One locality as the weighting sees it: its name and whether it can take traffic at all
/// (health above zero and an endpoint to send to).
#[derive(Debug, Clone, Copy)]
pub struct LevelView<'a> {
    /// The locality (cluster) name.
    pub name: &'a str,
    /// Whether it could take traffic now.
    pub usable: bool,
}

#[derive(Debug, Clone, Default)]
struct Estimate {
    /// Seconds; `None` until the first sample.
    seconds: Option<f64>,
    updated_at: Option<Instant>,
    probed_at: Option<Instant>,
}

impl Estimate {
    fn is_fresh(&self, interval: Duration, now: Instant) -> bool {
        let recent =
            |at: Option<Instant>| at.is_some_and(|at| now.saturating_duration_since(at) < interval);
        recent(self.updated_at) || recent(self.probed_at)
    }
}

/// Latency estimates of one service's localities, and the factors and probes derived from them.
#[derive(Debug, Clone)]
pub struct LatencyWeights {
    config: LatencyWeightConfig,
    levels: HashMap<String, Estimate>,
}

impl LatencyWeights {
    /// Weights with no locality measured yet.
    pub fn new(config: LatencyWeightConfig) -> Self {
        Self {
            config,
            levels: HashMap::new(),
        }
    }

    /// Adds the latency of a successful try served by `level`: the first sample is the
    /// estimate; later ones blend in with a weight that grows with the time since the previous
    /// one (a sparse sample after a long pause counts for nearly everything).
    pub fn observe(&mut self, level: &str, latency: Duration, now: Instant) {
        let decay = self.config.decay;
        let estimate = self.levels.entry(level.to_owned()).or_default();
        let sample = latency.as_secs_f64();
        estimate.seconds = Some(match (estimate.seconds, estimate.updated_at) {
            (Some(old), Some(at)) if !decay.is_zero() => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                let kept = (-elapsed / decay.as_secs_f64()).exp();
                old * kept + sample * (1.0 - kept)
            }
            _ => sample,
        });
        estimate.updated_at = Some(now);
    }

    /// The estimate of `level`, if it has been measured.
    pub fn estimate(&self, level: &str) -> Option<Duration> {
        self.seconds(level).map(Duration::from_secs_f64)
    }

    fn seconds(&self, level: &str) -> Option<f64> {
        self.levels.get(level).and_then(|e| e.seconds)
    }

    /// The factor in (0, 1] each level's health is multiplied by, in the order given.
    pub fn factors(&self, levels: &[LevelView<'_>]) -> Vec<f64> {
        (0..levels.len()).map(|i| self.factor(levels, i)).collect()
    }

    fn factor(&self, levels: &[LevelView<'_>], index: usize) -> f64 {
        if !self.config.enabled || !levels[index].usable {
            return 1.0;
        }
        let Some(own) = self.seconds(levels[index].name) else {
            return 1.0;
        };
        let fastest_other = levels
            .iter()
            .enumerate()
            .filter(|(i, l)| *i != index && l.usable)
            .filter_map(|(_, l)| self.seconds(l.name))
            .fold(f64::INFINITY, f64::min);
        let tolerated = self.config.tolerance * fastest_other + self.config.slack.as_secs_f64();
        // Within tolerance, no other measured locality (tolerated is infinite), or NaN.
        if own.partial_cmp(&tolerated) != Some(std::cmp::Ordering::Greater) {
            return 1.0;
        }
        (tolerated / own).powi(PENALTY_EXPONENT)
    }

    /// The level one request should probe now, if any, recording the probe: a penalized level
    /// whose estimate is older than the probe interval, else an unmeasured usable level while
    /// a measured usable one is slower than the slack. Earlier levels in the order go first.
    /// `factors` are this instant's [`Self::factors`] of `levels`, which the caller has already
    /// computed for the same pick.
    pub fn take_probe(
        &mut self,
        levels: &[LevelView<'_>],
        factors: &[f64],
        now: Instant,
    ) -> Option<usize> {
        if !self.config.enabled || levels.len() < 2 {
            return None;
        }
        let slack = self.config.slack.as_secs_f64();
        let interval = self.config.probe_interval;
        let due = |weights: &Self, i: usize| {
            levels[i].usable
                && !weights
                    .levels
                    .get(levels[i].name)
                    .is_some_and(|e| e.is_fresh(interval, now))
        };
        let penalized = (0..levels.len()).find(|i| factors[*i] < 1.0 && due(self, *i));
        let exploring = || {
            let some_slow = levels
                .iter()
                .filter(|l| l.usable)
                .any(|l| self.seconds(l.name).is_some_and(|s| s > slack));
            if !some_slow {
                return None;
            }
            (0..levels.len()).find(|i| self.seconds(levels[*i].name).is_none() && due(self, *i))
        };
        let chosen = penalized.or_else(exploring)?;
        self.levels
            .entry(levels[chosen].name.to_owned())
            .or_default()
            .probed_at = Some(now);
        Some(chosen)
    }

    /// Forgets localities not in `levels`.
    pub fn retain(&mut self, levels: &[&str]) {
        self.levels
            .retain(|name, _| levels.contains(&name.as_str()));
    }
}

impl Default for LatencyWeights {
    fn default() -> Self {
        Self::new(LatencyWeightConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn views<'a>(names: &[&'a str]) -> Vec<LevelView<'a>> {
        names
            .iter()
            .map(|name| LevelView { name, usable: true })
            .collect()
    }

    /// `take_probe` with the factors of the same instant, as the balancer calls it.
    fn probe(w: &mut LatencyWeights, levels: &[LevelView<'_>], now: Instant) -> Option<usize> {
        let factors = w.factors(levels);
        w.take_probe(levels, &factors, now)
    }

    /// Feeds `latency` to `level` at 100 samples a second for `seconds`, from `start`.
    fn steady(
        w: &mut LatencyWeights,
        level: &str,
        latency: Duration,
        start: Instant,
        seconds: u64,
    ) -> Instant {
        let mut now = start;
        for _ in 0..seconds * 100 {
            now += ms(10);
            w.observe(level, latency, now);
        }
        now
    }

    #[test]
    fn unmeasured_or_lone_levels_keep_full_weight() {
        let now = Instant::now();
        let mut w = LatencyWeights::default();
        assert_eq!(w.factors(&views(&["east", "west"])), vec![1.0, 1.0]);
        w.observe("east", ms(900), now);
        // Nothing to compare with: the only measured level keeps everything.
        assert_eq!(w.factors(&views(&["east", "west"])), vec![1.0, 1.0]);
        assert_eq!(w.factors(&views(&["east"])), vec![1.0]);
    }

    #[test]
    fn differences_within_tolerance_and_slack_change_nothing() {
        let now = Instant::now();
        let mut w = LatencyWeights::default();
        w.observe("east", ms(40), now);
        w.observe("west", ms(2), now);
        // 40 ms <= 2 x 2 ms + 50 ms.
        assert_eq!(w.factors(&views(&["east", "west"])), vec![1.0, 1.0]);
        let mut w = LatencyWeights::default();
        w.observe("east", ms(300), now);
        w.observe("west", ms(180), now);
        // A naturally slow service: 300 ms <= 2 x 180 ms + 50 ms.
        assert_eq!(w.factors(&views(&["east", "west"])), vec![1.0, 1.0]);
    }

    #[test]
    fn a_far_slower_level_keeps_the_cube_of_its_tolerated_share() {
        let now = Instant::now();
        let mut w = LatencyWeights::default();
        w.observe("east", ms(500), now);
        w.observe("west", ms(2), now);
        let factors = w.factors(&views(&["east", "west"]));
        let expected = (0.054f64 / 0.5).powi(3);
        assert!((factors[0] - expected).abs() < 1e-9, "{factors:?}");
        assert_eq!(factors[1], 1.0);
    }

    #[test]
    fn only_usable_levels_are_a_reference() {
        let now = Instant::now();
        let mut w = LatencyWeights::default();
        w.observe("east", ms(500), now);
        w.observe("west", ms(2), now);
        let mut levels = views(&["east", "west"]);
        levels[1].usable = false;
        // West is fast but cannot take traffic: east keeps its traffic, slow or not.
        assert_eq!(w.factors(&levels), vec![1.0, 1.0]);
    }

    #[test]
    fn turned_off_it_never_penalizes_nor_probes() {
        let now = Instant::now();
        let mut w = LatencyWeights::new(LatencyWeightConfig {
            enabled: false,
            ..LatencyWeightConfig::default()
        });
        w.observe("east", ms(500), now);
        w.observe("west", ms(2), now);
        assert_eq!(w.factors(&views(&["east", "west"])), vec![1.0, 1.0]);
        assert_eq!(probe(&mut w, &views(&["east", "west", "eu"]), now), None);
    }

    #[test]
    fn the_estimate_follows_a_slowdown_within_seconds_and_ignores_one_spike() {
        let start = Instant::now();
        let mut w = LatencyWeights::default();
        let now = steady(&mut w, "east", ms(2), start, 5);
        w.observe("east", ms(400), now + ms(10));
        let after_spike = w.estimate("east").unwrap();
        assert!(after_spike < ms(5), "{after_spike:?}");
        let now = steady(&mut w, "east", ms(500), now + ms(10), 2);
        let slow = w.estimate("east").unwrap();
        assert!(slow > ms(300), "{slow:?}");
        // A sample after a long pause counts for nearly everything.
        w.observe("east", ms(2), now + Duration::from_secs(10));
        assert!(w.estimate("east").unwrap() < ms(10));
    }

    #[test]
    fn a_slow_level_makes_the_next_unmeasured_one_probed_once_per_interval() {
        let now = Instant::now();
        let mut w = LatencyWeights::default();
        let levels = views(&["east", "west", "eu"]);
        w.observe("east", ms(20), now);
        // Faster than the slack: no exploration.
        assert_eq!(probe(&mut w, &levels, now), None);
        w.observe("east", ms(500), now + Duration::from_secs(10));
        let now = now + Duration::from_secs(10);
        assert_eq!(probe(&mut w, &levels, now), Some(1));
        // West's probe is outstanding: the next unmeasured level goes, then nothing.
        assert_eq!(probe(&mut w, &levels, now), Some(2));
        assert_eq!(probe(&mut w, &levels, now + ms(10)), None);
        // West answered fast: east is now penalized, and was measured just now.
        w.observe("west", ms(2), now + ms(20));
        assert!(w.factors(&levels)[0] < 0.01);
        assert_eq!(probe(&mut w, &levels, now + ms(30)), None);
    }

    #[test]
    fn a_penalized_level_is_probed_when_its_estimate_is_stale_and_recovers_from_the_probe() {
        let start = Instant::now();
        let mut w = LatencyWeights::default();
        let levels = views(&["east", "west"]);
        w.observe("east", ms(500), start);
        w.observe("west", ms(2), start);
        assert_eq!(probe(&mut w, &levels, start + ms(100)), None);
        let later = start + DEFAULT_PROBE_INTERVAL;
        assert_eq!(probe(&mut w, &levels, later), Some(0));
        assert_eq!(probe(&mut w, &levels, later + ms(1)), None);
        // The region healed: one fast answer after the pause restores its weight.
        w.observe("east", ms(2), later + ms(3));
        assert_eq!(w.factors(&levels), vec![1.0, 1.0]);
    }

    #[test]
    fn unusable_levels_are_not_probed_and_retain_forgets() {
        let now = Instant::now();
        let mut w = LatencyWeights::default();
        w.observe("east", ms(500), now);
        let mut levels = views(&["east", "west"]);
        levels[1].usable = false;
        assert_eq!(probe(&mut w, &levels, now), None);
        w.retain(&["west"]);
        assert_eq!(w.estimate("east"), None);
    }
}
