//! The limiter of one route or inbound server: its buckets behind one lock, and the decision
//! for each request.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use super::callers::{CallerBuckets, DEFAULT_MAX_CALLERS};
use super::decision::{Decision, LimitKind, LimitStatus, Verdict};
use super::gcra::{Check, Gcra};
use super::spec::{RateLimitError, RateLimitMode, RateLimitSpec};

/// Bucket state, all behind one lock.
#[derive(Debug)]
struct Buckets {
    total: Option<Instant>,
    anonymous: Option<Instant>,
    callers: CallerBuckets,
}

/// A local rate limiter, shared by the tasks serving one route or server.
///
/// `check` takes `&self` and holds a `std::sync::Mutex` for a few comparisons and at most
/// two ordered-set updates, never across an `.await`: cheaper than an async lock, and one lock
/// keeps the total and the caller's bucket consistent with each other. Changing the spec means
/// building a new limiter: buckets start full.
#[derive(Debug)]
pub struct RateLimiter {
    spec: RateLimitSpec,
    total: Option<Gcra>,
    identity: Option<Gcra>,
    overrides: HashMap<String, Gcra>,
    buckets: Mutex<Buckets>,
}

impl RateLimiter {
    /// A limiter for a spec, tracking at most [`DEFAULT_MAX_CALLERS`] callers.
    pub fn new(spec: RateLimitSpec) -> Result<Self, RateLimitError> {
        Self::with_max_callers(spec, DEFAULT_MAX_CALLERS)
    }

    /// A limiter tracking at most `max_callers` per-caller buckets (at least 1).
    pub fn with_max_callers(
        spec: RateLimitSpec,
        max_callers: usize,
    ) -> Result<Self, RateLimitError> {
        spec.validate()?;
        let overrides = spec
            .overrides
            .iter()
            .flat_map(|o| {
                let gcra = Gcra::new(o.rate());
                o.identities.iter().map(move |id| (id.clone(), gcra))
            })
            .collect();
        Ok(Self {
            total: spec.total.map(Gcra::new),
            identity: spec.identity.map(Gcra::new),
            overrides,
            buckets: Mutex::new(Buckets {
                total: None,
                anonymous: None,
                callers: CallerBuckets::new(max_callers),
            }),
            spec,
        })
    }

    /// The spec the limiter was built from.
    pub fn spec(&self) -> &RateLimitSpec {
        &self.spec
    }

    /// Callers with a bucket that is not full, for a gauge.
    pub fn tracked_callers(&self) -> usize {
        self.lock().callers.len()
    }

    /// Decides one request from `identity` (its SPIFFE ID URI; `None` without one) at `now`.
    ///
    /// The total limit is checked first, then the caller's (override, else per-identity). A
    /// token is taken only when every applicable limit allows the request, so a request
    /// refused by one limit costs the other nothing. Shadow mode follows exactly the same
    /// accounting and only changes the verdict: its "would reject" counts are what enforcing
    /// would have refused.
    pub fn check(&self, identity: Option<&str>, now: Instant) -> Decision {
        let mut buckets = self.lock();
        let total = self.total.map(|g| (g, g.check(buckets.total, now)));
        if let Some((g, c)) = total
            && !c.allowed
        {
            return self.refuse(status(LimitKind::Total, g, c));
        }
        let caller = self.caller_limit(identity).map(|(kind, g)| {
            let tat = match identity {
                Some(id) => buckets.callers.tat(id),
                None => buckets.anonymous,
            };
            (kind, g, g.check(tat, now))
        });
        if let Some((kind, g, c)) = caller
            && !c.allowed
        {
            return self.refuse(status(kind, g, c));
        }
        if let Some((_, c)) = total {
            buckets.total = c.tat;
        }
        if let Some((_, _, c)) = caller {
            match (identity, c.tat) {
                (Some(id), Some(tat)) => buckets.callers.set(id, tat, now),
                (None, tat) => buckets.anonymous = tat,
                (Some(_), None) => {}
            }
        }
        let total = total.map(|(g, c)| status(LimitKind::Total, g, c));
        let caller = caller.map(|(kind, g, c)| status(kind, g, c));
        // Report the tighter limit, the one a client pacing itself must respect: fewer tokens
        // left, then the longer wait for the next one.
        let tighter = |s: &LimitStatus| (s.remaining, Reverse(s.retry_after));
        let limit = match (total, caller) {
            (Some(t), Some(c)) if tighter(&t) < tighter(&c) => Some(t),
            (t, c) => c.or(t),
        };
        Decision {
            verdict: Verdict::Allowed,
            mode: self.spec.mode,
            limit,
        }
    }

