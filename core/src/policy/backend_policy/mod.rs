//! Backend policy per service (issue 11, feature 7): what a user writes for one service about
//! how its requests spread over its endpoints and when the sidecar stops sending to them. It
//! owns the spec, its defaults and its validation (pure: no I/O, no clock); the choosers it
//! selects live in `policy::hash_ring` and `policy::pick`, and the sidecar's balancer applies
//! them.
//!
//! ```yaml
//! loadBalancer:                    # p2cEwma (default) | leastRequest | roundRobin | consistentHash
//!   consistentHash:
//!     cookie: session              # or header: x-user, or sourceIdentity: true
//! outlierDetection:                # overrides of the sidecar-wide defaults (core::outlier)
//!   consecutiveFailures: 5
//!   baseEjection: 10s
//! circuitBreaker:                  # overrides of the sidecar-wide defaults (core::breaker)
//!   failureRateThreshold: 0.8
//! limits:                          # unset = unlimited; over a limit: 503 at once, with a reason
//!   maxRequestsPerEndpoint: 100
//! ```
//!
//! - Every field is optional: an empty spec is the sidecar's behaviour without a policy.
//! - Errors name the field path as the user wrote it (`limits.maxConnections: must be at least
//!   1`), so the loader can add file and line and the controller a status condition.
//! - The spec crosses sockets in sidecar snapshots as JSON, so it serializes to the same shape
//!   it reads; unset fields are left out.

mod limits;
mod load_balancer;
mod overrides;

use serde::{Deserialize, Serialize};

pub use limits::{LimitExceeded, LimitsSpec};
pub use load_balancer::{ConsistentHashSpec, HashSource, LoadBalancerSpec};
pub use overrides::{CircuitBreakerSpec, OutlierDetectionSpec};

/// Why a backend policy was refused; names the field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct BackendPolicyError {
    /// The field, as the user spells it (`loadBalancer.consistentHash.header`, ...).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl BackendPolicyError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error under `parent` (`limits` + `maxConnections` = `limits.maxConnections`;
    /// an error about the whole of `parent` has an empty field).
    fn within(self, parent: &str) -> Self {
        let field = if self.field.is_empty() {
            parent.to_string()
        } else {
            format!("{parent}.{}", self.field)
        };
        Self {
            field,
            reason: self.reason,
        }
    }
}

/// The backend policy of one service, as a user writes it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendPolicySpec {
    /// How a request's endpoint is chosen within a locality. Default `p2cEwma` (see
    /// [`LoadBalancerSpec`] for why).
    #[serde(default)]
    pub load_balancer: LoadBalancerSpec,
    /// Overrides of the sidecar-wide outlier detection; unset fields keep the sidecar's values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionSpec>,
    /// Overrides of the sidecar-wide circuit breaker; unset fields keep the sidecar's values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// Concurrency limits; unset means unlimited.
    #[serde(default, skip_serializing_if = "LimitsSpec::is_unlimited")]
    pub limits: LimitsSpec,
}

impl BackendPolicySpec {
    /// Checks every field; the error names the first bad one by its path.
    pub fn validate(&self) -> Result<(), BackendPolicyError> {
        self.load_balancer
            .validate()
            .map_err(|e| e.within("loadBalancer"))?;
        if let Some(outlier) = &self.outlier_detection {
            outlier
                .validate()
                .map_err(|e| e.within("outlierDetection"))?;
        }
        if let Some(breaker) = &self.circuit_breaker {
            breaker.validate().map_err(|e| e.within("circuitBreaker"))?;
        }
        self.limits.validate().map_err(|e| e.within("limits"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::parse_yaml;

    fn parse(yaml: &str) -> BackendPolicySpec {
        parse_yaml(yaml, "policy.yaml").unwrap()
    }

    fn refusal(yaml: &str) -> String {
        match parse_yaml::<BackendPolicySpec>(yaml, "policy.yaml") {
            Err(e) => e.to_string(),
            Ok(spec) => spec.validate().unwrap_err().to_string(),
        }
    }

    #[test]
    fn an_empty_policy_is_the_default_behaviour() {
        let spec = parse("{}");
        assert_eq!(spec, BackendPolicySpec::default());
        assert_eq!(spec.load_balancer, LoadBalancerSpec::P2cEwma);
        assert!(spec.limits.is_unlimited());
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn reads_a_full_policy_from_yaml() {
        let spec = parse(
            "loadBalancer:\n  consistentHash:\n    cookie: session\n\
             outlierDetection:\n  consecutiveFailures: 5\n  baseEjection: 10s\n\
             circuitBreaker:\n  failureRateThreshold: 0.8\n  coolDown: 1m\n\
             limits:\n  maxRequestsPerEndpoint: 100\n  maxPendingRequests: 20\n",
        );
        assert_eq!(spec.validate(), Ok(()));
        assert_eq!(
            spec.load_balancer
                .consistent_hash()
                .and_then(|c| c.source()),
            Some(HashSource::Cookie("session"))
        );
        let outlier = spec.outlier_detection.as_ref().unwrap();
        assert_eq!(outlier.consecutive_failures, Some(5));
        assert_eq!(outlier.base_ejection, Some(Duration::from_secs(10)));
        assert_eq!(outlier.max_ejection, None);
        let breaker = spec.circuit_breaker.as_ref().unwrap();
        assert_eq!(breaker.failure_rate_threshold, Some(0.8));
        assert_eq!(breaker.cool_down, Some(Duration::from_secs(60)));
        assert_eq!(spec.limits.max_requests_per_endpoint, Some(100));
        assert_eq!(spec.limits.max_pending_requests, Some(20));
        assert_eq!(spec.limits.max_connections, None);
    }

    #[test]
    fn round_trips_through_json_leaving_unset_fields_out() {
        let spec = parse(
            "loadBalancer: leastRequest\noutlierDetection:\n  maxEjection: 45s\n\
             limits:\n  maxConnections: 4\n",
        );
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "loadBalancer": "leastRequest",
                "outlierDetection": {"maxEjection": "45s"},
                "limits": {"maxConnections": 4},
            })
        );
        let back: BackendPolicySpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn unknown_fields_are_refused_at_every_level() {
        assert!(refusal("loadBalancing: roundRobin\n").contains("loadBalancing"));
        assert!(refusal("limits:\n  maxConnection: 3\n").contains("maxConnection"));
        assert!(refusal("outlierDetection:\n  ejectionTime: 3s\n").contains("ejectionTime"));
        assert!(refusal("circuitBreaker:\n  threshold: 0.5\n").contains("threshold"));
        let hash = refusal("loadBalancer:\n  consistentHash:\n    query: user\n");
        assert!(hash.contains("query"), "{hash}");
        assert!(refusal("loadBalancer: random\n").contains("random"));
    }

    #[test]
    fn validation_names_the_field_path() {
        assert_eq!(
            refusal("limits:\n  maxConnections: 0\n"),
            "limits.maxConnections: must be at least 1 (leave it unset for no limit)"
        );
        assert!(
            refusal("loadBalancer:\n  consistentHash: {}\n")
                .starts_with("loadBalancer.consistentHash: set exactly one of")
        );
        assert!(
            refusal("loadBalancer:\n  consistentHash:\n    header: 'bad header'\n")
                .starts_with("loadBalancer.consistentHash.header: ")
        );
        assert!(
            refusal("outlierDetection:\n  maxEjectionPercent: 101\n")
                .starts_with("outlierDetection.maxEjectionPercent: ")
        );
        assert!(
            refusal("circuitBreaker:\n  minRequests: 0\n")
                .starts_with("circuitBreaker.minRequests: ")
        );
    }
}
