//! Circuit breaker for one (service, cluster): opens when the locality's error rate over a
//! rolling window, or its healthy endpoint share, crosses a threshold; after a cool-down it
//! admits a few probe requests and closes again after enough consecutive successes. It also
//! holds `RollingWindow`, the bucketed time window the retry budget reuses. It owns the state
//! machine only: concurrency limits and the 503 answer belong to the sidecar.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Traffic flows; outcomes are counted.
    Closed,
    /// Traffic is refused until the cool-down has passed.
    Open,
    /// A few probe requests test whether the locality recovered.
    HalfOpen,
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        })
    }
}

/// When the breaker opens and how it recovers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Failure rate over the window above which the breaker opens. Default 0.5: when most
    /// requests fail the locality is broken, not unlucky; 1.0 disables rate-based opening.
    pub failure_rate_threshold: f64,
    /// Requests the window must hold before the failure rate counts. Default 5: one or two
    /// failures on a quiet service must not open the breaker.
    pub min_requests: u32,
    /// Span of the rolling window, kept in 10 buckets. Default 10 s: long enough to hold a
    /// meaningful sample, short enough to forget an incident that is over.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Healthy endpoint share below which the breaker opens. Default 0.5: open when fewer than
    /// half the locality's endpoints are healthy.
    pub healthy_share_threshold: f64,
    /// Time open before probing. Default 5 s: longer than the first outlier ejection (2 s), so
    /// ejected endpoints are back before the probes judge the locality.
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
    /// Consecutive probe successes that close the breaker. Default 3: one lucky request is not
    /// a recovery.
    pub half_open_probes: u32,
    /// Probes in flight at once while half-open. Default 1: a broken locality costs one
    /// request at a time, not a burst.
    pub half_open_max_in_flight: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 0.5,
            min_requests: 5,
            window: Duration::from_secs(10),
            healthy_share_threshold: 0.5,
            cool_down: Duration::from_secs(5),
            half_open_probes: 3,
            half_open_max_in_flight: 1,
        }
    }
}

/// Number of buckets a rolling window is divided into.
const WINDOW_BUCKETS: usize = 10;

/// A time window of `WINDOW_BUCKETS` buckets, each holding a `T` tally; old buckets are reused
/// in place, so memory stays fixed however much traffic passes.
#[derive(Debug, Clone)]
pub struct RollingWindow<T> {
    bucket_width: Duration,
    /// Instant bucket numbers count from, fixed on first use.
    origin: Option<Instant>,
    /// (bucket number, tally); `u64::MAX` marks a slot never used.
    slots: [(u64, T); WINDOW_BUCKETS],
}

impl<T: Default + Clone> RollingWindow<T> {
    /// Creates an empty window spanning `span`.
    pub fn new(span: Duration) -> Self {
        let bucket_width = (span / WINDOW_BUCKETS as u32).max(Duration::from_nanos(1));
        Self {
            bucket_width,
            origin: None,
            slots: std::array::from_fn(|_| (u64::MAX, T::default())),
        }
    }

    /// The tally of the bucket holding `now`, emptied first if it held an older bucket.
    pub fn current(&mut self, now: Instant) -> &mut T {
        let origin = *self.origin.get_or_insert(now);
        let bucket = bucket_number(origin, self.bucket_width, now);
        let slot = &mut self.slots[(bucket % WINDOW_BUCKETS as u64) as usize];
        if slot.0 != bucket {
            *slot = (bucket, T::default());
        }
        &mut slot.1
    }

    /// The tallies of the buckets still inside the window at `now`.
    pub fn live(&self, now: Instant) -> impl Iterator<Item = &T> {
        let current = self
            .origin
            .map(|origin| bucket_number(origin, self.bucket_width, now));
        self.slots.iter().filter_map(move |(bucket, tally)| {
            let current = current?;
            (*bucket <= current && current - bucket < WINDOW_BUCKETS as u64).then_some(tally)
        })
    }

    /// Empties every bucket.
    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            *slot = (u64::MAX, T::default());
        }
    }
}

fn bucket_number(origin: Instant, width: Duration, now: Instant) -> u64 {
    let elapsed = now.saturating_duration_since(origin).as_nanos();
    u64::try_from(elapsed / width.as_nanos()).unwrap_or(u64::MAX - 1)
}

/// Outcomes counted in one bucket of the breaker's window.
#[derive(Debug, Clone, Copy, Default)]
struct Outcomes {
    successes: u32,
    failures: u32,
}

