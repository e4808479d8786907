//! Per-endpoint outlier detection: counts consecutive failures (connect errors, 5xx, timeouts)
//! of each endpoint and ejects it from load balancing for a time that grows with each ejection,
//! never ejecting more than the configured share of the known endpoints. This module owns the
//! ejection decision only; the sidecar feeds it outcomes and skips ejected endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// When an endpoint is ejected, for how long, and how many may be ejected at once.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// Consecutive failures that eject an endpoint. Default 3: loopback connect errors are
    /// instant, so three in a row is a real signal, not noise.
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection lasts n times this. Default 2 s: long enough to
    /// stop hammering a dead endpoint, short enough that a restarted one is back quickly.
    #[serde(with = "humantime_serde")]
    pub base_ejection: Duration,
    /// Cap on the ejection time, and how long an endpoint must stay healthy for its ejection
    /// count to reset. Default 30 s: a flapping endpoint stays out for at most half a minute.
    #[serde(with = "humantime_serde")]
    pub max_ejection: Duration,
    /// Most endpoints, in percent of those known, that may be ejected at once. Default 100: a
    /// whole locality may go dark, and priority spill to the next region is what handles that;
    /// lower it to keep a floor of endpoints.
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(2),
            max_ejection: Duration::from_secs(30),
            max_ejection_percent: 100,
        }
    }
}

/// What the detector remembers about one endpoint.
#[derive(Debug, Clone, Default)]
struct EndpointState {
    consecutive_failures: u32,
    /// Ejections so far; drives the growing ejection time and decays back to 0.
    ejections: u32,
    /// End of the current (or last) ejection.
    ejected_until: Option<Instant>,
}

impl EndpointState {
    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }
}

/// Tracks the endpoints of one destination and decides which are ejected.
#[derive(Debug, Clone)]
pub struct OutlierDetector {
    config: OutlierConfig,
    endpoints: HashMap<SocketAddr, EndpointState>,
}

impl OutlierDetector {
    /// Creates a detector that knows no endpoints yet.
    pub fn new(config: OutlierConfig) -> Self {
        Self {
            config,
            endpoints: HashMap::new(),
        }
    }

    /// Records a successful request: clears the endpoint's consecutive failure count.
    pub fn record_success(&mut self, addr: SocketAddr, now: Instant) {
        let state = self.endpoints.entry(addr).or_default();
        state.consecutive_failures = 0;
        decay_ejections(state, &self.config, now);
    }

    /// Records a failure (connect error, 5xx, timeout); returns whether this call ejected it.
    pub fn record_failure(&mut self, addr: SocketAddr, now: Instant) -> bool {
        let ejected_now = self.ejected_count(now);
        let known = self.endpoints.len() + usize::from(!self.endpoints.contains_key(&addr));
        let config = &self.config;
        let state = self.endpoints.entry(addr).or_default();
        // Requests that were in flight when the endpoint was ejected say nothing new.
        if state.is_ejected(now) {
            return false;
        }
        decay_ejections(state, config, now);
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        if state.consecutive_failures < config.consecutive_failures.max(1) {
            return false;
        }
        // Refuse rather than exceed the cap; the failure count stays, so the next failure
        // ejects as soon as another endpoint returns.
        let allowed =
            (ejected_now as u64 + 1) * 100 <= u64::from(config.max_ejection_percent) * known as u64;
        if !allowed {
            return false;
        }
        state.ejections = state.ejections.saturating_add(1);
        let ejection = config
            .base_ejection
            .saturating_mul(state.ejections)
            .min(config.max_ejection);
        state.ejected_until = Some(now + ejection);
        state.consecutive_failures = 0;
        true
    }

    /// Whether the endpoint is ejected at `now` (unknown endpoints are not).
    pub fn is_ejected(&self, addr: SocketAddr, now: Instant) -> bool {
        self.endpoints
            .get(&addr)
            .is_some_and(|state| state.is_ejected(now))
    }

    /// Share of `addrs` not ejected at `now`; 0.0 for an empty list.
    pub fn healthy_share(&self, addrs: &[SocketAddr], now: Instant) -> f64 {
        if addrs.is_empty() {
            return 0.0;
        }
        let healthy = addrs
            .iter()
            .filter(|addr| !self.is_ejected(**addr, now))
            .count();
        healthy as f64 / addrs.len() as f64
    }

    /// Keeps exactly `addrs`: forgets endpoints no longer present and starts tracking new ones,
    /// so `max_ejection_percent` also counts endpoints that have not carried traffic yet.
    pub fn retain(&mut self, addrs: &[SocketAddr]) {
        self.endpoints.retain(|addr, _| addrs.contains(addr));
        for addr in addrs {
            self.endpoints.entry(*addr).or_default();
        }
    }

    /// Number of known endpoints ejected at `now`.
    pub fn ejected_count(&self, now: Instant) -> usize {
        self.endpoints
            .values()
            .filter(|state| state.is_ejected(now))
            .count()
    }
}

