//! The response fields of a rate limit: `RateLimit-Policy` and `RateLimit` as the IETF draft
//! `draft-ietf-httpapi-ratelimit-headers-11` writes them, and `Retry-After` (RFC 9110 10.2.3)
//! on a rejection, which the draft says takes precedence over the other two.
//!
//! The policy is named after the limit that decided (`"total"`, `"identity"`, `"override"`):
//! always a valid structured-field string, and it tells the client which limit it is near.
//! Seconds are rounded up: the draft asks a server never to advertise more than it allows,
//! and a client waiting a fraction longer than needed is never refused for it.

use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::decision::{Decision, LimitStatus, Verdict};
use super::spec::RateLimitMode;

/// `RateLimit-Policy`: the quota and window of the limit.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what is left of the quota and when it is whole again.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The policy's quota `q` and window `w` (whole seconds) for a token bucket.
///
/// A bucket is not a fixed window, so the pair is chosen so that a client sending `q` requests
/// at once every `w` seconds is never refused (`q <= burst` and `q / w <= rate`), with the
/// largest window the burst covers: `rate 10, burst 10` is `q=10;w=1`, `rate 10, burst 20` is
/// `q=20;w=2`. A burst below the rate is advertised as the burst per second, which understates
/// the rate rather than overstating it.
pub fn quota_window(status: &LimitStatus) -> (u64, u64) {
    let rate = u64::from(status.requests_per_second.max(1));
    let burst = u64::from(status.burst.max(1));
    let window = (burst / rate).max(1);
    (burst.min(rate * window), window)
}

/// The `RateLimit-Policy` value, e.g. `"total";q=100;w=1`.
pub fn policy_value(status: &LimitStatus) -> HeaderValue {
    let (quota, window) = quota_window(status);
    ascii_value(format!("\"{}\";q={quota};w={window}", status.kind))
}

/// The `RateLimit` value, e.g. `"total";r=42;t=1`: tokens left and seconds until full.
pub fn ratelimit_value(status: &LimitStatus) -> HeaderValue {
    ascii_value(format!(
        "\"{}\";r={};t={}",
        status.kind,
        status.remaining,
        ceil_secs(status.reset)
    ))
}

/// The `Retry-After` value for a rejection: seconds until a token is back, rounded up, at
/// least 1 (0 would invite an immediate retry that the limiter may still refuse).
pub fn retry_after_value(status: &LimitStatus) -> HeaderValue {
    HeaderValue::from(ceil_secs(status.retry_after).max(1))
}

/// Writes the fields of a decision into a response's headers: `RateLimit-Policy` and
/// `RateLimit` when a limit applies, plus `Retry-After` when rejected. Writes nothing in shadow
/// mode, where the limit is not in force and the answer must look as if there were none.
pub fn insert_fields(decision: &Decision, headers: &mut HeaderMap) {
    let Some(status) = &decision.limit else {
        return;
    };
    if decision.mode == RateLimitMode::Shadow {
        return;
    }
    headers.insert(RATELIMIT_POLICY, policy_value(status));
    headers.insert(RATELIMIT, ratelimit_value(status));
    if decision.verdict == Verdict::Rejected {
        headers.insert(RETRY_AFTER, retry_after_value(status));
    }
}

/// A header value from text built here from a fixed name, quotes, `;`, `=` and digits.
fn ascii_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).expect("the text is visible ASCII by construction")
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::decision::LimitKind;
    use super::super::limiter::RateLimiter;
    use super::super::spec::{Rate, RateLimitSpec};
    use super::*;

    fn status(rps: u32, burst: u32, remaining: u32, retry_ms: u64, reset_ms: u64) -> LimitStatus {
        LimitStatus {
            kind: LimitKind::Identity,
            requests_per_second: rps,
            burst,
            remaining,
            retry_after: Duration::from_millis(retry_ms),
            reset: Duration::from_millis(reset_ms),
        }
    }

    #[test]
    fn field_text_follows_the_draft() {
        let s = status(100, 100, 42, 0, 580);
        assert_eq!(policy_value(&s), "\"identity\";q=100;w=1");
        assert_eq!(ratelimit_value(&s), "\"identity\";r=42;t=1");
        let full = status(100, 100, 100, 0, 0);
        assert_eq!(ratelimit_value(&full), "\"identity\";r=100;t=0");
    }

    #[test]
    fn quota_and_window_never_overstate_the_bucket() {
        assert_eq!(quota_window(&status(10, 10, 0, 0, 0)), (10, 1));
        assert_eq!(quota_window(&status(10, 20, 0, 0, 0)), (20, 2));
        assert_eq!(quota_window(&status(10, 15, 0, 0, 0)), (10, 1));
        assert_eq!(quota_window(&status(100, 10, 0, 0, 0)), (10, 1));
        assert_eq!(quota_window(&status(1, 60, 0, 0, 0)), (60, 60));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        assert_eq!(retry_after_value(&status(1, 1, 0, 1, 1)), "1");
        assert_eq!(retry_after_value(&status(1, 1, 0, 0, 0)), "1");
        assert_eq!(retry_after_value(&status(1, 1, 0, 1_000, 0)), "1");
        assert_eq!(retry_after_value(&status(1, 1, 0, 2_001, 0)), "3");
    }

    #[test]
    fn a_rejection_carries_all_three_fields_and_shadow_mode_none() {
        let spec = RateLimitSpec {
            total: Some(Rate {
                requests_per_second: 1,
                burst: Some(2),
            }),
            identity: None,
            overrides: vec![],
            mode: RateLimitMode::Enforce,
        };
        let now = Instant::now();
        let enforce = RateLimiter::new(spec.clone()).unwrap();
        let mut h = HeaderMap::new();
        insert_fields(&enforce.check(None, now), &mut h);
        assert_eq!(h[RATELIMIT_POLICY], "\"total\";q=2;w=2");
        assert_eq!(h[RATELIMIT], "\"total\";r=1;t=1");
        assert!(!h.contains_key(RETRY_AFTER), "only on a rejection");
        enforce.check(None, now);
        let mut h = HeaderMap::new();
        insert_fields(&enforce.check(None, now), &mut h);
        assert_eq!(h[RATELIMIT], "\"total\";r=0;t=2");
        assert_eq!(h[RETRY_AFTER], "1");
        let shadow = RateLimiter::new(RateLimitSpec {
            mode: RateLimitMode::Shadow,
            ..spec
        })
        .unwrap();
        let mut h = HeaderMap::new();
        for _ in 0..3 {
            insert_fields(&shadow.check(None, now), &mut h);
        }
        assert!(h.is_empty(), "{h:?}");
    }
}
