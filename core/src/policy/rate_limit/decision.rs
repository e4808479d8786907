//! What the limiter answers for one request: the verdict and the state of the limit that
//! decided, which the response fields and metrics are built from.

use std::fmt;
use std::time::Duration;

use super::spec::RateLimitMode;

/// Which limit a decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// The bucket all callers share.
    Total,
    /// The caller's own bucket at the per-identity rate (or the anonymous callers' bucket).
    Identity,
    /// The caller's own bucket at an override's rate.
    Override,
}

impl LimitKind {
    /// The name used in metrics labels and as the `RateLimit` policy name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::Identity => "identity",
            Self::Override => "override",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within every limit.
    Allowed,
    /// Over a limit: answer 429.
    Rejected,
    /// Over a limit in shadow mode: count it, then serve the request.
    WouldReject,
}

/// The state of the limit that decided, for the response headers and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStatus {
    /// Which limit.
    pub kind: LimitKind,
    /// Its sustained rate.
    pub requests_per_second: u32,
    /// Its bucket size.
    pub burst: u32,
    /// Whole tokens left after this request.
    pub remaining: u32,
    /// Time until a token is back (zero while tokens remain): `Retry-After`.
    pub retry_after: Duration,
    /// Time until the bucket is full again: the `RateLimit` field's `t`.
    pub reset: Duration,
}

/// The limiter's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Allowed, rejected, or rejected in shadow mode only.
    pub verdict: Verdict,
    /// The limiter's mode: in shadow mode the answer carries no rate limit fields, as the
    /// limit is not in force.
    pub mode: RateLimitMode,
    /// The limit that rejected the request or, when allowed, the one closest to rejecting;
    /// `None` when no limit applies to this caller (only overrides, naming others).
    pub limit: Option<LimitStatus>,
}

impl Decision {
    /// Whether the request goes on (always, in shadow mode).
    pub fn is_allowed(&self) -> bool {
        self.verdict != Verdict::Rejected
    }
}