/// Forgets past ejections once the endpoint has stayed healthy for `max_ejection`.
fn decay_ejections(state: &mut EndpointState, config: &OutlierConfig, now: Instant) {
    if let Some(until) = state.ejected_until
        && now >= until + config.max_ejection
    {
        state.ejections = 0;
        state.ejected_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn fail_times(
        detector: &mut OutlierDetector,
        addr: SocketAddr,
        times: u32,
        now: Instant,
    ) -> bool {
        (0..times)
            .map(|_| detector.record_failure(addr, now))
            .last()
            .unwrap_or(false)
    }

    #[test]
    fn ejects_on_the_third_consecutive_failure_only() {
        let now = Instant::now();
        let mut detector = OutlierDetector::new(OutlierConfig::default());
        assert!(!detector.record_failure(addr(1), now));
        assert!(!detector.record_failure(addr(1), now));
        assert!(!detector.is_ejected(addr(1), now));
        assert!(detector.record_failure(addr(1), now));
        assert!(detector.is_ejected(addr(1), now));
        // Further failures while ejected do not eject again.
        assert!(!detector.record_failure(addr(1), now));
    }

    #[test]
    fn a_success_clears_the_failure_streak() {
        let now = Instant::now();
        let mut detector = OutlierDetector::new(OutlierConfig::default());
        fail_times(&mut detector, addr(1), 2, now);
        detector.record_success(addr(1), now);
        assert!(!fail_times(&mut detector, addr(1), 2, now));
        assert!(!detector.is_ejected(addr(1), now));
    }

    #[test]
    fn ejection_time_grows_per_ejection_and_is_capped() {
        let config = OutlierConfig {
            base_ejection: Duration::from_secs(2),
            max_ejection: Duration::from_secs(5),
            ..OutlierConfig::default()
        };
        let mut detector = OutlierDetector::new(config);
        let mut now = Instant::now();
        // Expected ejection lengths: 2 s, 4 s, then capped at 5 s.
        for expected in [2, 4, 5, 5] {
            assert!(fail_times(&mut detector, addr(1), 3, now));
            let almost = now + Duration::from_secs(expected) - Duration::from_millis(1);
            assert!(
                detector.is_ejected(addr(1), almost),
                "still ejected just before {expected} s"
            );
            now += Duration::from_secs(expected);
            assert!(
                !detector.is_ejected(addr(1), now),
                "back after {expected} s"
            );
        }
    }

    #[test]
    fn ejection_count_resets_after_staying_healthy_for_max_ejection() {
        let mut detector = OutlierDetector::new(OutlierConfig::default());
        let start = Instant::now();
        assert!(fail_times(&mut detector, addr(1), 3, start));
        let returned = start + Duration::from_secs(2);
        // Healthy for the full 30 s after returning: the next ejection is a first one again.
        let later = returned + Duration::from_secs(30);
        assert!(fail_times(&mut detector, addr(1), 3, later));
        assert!(!detector.is_ejected(addr(1), later + Duration::from_secs(2)));
    }

    #[test]
    fn max_ejection_percent_keeps_a_floor_of_endpoints() {
        let config = OutlierConfig {
            max_ejection_percent: 50,
            ..OutlierConfig::default()
        };
        let mut detector = OutlierDetector::new(config);
        let now = Instant::now();
        detector.retain(&[addr(1), addr(2), addr(3), addr(4)]);
        assert!(fail_times(&mut detector, addr(1), 3, now));
        assert!(fail_times(&mut detector, addr(2), 3, now));
        assert!(
            !fail_times(&mut detector, addr(3), 3, now),
            "a third of four would pass 50%"
        );
        assert_eq!(detector.ejected_count(now), 2);
        // Once the others return, the pending streak ejects on the next failure.
        let later = now + Duration::from_secs(2);
        assert!(detector.record_failure(addr(3), later));
    }

    #[test]
    fn healthy_share_counts_non_ejected_endpoints() {
        let mut detector = OutlierDetector::new(OutlierConfig::default());
        let now = Instant::now();
        let addrs = [addr(1), addr(2), addr(3), addr(4)];
        assert_eq!(detector.healthy_share(&[], now), 0.0);
        assert_eq!(detector.healthy_share(&addrs, now), 1.0);
        fail_times(&mut detector, addr(2), 3, now);
        assert_eq!(detector.healthy_share(&addrs, now), 0.75);
    }

    #[test]
    fn retain_forgets_removed_endpoints() {
        let mut detector = OutlierDetector::new(OutlierConfig::default());
        let now = Instant::now();
        fail_times(&mut detector, addr(1), 3, now);
        detector.retain(&[addr(2)]);
        assert!(!detector.is_ejected(addr(1), now));
        assert_eq!(detector.ejected_count(now), 0);
    }

    #[test]
    fn config_reads_durations_and_rejects_unknown_fields() {
        let config: OutlierConfig = serde_json::from_str(r#"{"base_ejection": "1500ms"}"#).unwrap();
        assert_eq!(config.base_ejection, Duration::from_millis(1500));
        assert_eq!(config.max_ejection, Duration::from_secs(30));
        assert_eq!(
            serde_json::to_value(&config).unwrap()["max_ejection"],
            "30s"
        );
        assert!(serde_json::from_str::<OutlierConfig>(r#"{"base_ejection": 1500}"#).is_err());
        assert!(serde_json::from_str::<OutlierConfig>(r#"{"bogus": 1}"#).is_err());
    }
}
