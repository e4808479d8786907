//! When a failed try is tried again. Pure policy: the budget (`RetryBudget`, withdrawn by the
//! caller only once this says yes) and the choice of another endpoint live elsewhere.
//!
//! - Connect failures (TCP, TLS, identity mismatch, tunnel refused, request not sent) are
//!   retried for every method: the request never reached an app.
//! - 502/503/504 answers, per-try timeouts and broken upstream streams are retried only for
//!   idempotent methods (RFC 9110 section 9.2.2), as the app may have acted on the request.
//! - Nothing is retried once the request body is gone (streamed bodies are sent once).

use http::{Method, StatusCode};

/// Most tries of one request, the first included: enough to step over one dead endpoint and one
/// dead locality, few enough that a broken service does not triple its load.
pub const MAX_TRIES: usize = 3;

/// What went wrong with one try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryFailure {
    /// No connection, or the request was not sent on it.
    Connect,
    /// The upstream answered with this status.
    Status(StatusCode),
    /// No response headers within the per-try timeout.
    Timeout,
    /// The upstream connection or stream broke after the request was sent.
    Protocol,
}

/// Whether `method` may be repeated without a different effect.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// When a request is tried again: the sidecar's default, or what its route says (Gateway API
/// `retry`). Set on the request by the route layer as a fact; read by `retry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryRules {
    /// Most tries, the first included.
    pub max_tries: usize,
    /// Statuses retried; `None`: 502, 503 and 504, for idempotent methods only.
    pub codes: Option<Vec<StatusCode>>,
    /// The least wait before each retry.
    pub backoff: Option<std::time::Duration>,
}

/// Most tries a route may ask for: a route's `attempts` beyond it is capped, so that one
/// request cannot multiply into an unbounded burst (the retry budget bounds the rest).
pub const MAX_ROUTE_TRIES: usize = 10;

impl Default for RetryRules {
    fn default() -> Self {
        Self {
            max_tries: MAX_TRIES,
            codes: None,
            backoff: None,
        }
    }
}

impl RetryRules {
    /// A route's retries: `attempts` retries after the first try, for `codes` (every method:
    /// the route's owner chose them), connection failures always.
    pub fn for_route(attempts: u32, codes: &[u16], backoff: Option<std::time::Duration>) -> Self {
        Self {
            max_tries: (attempts as usize).saturating_add(1).min(MAX_ROUTE_TRIES),
            codes: Some(
                codes
                    .iter()
                    .filter_map(|c| StatusCode::from_u16(*c).ok())
                    .collect(),
            ),
            backoff,
        }
    }

    /// Whether a try may go back to an endpoint this request already tried once every endpoint
    /// has been: only for a route's retries (its `attempts` may exceed the endpoints; the
    /// default tries each endpoint at most once).
    pub fn reuses_endpoints(&self) -> bool {
        self.codes.is_some()
    }

    /// Whether an upstream status is a failure worth another try.
    pub fn is_retryable_status(&self, status: StatusCode) -> bool {
        match &self.codes {
            Some(codes) => codes.contains(&status),
            None => is_retryable_status(status),
        }
    }

    /// Whether another try may follow `tries_done` tries that ended in `failure`
    /// (`body_available`: the request body can still be sent).
    pub fn should_retry(
        &self,
        method: &Method,
        failure: TryFailure,
        tries_done: usize,
        body_available: bool,
    ) -> bool {
        if tries_done >= self.max_tries || !body_available {
            return false;
        }
        match (failure, &self.codes) {
            (TryFailure::Connect, _) => true,
            (TryFailure::Status(status), Some(codes)) => codes.contains(&status),
            (TryFailure::Status(status), None) => {
                is_retryable_status(status) && is_idempotent(method)
            }
            (TryFailure::Timeout | TryFailure::Protocol, _) => is_idempotent(method),
        }
    }
}

/// Whether an upstream status is a failure worth another endpoint (the default rules).
pub fn is_retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// Whether the default rules allow another try after `tries_done` tries ended in `failure`
/// (`body_available`: the request body can still be sent).
pub fn should_retry(
    method: &Method,
    failure: TryFailure,
    tries_done: usize,
    body_available: bool,
) -> bool {
    RetryRules::default().should_retry(method, failure, tries_done, body_available)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use mesh_core::retry_budget::{RetryBudget, RetryBudgetConfig};

    use super::*;

    #[test]
    fn connect_failures_are_retried_for_every_method() {
        for m in [Method::GET, Method::POST, Method::PATCH] {
            assert!(should_retry(&m, TryFailure::Connect, 1, true), "{m}");
        }
    }

    #[test]
    fn gateway_errors_are_retried_only_when_idempotent() {
        for s in [502, 503, 504] {
            let failure = TryFailure::Status(StatusCode::from_u16(s).unwrap());
            assert!(should_retry(&Method::GET, failure, 1, true));
            assert!(should_retry(&Method::PUT, failure, 1, true));
            assert!(!should_retry(&Method::POST, failure, 1, true), "{s}");
        }
        assert!(!should_retry(
            &Method::GET,
            TryFailure::Status(StatusCode::INTERNAL_SERVER_ERROR),
            1,
            true
        ));
        assert!(should_retry(&Method::DELETE, TryFailure::Timeout, 1, true));
        assert!(!should_retry(&Method::POST, TryFailure::Timeout, 1, true));
        assert!(!should_retry(&Method::PATCH, TryFailure::Protocol, 1, true));
    }

    #[test]
    fn tries_are_capped_and_need_the_body() {
        assert!(should_retry(
            &Method::GET,
            TryFailure::Connect,
            MAX_TRIES - 1,
            true
        ));
        assert!(!should_retry(
            &Method::GET,
            TryFailure::Connect,
            MAX_TRIES,
            true
        ));
        assert!(!should_retry(&Method::GET, TryFailure::Connect, 1, false));
    }

    #[test]
    fn a_route_chooses_its_codes_and_tries() {
        let rules = RetryRules::for_route(4, &[500], None);
        let failure = TryFailure::Status(StatusCode::INTERNAL_SERVER_ERROR);
        assert!(rules.should_retry(&Method::POST, failure, 4, true));
        assert!(!rules.should_retry(&Method::POST, failure, 5, true));
        let unavailable = TryFailure::Status(StatusCode::SERVICE_UNAVAILABLE);
        assert!(!rules.should_retry(&Method::GET, unavailable, 1, true));
        assert!(rules.should_retry(&Method::GET, TryFailure::Connect, 1, true));
        assert_eq!(
            RetryRules::for_route(100, &[], None).max_tries,
            MAX_ROUTE_TRIES
        );
    }

    #[test]
    fn idempotent_methods() {
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            assert!(is_idempotent(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT"] {
            assert!(!is_idempotent(&m.parse().unwrap()), "{m}");
        }
    }

    #[test]
    fn the_budget_bounds_retries_that_the_policy_allows() {
        // The proxy withdraws only after `should_retry` said yes: with no floor, 10 requests
        // buy 2 retries at the default 20% ratio.
        let now = Instant::now();
        let mut budget = RetryBudget::new(RetryBudgetConfig {
            min_retries_per_second: 0,
            ttl: Duration::from_secs(10),
            ..RetryBudgetConfig::default()
        });
        let mut granted = 0;
        for _ in 0..10 {
            budget.deposit(now);
            if should_retry(&Method::GET, TryFailure::Connect, 1, true) && budget.try_withdraw(now)
            {
                granted += 1;
            }
        }
        assert_eq!(granted, 2);
    }
}
