//! Concurrency limits of one service, as one sidecar enforces them, and the pure checks the
//! sidecar makes before a connection, a wait or a send.
//!
//! Over a limit the sidecar fails fast: it answers 503 at once with `x-mesh-error` set to the
//! limit's [`LimitExceeded::label`] and a body naming the limit, instead of queueing without
//! bound. A fast 503 is retried elsewhere (another endpoint, another locality) within the
//! retry budget, while a queue would only turn an overloaded endpoint's trouble into the
//! caller's latency. Limits are local to each sidecar: N callers may together send N times the
//! limit, as with Envoy's circuit-breaker thresholds.

use serde::{Deserialize, Serialize};

use super::BackendPolicyError;

/// Concurrency limits; each unset limit is unlimited (the sidecar's behaviour without a
/// policy), and a set one is at least 1 (0 would refuse every request).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Connections this sidecar may hold to each endpoint. The pool multiplexes requests over
    /// one HTTP/2 connection per endpoint today, so any value holds there; it bounds the
    /// connections a pool opens beyond that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Requests of this service waiting at once for a connection to an endpoint (being dialled,
    /// or waiting while another request dials it); one more fails. The wait for an HTTP/2
    /// stream slot inside an open connection is not counted (the HTTP/2 client does not expose
    /// it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight at once to each endpoint. An endpoint at its limit is passed over
    /// like an ejected one; when every candidate is at its limit, the request fails (it does
    /// not wait for one to finish).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_endpoint: Option<u32>,
}

/// A limit a request ran into: the reason of its 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// The endpoint already has `max` connections.
    #[error("limits.maxConnections reached: the endpoint already has {max} connections")]
    Connections {
        /// The limit.
        max: u32,
    },
    /// `max` requests of the service are already waiting.
    #[error("limits.maxPendingRequests reached: {max} requests are already waiting")]
    PendingRequests {
        /// The limit.
        max: u32,
    },
    /// The endpoint already has `max` requests in flight.
    #[error("limits.maxRequestsPerEndpoint reached: the endpoint has {max} requests in flight")]
    RequestsPerEndpoint {
        /// The limit.
        max: u32,
    },
}

impl LimitExceeded {
    /// The `x-mesh-error` label and metrics label of the 503.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Connections { .. } => "max-connections",
            Self::PendingRequests { .. } => "max-pending-requests",
            Self::RequestsPerEndpoint { .. } => "max-requests-per-endpoint",
        }
    }
}

impl LimitsSpec {
    /// Whether no limit is set.
    pub fn is_unlimited(&self) -> bool {
        self == &Self::default()
    }

    /// Whether one more connection may be opened to an endpoint that has `open` already.
    pub fn may_connect(&self, open: u32) -> Result<(), LimitExceeded> {
        under(self.max_connections, open).map_err(|max| LimitExceeded::Connections { max })
    }

    /// Whether one more request may wait while `pending` of the service already do.
    pub fn may_wait(&self, pending: u32) -> Result<(), LimitExceeded> {
        under(self.max_pending_requests, pending)
            .map_err(|max| LimitExceeded::PendingRequests { max })
    }

    /// Whether one more request may go to an endpoint that has `in_flight` already.
    pub fn may_send(&self, in_flight: u32) -> Result<(), LimitExceeded> {
        under(self.max_requests_per_endpoint, in_flight)
            .map_err(|max| LimitExceeded::RequestsPerEndpoint { max })
    }

    pub(super) fn validate(&self) -> Result<(), BackendPolicyError> {
        for (field, value) in [
            ("maxConnections", self.max_connections),
            ("maxPendingRequests", self.max_pending_requests),
            ("maxRequestsPerEndpoint", self.max_requests_per_endpoint),
        ] {
            if value == Some(0) {
                return Err(BackendPolicyError::new(
                    field,
                    "must be at least 1 (leave it unset for no limit)",
                ));
            }
        }
        Ok(())
    }
}

/// `Ok` while `current` is below `limit` (always, without one); the limit otherwise.
fn under(limit: Option<u32>, current: u32) -> Result<(), u32> {
    match limit {
        Some(max) if current >= max => Err(max),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(
        connections: Option<u32>,
        pending: Option<u32>,
        per_endpoint: Option<u32>,
    ) -> LimitsSpec {
        LimitsSpec {
            max_connections: connections,
            max_pending_requests: pending,
            max_requests_per_endpoint: per_endpoint,
        }
    }

    #[test]
    fn unset_limits_admit_everything() {
        let none = LimitsSpec::default();
        assert!(none.is_unlimited());
        assert_eq!(none.may_connect(u32::MAX), Ok(()));
        assert_eq!(none.may_wait(u32::MAX), Ok(()));
        assert_eq!(none.may_send(u32::MAX), Ok(()));
    }

    #[test]
    fn each_limit_admits_up_to_its_value_then_names_itself() {
        let spec = limits(Some(2), Some(10), Some(100));
        assert!(!spec.is_unlimited());
        assert_eq!(spec.may_connect(1), Ok(()));
        assert_eq!(
            spec.may_connect(2),
            Err(LimitExceeded::Connections { max: 2 })
        );
        assert_eq!(spec.may_wait(9), Ok(()));
        assert_eq!(
            spec.may_wait(10),
            Err(LimitExceeded::PendingRequests { max: 10 })
        );
        assert_eq!(spec.may_send(99), Ok(()));
        let over = spec.may_send(100).unwrap_err();
        assert_eq!(over, LimitExceeded::RequestsPerEndpoint { max: 100 });
        assert_eq!(over.label(), "max-requests-per-endpoint");
        assert_eq!(
            over.to_string(),
            "limits.maxRequestsPerEndpoint reached: the endpoint has 100 requests in flight"
        );
        assert_eq!(
            LimitExceeded::Connections { max: 1 }.label(),
            "max-connections"
        );
        assert_eq!(
            LimitExceeded::PendingRequests { max: 1 }.label(),
            "max-pending-requests"
        );
    }

    #[test]
    fn zero_is_refused_naming_the_field() {
        for (spec, field) in [
            (limits(Some(0), None, None), "maxConnections"),
            (limits(None, Some(0), None), "maxPendingRequests"),
            (limits(Some(1), Some(1), Some(0)), "maxRequestsPerEndpoint"),
        ] {
            let err = spec.validate().unwrap_err();
            assert_eq!(err.field, field);
        }
        assert_eq!(limits(Some(1), Some(1), Some(1)).validate(), Ok(()));
    }
}
