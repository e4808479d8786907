//! Local rate limits for one route or inbound server (issue 11, feature 4), pure: the spec a
//! user writes, the token buckets with the time passed in, and the response fields. The
//! sidecar layer that calls [`RateLimiter::check`] per request and answers 429 is not here.
//!
//! The shape is Linkerd's `HTTPLocalRateLimitPolicy`: a `total` bucket shared by all callers,
//! checked first; an `identity` bucket per caller (its SPIFFE ID; callers without an identity
//! share one); `overrides[]` giving named identities their own rate instead; and a `shadow`
//! mode that counts "would reject" and serves everything.
//!
//! - `spec.rs`: [`RateLimitSpec`] and its validation;
//! - `gcra.rs`: the token bucket as one timestamp per bucket (GCRA), refilling continuously;
//! - `callers.rs`: the per-caller buckets, bounded: full buckets are dropped (they equal no
//!   bucket), then the one closest to full;
//! - `limiter.rs`: [`RateLimiter`], its buckets behind one lock;
//! - `decision.rs`: the [`Decision`] for one request and the [`LimitStatus`] it reports;
//! - `headers.rs`: `RateLimit-Policy`, `RateLimit` (IETF draft -11) and `Retry-After`.

mod callers;
mod decision;
mod gcra;
mod headers;
mod limiter;
mod spec;

pub use callers::DEFAULT_MAX_CALLERS;
pub use decision::{Decision, LimitKind, LimitStatus, Verdict};
pub use headers::{
    RATELIMIT, RATELIMIT_POLICY, insert_fields, policy_value, quota_window, ratelimit_value,
    retry_after_value,
};
pub use limiter::RateLimiter;
pub use spec::{
    MAX_REQUESTS_PER_SECOND, Rate, RateLimitError, RateLimitMode, RateLimitOverride, RateLimitSpec,
};
