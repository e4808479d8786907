//! Retry budget (Finagle/Linkerd style): retries may add at most a share of the live traffic
//! seen over a recent window, plus a small fixed floor so quiet services can still retry. This
//! bounds the extra load retries put on a struggling destination. It owns the accounting only;
//! which failures are retryable, and where the retry goes, is the sidecar's decision.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::breaker::RollingWindow;

/// How much retrying live traffic may buy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudgetConfig {
    /// Retries allowed per original request over the window. Default 0.2: retries add at most
    /// 20% load, which a healthy destination absorbs and a sick one survives.
    pub ratio: f64,
    /// Retries per second allowed regardless of traffic. Default 10: a low-traffic service
    /// still gets its few retries, yet a storm stays small.
    pub min_retries_per_second: u32,
    /// How long deposits and withdrawals count. Default 10 s: smooths bursts while still
    /// following a change in traffic within seconds.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_retries_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

/// Requests and retries counted in one bucket of the budget's window.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    requests: u64,
    retries: u64,
}

/// The retry budget of one destination.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    window: RollingWindow<Tally>,
}

impl RetryBudget {
    /// Creates a budget with only the fixed floor available.
    pub fn new(config: RetryBudgetConfig) -> Self {
        let window = RollingWindow::new(config.ttl);
        Self { config, window }
    }

    /// Credits one original request (call once per request, not per try).
    pub fn deposit(&mut self, now: Instant) {
        self.window.current(now).requests += 1;
    }

    /// Whether a retry is allowed now; if so, it is counted against the budget.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        if self.available(now) < 1.0 {
            return false;
        }
        self.window.current(now).retries += 1;
        true
    }

    /// Retries the budget still allows at `now` (may be fractional).
    pub fn available(&self, now: Instant) -> f64 {
        let (requests, retries) = self.window.live(now).fold((0, 0), |(req, ret), tally| {
            (req + tally.requests, ret + tally.retries)
        });
        let floor = f64::from(self.config.min_retries_per_second) * self.config.ttl.as_secs_f64();
        floor + self.config.ratio * requests as f64 - retries as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_retries_per_second: u32) -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig {
            ratio,
            min_retries_per_second,
            ttl: Duration::from_secs(10),
        })
    }

    fn withdrawals(budget: &mut RetryBudget, now: Instant) -> usize {
        (0..10_000).take_while(|_| budget.try_withdraw(now)).count()
    }

    #[test]
    fn the_floor_allows_min_retries_per_second_times_ttl() {
        let now = Instant::now();
        let mut budget = budget(0.2, 10);
        assert_eq!(withdrawals(&mut budget, now), 100);
        assert!(!budget.try_withdraw(now));
    }

    #[test]
    fn deposits_buy_a_ratio_of_retries() {
        let now = Instant::now();
        let mut budget = budget(0.2, 0);
        assert!(
            !budget.try_withdraw(now),
            "no traffic, no floor: no retries"
        );
        for _ in 0..50 {
            budget.deposit(now);
        }
        assert_eq!(withdrawals(&mut budget, now), 10);
    }

    #[test]
    fn deposits_and_withdrawals_expire_after_the_ttl() {
        let start = Instant::now();
        let mut budget = budget(0.5, 0);
        for _ in 0..10 {
            budget.deposit(start);
        }
        assert_eq!(withdrawals(&mut budget, start), 5);
        // Half-way through the ttl both still count.
        let mid = start + Duration::from_secs(5);
        budget.deposit(mid);
        budget.deposit(mid);
        assert_eq!(withdrawals(&mut budget, mid), 1);
        // Once the start bucket has expired only the two mid-window deposits and the one
        // mid-window retry remain.
        let later = start + Duration::from_secs(10);
        assert_eq!(budget.available(later), 0.0);
        let much_later = start + Duration::from_secs(30);
        assert_eq!(budget.available(much_later), 0.0);
        budget.deposit(much_later);
        budget.deposit(much_later);
        assert!(budget.try_withdraw(much_later));
    }

    #[test]
    fn config_defaults_and_durations() {
        let config: RetryBudgetConfig = serde_json::from_str(r#"{"ttl": "2s"}"#).unwrap();
        assert_eq!(config.ttl, Duration::from_secs(2));
        assert_eq!(config.ratio, 0.2);
        assert_eq!(config.min_retries_per_second, 10);
        assert!(
            serde_json::from_str::<RetryBudgetConfig>(r#"{"ratio": 0.1, "extra": 0}"#).is_err()
        );
    }
}