/// The breaker of one (service, cluster).
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    /// When the breaker last opened; the cool-down counts from here.
    opened_at: Option<Instant>,
    window: RollingWindow<Outcomes>,
    probes_in_flight: u32,
    probe_successes: u32,
    /// Probes not answered by then are presumed lost (client gone) and free their slot.
    probe_deadline: Option<Instant>,
    unreported: Option<(BreakerState, BreakerState)>,
}

impl CircuitBreaker {
    /// Creates a closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        let window = RollingWindow::new(config.window);
        Self {
            config,
            state: BreakerState::Closed,
            opened_at: None,
            window,
            probes_in_flight: 0,
            probe_successes: 0,
            probe_deadline: None,
            unreported: None,
        }
    }

    /// The state at `now`; an open breaker turns half-open once the cool-down has passed.
    pub fn state(&mut self, now: Instant) -> BreakerState {
        self.advance(now);
        self.state
    }

    /// Whether a request may go to this locality; a half-open admission counts as a probe.
    pub fn allow_request(&mut self, now: Instant) -> bool {
        self.advance(now);
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                if self.probes_in_flight >= self.config.half_open_max_in_flight {
                    return false;
                }
                self.probes_in_flight += 1;
                self.probe_deadline = Some(now + self.config.cool_down);
                true
            }
        }
    }

    /// Records a successful request.
    pub fn record_success(&mut self, now: Instant) {
        self.advance(now);
        match self.state {
            BreakerState::Closed => self.window.current(now).successes += 1,
            BreakerState::Open => {}
            BreakerState::HalfOpen => {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                self.probe_successes += 1;
                if self.probe_successes >= self.config.half_open_probes {
                    self.window.clear();
                    self.transition(BreakerState::Closed, now);
                }
            }
        }
    }

    /// Records a failed request (connect error, 5xx, timeout).
    pub fn record_failure(&mut self, now: Instant) {
        self.advance(now);
        match self.state {
            BreakerState::Closed => {
                self.window.current(now).failures += 1;
                if self.failure_rate_exceeded(now) {
                    self.transition(BreakerState::Open, now);
                }
            }
            BreakerState::Open => {}
            BreakerState::HalfOpen => self.transition(BreakerState::Open, now),
        }
    }

    /// Opens (or re-opens from half-open) when the locality's healthy share is below the
    /// threshold; callers pass 0.0 for a locality with no endpoints.
    pub fn observe_healthy_share(&mut self, share: f64, now: Instant) {
        self.advance(now);
        let unhealthy = share.is_nan() || share < self.config.healthy_share_threshold;
        if unhealthy && self.state != BreakerState::Open {
            self.transition(BreakerState::Open, now);
        }
    }

    /// The last transition (from, to) not yet taken, for reporting to the controller.
    pub fn take_transition(&mut self) -> Option<(BreakerState, BreakerState)> {
        self.unreported.take()
    }

    fn failure_rate_exceeded(&self, now: Instant) -> bool {
        let (successes, failures) = self.window.live(now).fold((0u64, 0u64), |(s, f), o| {
            (s + u64::from(o.successes), f + u64::from(o.failures))
        });
        let total = successes + failures;
        total >= u64::from(self.config.min_requests)
            && total > 0
            && failures as f64 / total as f64 > self.config.failure_rate_threshold
    }

    /// Applies the time-driven changes: the end of the cool-down, lost probes.
    fn advance(&mut self, now: Instant) {
        match self.state {
            BreakerState::Open => {
                let cooled = self
                    .opened_at
                    .is_none_or(|at| now >= at + self.config.cool_down);
                if cooled {
                    self.transition(BreakerState::HalfOpen, now);
                }
            }
            BreakerState::HalfOpen => {
                if self.probe_deadline.is_some_and(|deadline| now >= deadline) {
                    self.probes_in_flight = 0;
                    self.probe_deadline = None;
                }
            }
            BreakerState::Closed => {}
        }
    }

    fn transition(&mut self, to: BreakerState, now: Instant) {
        let from = self.state;
        self.state = to;
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        self.probe_deadline = None;
        if to == BreakerState::Open {
            self.opened_at = Some(now);
        }
        self.unreported = Some((from, to));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use BreakerState::{Closed, HalfOpen, Open};

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A breaker opened at `start` by its healthy share.
    fn opened(start: Instant) -> CircuitBreaker {
        let mut breaker = CircuitBreaker::new(BreakerConfig::default());
        breaker.observe_healthy_share(0.0, start);
        breaker
    }

    #[test]
    fn opens_when_the_failure_rate_passes_the_threshold() {
        let now = Instant::now();
        let mut breaker = CircuitBreaker::new(BreakerConfig::default());
        for _ in 0..2 {
            breaker.record_success(now);
        }
        for _ in 0..2 {
            breaker.record_failure(now);
        }
        assert_eq!(
            breaker.state(now),
            Closed,
            "4 requests are below min_requests"
        );
        breaker.record_success(now);
        breaker.record_failure(now);
        assert_eq!(breaker.state(now), Closed, "3 of 6 is not above 0.5");
        breaker.record_failure(now);
        assert_eq!(breaker.state(now), Open);
        assert!(!breaker.allow_request(now));
        assert_eq!(breaker.take_transition(), Some((Closed, Open)));
        assert_eq!(breaker.take_transition(), None);
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(BreakerConfig::default());
        for _ in 0..4 {
            breaker.record_failure(start);
        }
        let later = start + secs(11);
        breaker.record_failure(later);
        assert_eq!(
            breaker.state(later),
            Closed,
            "only one failure is still in the window"
        );
    }

    #[test]
    fn opens_on_a_low_healthy_share() {
        let now = Instant::now();
        let mut breaker = CircuitBreaker::new(BreakerConfig::default());
        breaker.observe_healthy_share(0.5, now);
        assert_eq!(breaker.state(now), Closed);
        breaker.observe_healthy_share(0.4, now);
        assert_eq!(breaker.state(now), Open);
    }

    #[test]
    fn half_opens_after_the_cool_down_and_admits_one_probe() {
        let start = Instant::now();
        let mut breaker = opened(start);
        assert_eq!(breaker.state(start + secs(4)), Open);
        let probe_time = start + secs(5);
        assert_eq!(breaker.state(probe_time), HalfOpen);
        assert_eq!(breaker.take_transition(), Some((Open, HalfOpen)));
        assert!(breaker.allow_request(probe_time));
        assert!(
            !breaker.allow_request(probe_time),
            "one probe in flight at a time"
        );
        breaker.record_success(probe_time);
        assert!(breaker.allow_request(probe_time));
    }

    #[test]
    fn consecutive_probe_successes_close_with_a_clean_window() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(BreakerConfig::default());
        for _ in 0..5 {
            breaker.record_failure(start);
        }
        let probe_time = start + secs(5);
        for _ in 0..3 {
            assert!(breaker.allow_request(probe_time));
            breaker.record_success(probe_time);
        }
        assert_eq!(breaker.state(probe_time), Closed);
        assert_eq!(breaker.take_transition(), Some((HalfOpen, Closed)));
        // The old failures are gone: one new failure does not reopen.
        breaker.record_failure(probe_time);
        assert_eq!(breaker.state(probe_time), Closed);
    }

    #[test]
    fn a_probe_failure_reopens_and_restarts_the_cool_down() {
        let start = Instant::now();
        let mut breaker = opened(start);
        let probe_time = start + secs(5);
        assert!(breaker.allow_request(probe_time));
        breaker.record_failure(probe_time);
        assert_eq!(breaker.take_transition(), Some((HalfOpen, Open)));
        assert_eq!(breaker.state(probe_time + secs(4)), Open);
        assert_eq!(breaker.state(probe_time + secs(5)), HalfOpen);
    }

    #[test]
    fn a_lost_probe_frees_its_slot_after_the_cool_down() {
        let start = Instant::now();
        let mut breaker = opened(start);
        let probe_time = start + secs(5);
        assert!(breaker.allow_request(probe_time));
        assert!(!breaker.allow_request(probe_time + secs(1)));
        assert!(breaker.allow_request(probe_time + secs(5)));
    }

    #[test]
    fn state_names_are_kebab_case() {
        assert_eq!(HalfOpen.to_string(), "half-open");
        assert_eq!(serde_json::to_string(&HalfOpen).unwrap(), r#""half-open""#);
        assert_eq!(
            serde_json::from_str::<BreakerState>(r#""closed""#).unwrap(),
            Closed
        );
        let config: BreakerConfig = serde_json::from_str(r#"{"cool_down": "250ms"}"#).unwrap();
        assert_eq!(config.cool_down, Duration::from_millis(250));
        assert!(serde_json::from_str::<BreakerConfig>(r#"{"cooldown": "250ms"}"#).is_err());
    }
}
