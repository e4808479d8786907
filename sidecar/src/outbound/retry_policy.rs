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

/// Whether an upstream status is a failure worth another endpoint.
pub fn is_retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// Whether the policy allows another try after `tries_done` tries ended in `failure`
/// (`body_available`: the request body can still be sent).
pub fn should_retry(
    method: &Method,
    failure: TryFailure,
    tries_done: usize,
    body_available: bool,
) -> bool {
    if tries_done >= MAX_TRIES || !body_available {
        return false;
    }
    match failure {
        TryFailure::Connect => true,
        TryFailure::Status(status) => is_retryable_status(status) && is_idempotent(method),
        TryFailure::Timeout | TryFailure::Protocol => is_idempotent(method),
    }
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
