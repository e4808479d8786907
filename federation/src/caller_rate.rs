//! A rate limit per authenticated caller (pure, clock injected): a token bucket per key (a
//! SPIFFE ID, a token), answering how long to wait when a call is over the limit, so the API
//! can say `429` with `Retry-After`.
//!
//! The DNS server's per-client limit (`dns/rate.rs`) is this table keyed by source address.
//! The table is bounded: when it is full, buckets that have refilled completely (callers idle
//! for a whole burst) are forgotten first; if none has, the table is cleared. Keys here are
//! authenticated identities, so the bound is a backstop against many minted identities, not
//! the main defence.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Token buckets by caller.
#[derive(Debug)]
pub(crate) struct CallerRate<K> {
    per_second: f64,
    burst: f64,
    max_callers: usize,
    buckets: HashMap<K, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl<K: Hash + Eq> CallerRate<K> {
    /// `per_second` calls per caller on average, up to `burst` at once; at most `max_callers`
    /// buckets are kept. A zero rate disables the limit.
    pub(crate) fn new(per_second: u32, burst: u32, max_callers: usize) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            max_callers: max_callers.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for a call of `caller` at `now`; when there is none, how long until there
    /// is one (rounded up to whole seconds, as `Retry-After` says it).
    pub(crate) fn check(&mut self, caller: K, now: Instant) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        if !self.buckets.contains_key(&caller) && self.buckets.len() >= self.max_callers {
            self.evict(now);
        }
        let (per_second, burst) = (self.per_second, self.burst);
        let bucket = self.buckets.entry(caller).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / per_second;
        Err(Duration::from_secs(wait.ceil().max(1.0) as u64))
    }

    fn evict(&mut self, now: Instant) {
        let (per_second, burst) = (self.per_second, self.burst);
        self.buckets.retain(|_, b| {
            let refilled =
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * per_second;
            refilled < burst
        });
        if self.buckets.len() >= self.max_callers {
            self.buckets.clear();
        }
    }

    /// How many callers have a bucket.
    #[cfg(test)]
    pub(crate) fn callers(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "spiffe://us-east.mesh/ns/demo/sa/a";
    const B: &str = "spiffe://us-east.mesh/ns/demo/sa/b";

    #[test]
    fn a_burst_then_the_rate_with_the_wait() {
        let t0 = Instant::now();
        let mut limit = CallerRate::new(2, 3, 100);
        assert!((0..3).all(|_| limit.check(A, t0).is_ok()));
        assert_eq!(limit.check(A, t0), Err(Duration::from_secs(1)));
        assert!(
            limit.check(B, t0).is_ok(),
            "another caller has its own bucket"
        );
        assert!(limit.check(A, t0 + Duration::from_millis(200)).is_err());
        assert!(
            limit.check(A, t0 + Duration::from_millis(600)).is_ok(),
            "one token after 500 ms"
        );
        let later = t0 + Duration::from_secs(60);
        assert!(
            (0..3).all(|_| limit.check(A, later).is_ok()),
            "refills to the burst, not beyond"
        );
        assert!(limit.check(A, later).is_err());
    }

    #[test]
    fn the_wait_is_whole_seconds_until_the_next_token() {
        let t0 = Instant::now();
        let mut slow = CallerRate::new(1, 1, 10);
        assert!(slow.check(A, t0).is_ok());
        assert_eq!(slow.check(A, t0), Err(Duration::from_secs(1)));
        let mut slower = CallerRate::new(1, 1, 10);
        assert!(slower.check(A, t0).is_ok());
        // 0.25 tokens after 250 ms: 0.75 s to go, said as 1 s.
        assert_eq!(
            slower.check(A, t0 + Duration::from_millis(250)),
            Err(Duration::from_secs(1))
        );
    }

    #[test]
    fn zero_disables() {
        let mut off = CallerRate::new(0, 0, 1);
        let now = Instant::now();
        assert!((0..10_000).all(|_| off.check(A, now).is_ok()));
        assert_eq!(off.callers(), 0);
    }

    #[test]
    fn the_table_is_bounded_and_idle_callers_go_first() {
        let t0 = Instant::now();
        let mut limit = CallerRate::new(1, 2, 2);
        assert!(limit.check("idle", t0).is_ok());
        let t1 = t0 + Duration::from_secs(5);
        assert!(limit.check("busy", t1).is_ok());
        assert!(limit.check("busy", t1).is_ok());
        // A third caller: "idle" has refilled and goes; "busy" keeps its empty bucket.
        assert!(limit.check("new", t1).is_ok());
        assert_eq!(limit.callers(), 2);
        assert!(limit.check("busy", t1).is_err(), "busy was not reset");
        // Nobody idle: the table is cleared rather than grown.
        let mut full = CallerRate::new(1, 1, 2);
        assert!(full.check("x", t0).is_ok() && full.check("y", t0).is_ok());
        assert!(full.check("z", t0).is_ok());
        assert!(full.callers() <= 2);
    }
}