    /// The caller's own limit, if any: its override, else the per-identity rate (which the
    /// callers without identity share as one bucket).
    fn caller_limit(&self, identity: Option<&str>) -> Option<(LimitKind, Gcra)> {
        if let Some(g) = identity.and_then(|id| self.overrides.get(id)) {
            return Some((LimitKind::Override, *g));
        }
        self.identity.map(|g| (LimitKind::Identity, g))
    }

    fn refuse(&self, limit: LimitStatus) -> Decision {
        Decision {
            verdict: match self.spec.mode {
                RateLimitMode::Enforce => Verdict::Rejected,
                RateLimitMode::Shadow => Verdict::WouldReject,
            },
            mode: self.spec.mode,
            limit: Some(limit),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets> {
        // The state is a few timestamps written after every check passed: a panic elsewhere
        // cannot leave it half-written, so a poisoned lock is safe to keep using.
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn status(kind: LimitKind, g: Gcra, c: Check) -> LimitStatus {
    LimitStatus {
        kind,
        requests_per_second: g.requests_per_second,
        burst: g.burst,
        remaining: c.remaining,
        retry_after: c.retry_after,
        reset: c.reset,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::spec::{Rate, RateLimitOverride};
    use super::*;

    const A: &str = "spiffe://us-east.mesh/ns/demo/sa/a";
    const B: &str = "spiffe://us-east.mesh/ns/demo/sa/b";
    const VIP: &str = "spiffe://eu-central.mesh/ns/demo/sa/vip";

    fn spec(total: Option<u32>, identity: Option<u32>) -> RateLimitSpec {
        RateLimitSpec {
            total: total.map(Rate::per_second),
            identity: identity.map(Rate::per_second),
            overrides: vec![],
            mode: RateLimitMode::Enforce,
        }
    }

    /// How many of `n` requests from `id` at `now` are allowed.
    fn allowed(l: &RateLimiter, id: Option<&str>, now: Instant, n: usize) -> usize {
        (0..n).filter(|_| l.check(id, now).is_allowed()).count()
    }

    #[test]
    fn a_burst_passes_then_requests_are_rejected_until_tokens_refill() {
        let l = RateLimiter::new(spec(Some(5), None)).unwrap();
        let t0 = Instant::now();
        assert_eq!(allowed(&l, Some(A), t0, 5), 5);
        let d = l.check(Some(B), t0);
        assert_eq!(d.verdict, Verdict::Rejected);
        let limit = d.limit.unwrap();
        assert_eq!(limit.kind, LimitKind::Total);
        assert_eq!((limit.remaining, limit.burst), (0, 5));
        assert_eq!(limit.retry_after, Duration::from_millis(200));
        assert_eq!(limit.reset, Duration::from_secs(1));
        assert_eq!(allowed(&l, Some(A), t0 + Duration::from_millis(199), 1), 0);
        assert_eq!(allowed(&l, Some(A), t0 + Duration::from_millis(400), 5), 2);
        assert_eq!(allowed(&l, None, t0 + Duration::from_secs(60), 9), 5);
    }

    #[test]
    fn each_identity_has_its_own_bucket_and_anonymous_callers_share_one() {
        let l = RateLimiter::new(spec(None, Some(2))).unwrap();
        let t0 = Instant::now();
        assert_eq!(allowed(&l, Some(A), t0, 5), 2);
        assert_eq!(allowed(&l, Some(B), t0, 5), 2, "B is not charged for A");
        assert_eq!(allowed(&l, None, t0, 1), 1);
        assert_eq!(
            allowed(&l, None, t0, 5),
            1,
            "one bucket for every anonymous caller"
        );
        let d = l.check(Some(A), t0);
        assert_eq!(d.limit.unwrap().kind, LimitKind::Identity);
        assert_eq!(l.tracked_callers(), 2, "anonymous is not in the capped map");
    }

    #[test]
    fn an_override_replaces_the_identity_rate_for_the_named_callers() {
        let mut s = spec(None, Some(1));
        s.overrides.push(RateLimitOverride {
            requests_per_second: 3,
            burst: Some(4),
            identities: vec![VIP.into(), B.into()],
        });
        let l = RateLimiter::new(s).unwrap();
        let t0 = Instant::now();
        assert_eq!(allowed(&l, Some(A), t0, 10), 1);
        assert_eq!(allowed(&l, Some(VIP), t0, 10), 4);
        assert_eq!(
            allowed(&l, Some(B), t0, 10),
            4,
            "each named caller has its own bucket"
        );
        let d = l.check(Some(VIP), t0);
        let limit = d.limit.unwrap();
        assert_eq!(limit.kind, LimitKind::Override);
        assert_eq!((limit.requests_per_second, limit.burst), (3, 4));
        assert_eq!(
            allowed(&l, None, t0, 3),
            1,
            "anonymous callers get the identity rate"
        );
    }

    #[test]
    fn only_overrides_leave_other_callers_unlimited() {
        let mut s = spec(None, None);
        s.overrides.push(RateLimitOverride {
            requests_per_second: 1,
            burst: None,
            identities: vec![VIP.into()],
        });
        let l = RateLimiter::new(s).unwrap();
        let t0 = Instant::now();
        assert_eq!(allowed(&l, Some(VIP), t0, 3), 1);
        let free = l.check(Some(A), t0);
        assert_eq!(free.verdict, Verdict::Allowed);
        assert_eq!(free.limit, None);
    }

    #[test]
    fn the_total_is_checked_first_and_a_refusal_costs_the_other_bucket_nothing() {
        let l = RateLimiter::new(spec(Some(3), Some(2))).unwrap();
        let t0 = Instant::now();
        assert_eq!(allowed(&l, Some(B), t0, 3), 2, "B stops at its own limit");
        assert_eq!(
            allowed(&l, Some(A), t0, 1),
            1,
            "B's refused request took no total token"
        );
        let d = l.check(Some(A), t0);
        assert_eq!(
            d.limit.unwrap().kind,
            LimitKind::Total,
            "the total is checked first"
        );
        assert_eq!(d.verdict, Verdict::Rejected);
        // A's refusals by the total did not touch A's own bucket: it still holds one token.
        let later = t0 + Duration::from_millis(334);
        let d = l.check(Some(A), later);
        assert!(d.is_allowed());
        let limit = d.limit.unwrap();
        assert_eq!(limit.remaining, 0, "both buckets are empty now");
        assert_eq!(
            limit.kind,
            LimitKind::Total,
            "the one refilling last is reported"
        );
    }

    #[test]
    fn shadow_mode_never_rejects_but_counts_what_enforcing_would_reject() {
        let mut shadow = spec(Some(4), Some(3));
        shadow.mode = RateLimitMode::Shadow;
        let shadow = RateLimiter::new(shadow).unwrap();
        let enforce = RateLimiter::new(spec(Some(4), Some(3))).unwrap();
        let t0 = Instant::now();
        let callers = [Some(A), Some(A), Some(A), Some(A), Some(B), None, Some(B)];
        let mut would_reject = 0;
        for step in 0..40u64 {
            let now = t0 + Duration::from_millis(step * 70);
            for id in callers {
                let (s, e) = (shadow.check(id, now), enforce.check(id, now));
                assert!(s.is_allowed());
                let would = s.verdict == Verdict::WouldReject;
                assert_eq!(would, e.verdict == Verdict::Rejected, "step {step} {id:?}");
                assert_eq!(s.limit, e.limit);
                would_reject += usize::from(would);
            }
        }
        // 280 requests in 2.73 s against a total of 4/s with a burst of 4: at most 14 served.
        let served = 280 - would_reject;
        assert!((10..=14).contains(&served), "{served}");
    }

    #[test]
    fn per_caller_buckets_are_capped() {
        let l = RateLimiter::with_max_callers(spec(None, Some(1)), 100).unwrap();
        let t0 = Instant::now();
        for i in 0..1_000 {
            let id = format!("spiffe://us-east.mesh/ns/load/sa/c{i}");
            assert!(l.check(Some(&id), t0).is_allowed());
            assert!(l.tracked_callers() <= 100);
        }
        assert_eq!(l.tracked_callers(), 100);
        // Once their buckets refill they are dropped on the next write: nothing is lost.
        let later = t0 + Duration::from_secs(2);
        assert!(l.check(Some(A), later).is_allowed());
        assert_eq!(l.tracked_callers(), 1);
        assert!(!l.check(Some(A), later).is_allowed(), "A is still limited");
    }
}
