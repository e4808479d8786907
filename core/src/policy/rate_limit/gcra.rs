//! Token-bucket arithmetic as GCRA (the generic cell rate algorithm, as `governor` does it):
//! a bucket is one timestamp, the theoretical arrival time (TAT) at which it would be full
//! again. The debt `TAT - now` is what the bucket lacks in time units; each request adds one
//! refill interval, time pays it back continuously, and a request is refused when its interval
//! would push the debt past the bucket's capacity. No refill loop, one `Instant` per bucket,
//! and a bucket whose TAT has passed is full, the same as no bucket at all.

use std::time::{Duration, Instant};

use super::spec::Rate;

/// The constants of one rate: how long a token takes to come back and how much debt fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Time one token takes to refill (`1 s / requestsPerSecond`, rounded down to the
    /// nanosecond: at most 0.1% fast within the bounded rates).
    interval: Duration,
    /// `interval * burst`: the debt of an empty bucket.
    capacity: Duration,
    /// The rate as configured, for reporting.
    pub(crate) requests_per_second: u32,
    /// The bucket size, for reporting.
    pub(crate) burst: u32,
}

/// What a bucket says about one request at `now`, before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Check {
    /// Whether a token is available.
    pub(crate) allowed: bool,
    /// The bucket's TAT if the request is let through (unchanged when refused).
    pub(crate) tat: Option<Instant>,
    /// Whole tokens left after this request (0 when refused).
    pub(crate) remaining: u32,
    /// Time until the next token is back (zero while tokens remain).
    pub(crate) retry_after: Duration,
    /// Time until the bucket is full again.
    pub(crate) reset: Duration,
}

impl Gcra {
    /// The bucket constants of a validated rate.
    pub(crate) fn new(rate: Rate) -> Self {
        let requests_per_second = rate.requests_per_second.max(1);
        let burst = rate.burst_or_default().max(1);
        let interval = Duration::from_nanos(1_000_000_000 / u64::from(requests_per_second));
        Self {
            interval,
            capacity: interval * burst,
            requests_per_second,
            burst,
        }
    }

    /// Whether one more request fits at `now` in a bucket whose TAT is `tat` (`None`: never
    /// used, so full). Pure: the caller writes `Check::tat` back only when it lets the request
    /// through, so a request refused elsewhere costs this bucket nothing.
    pub(crate) fn check(&self, tat: Option<Instant>, now: Instant) -> Check {
        let debt = tat.map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        let after = debt + self.interval;
        if after <= self.capacity {
            let remaining = (self.capacity - after).as_nanos() / self.interval.as_nanos();
            let remaining = u32::try_from(remaining).unwrap_or(u32::MAX);
            Check {
                allowed: true,
                tat: Some(now + after),
                remaining,
                retry_after: if remaining > 0 {
                    Duration::ZERO
                } else {
                    // The next request adds one more interval: it fits once this much is paid.
                    (after + self.interval).saturating_sub(self.capacity)
                },
                reset: after,
            }
        } else {
            Check {
                allowed: false,
                tat,
                remaining: 0,
                retry_after: after - self.capacity,
                reset: debt,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(rps: u32, burst: Option<u32>) -> Gcra {
        Gcra::new(Rate {
            requests_per_second: rps,
            burst,
        })
    }

    /// Runs `n` requests at `now`, writing back what is allowed; returns how many passed.
    fn spend(g: &Gcra, tat: &mut Option<Instant>, now: Instant, n: usize) -> usize {
        (0..n)
            .filter(|_| {
                let c = g.check(*tat, now);
                if c.allowed {
                    *tat = c.tat;
                }
                c.allowed
            })
            .count()
    }

    #[test]
    fn a_full_bucket_allows_its_burst_then_refuses() {
        let g = rate(10, Some(5));
        let now = Instant::now();
        let mut tat = None;
        let first = g.check(tat, now);
        assert_eq!((first.remaining, first.retry_after), (4, Duration::ZERO));
        assert_eq!(first.reset, Duration::from_millis(100));
        assert_eq!(spend(&g, &mut tat, now, 10), 5);
        let refused = g.check(tat, now);
        assert!(!refused.allowed);
        assert_eq!(refused.tat, tat, "a refusal writes nothing");
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert_eq!(refused.reset, Duration::from_millis(500));
    }

    #[test]
    fn tokens_come_back_continuously() {
        let g = rate(4, None);
        let start = Instant::now();
        let mut tat = None;
        assert_eq!(spend(&g, &mut tat, start, 4), 4, "default burst = rate");
        assert_eq!(
            spend(&g, &mut tat, start + Duration::from_millis(249), 1),
            0
        );
        assert_eq!(
            spend(&g, &mut tat, start + Duration::from_millis(250), 2),
            1
        );
        let later = start + Duration::from_secs(10);
        let c = g.check(tat, later);
        assert_eq!(
            c.remaining, 3,
            "full after a quiet spell, never over the burst"
        );
        assert_eq!(spend(&g, &mut tat, later, 10), 4);
    }

    #[test]
    fn the_last_token_reports_when_the_next_comes_back() {
        let g = rate(2, Some(1));
        let now = Instant::now();
        let c = g.check(None, now);
        assert!(c.allowed);
        assert_eq!(c.remaining, 0);
        assert_eq!(c.retry_after, Duration::from_millis(500));
        assert_eq!(c.reset, Duration::from_millis(500));
    }

    #[test]
    fn a_clock_read_out_of_order_does_not_panic_or_refill() {
        let g = rate(1, Some(1));
        let now = Instant::now() + Duration::from_secs(5);
        let tat = g.check(None, now).tat;
        let earlier = g.check(tat, now - Duration::from_secs(1));
        assert!(
            !earlier.allowed,
            "an older reading sees more debt, not less"
        );
    }
}
