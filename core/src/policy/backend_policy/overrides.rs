//! Per-service overrides of the sidecar-wide outlier detection (`core::outlier`) and circuit
//! breaker (`core::breaker`). The field names are those of [`OutlierConfig`] and
//! [`BreakerConfig`] in camelCase, and an unset field keeps the sidecar's value, so a policy
//! says only what differs and the documented defaults stay in one place.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::BackendPolicyError;
use crate::breaker::BreakerConfig;
use crate::outlier::OutlierConfig;

/// Overrides of [`OutlierConfig`] for one service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetectionSpec {
    /// Consecutive failures that eject an endpoint (at least 1; sidecar default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// First ejection time; the n-th lasts n times this (more than 0; sidecar default 2 s).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub base_ejection: Option<Duration>,
    /// Cap on the ejection time (sidecar default 30 s).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_ejection: Option<Duration>,
    /// Most endpoints, in percent, ejected at once (0 to 100; 0 turns ejection off; sidecar
    /// default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

impl OutlierDetectionSpec {
    /// The sidecar's `base` configuration with these overrides applied.
    pub fn apply(&self, base: &OutlierConfig) -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: self
                .consecutive_failures
                .unwrap_or(base.consecutive_failures),
            base_ejection: self.base_ejection.unwrap_or(base.base_ejection),
            max_ejection: self.max_ejection.unwrap_or(base.max_ejection),
            max_ejection_percent: self
                .max_ejection_percent
                .unwrap_or(base.max_ejection_percent),
        }
    }

    pub(super) fn validate(&self) -> Result<(), BackendPolicyError> {
        if self.consecutive_failures == Some(0) {
            return Err(BackendPolicyError::new(
                "consecutiveFailures",
                "must be at least 1",
            ));
        }
        if self.base_ejection == Some(Duration::ZERO) {
            return Err(BackendPolicyError::new(
                "baseEjection",
                "must be more than 0 (to turn ejection off, set maxEjectionPercent: 0)",
            ));
        }
        // Only when both are set: against the sidecar's own value the cap simply applies.
        if let (Some(base), Some(max)) = (self.base_ejection, self.max_ejection)
            && max < base
        {
            return Err(BackendPolicyError::new(
                "maxEjection",
                format!(
                    "{} is shorter than baseEjection ({})",
                    humantime::format_duration(max),
                    humantime::format_duration(base)
                ),
            ));
        }
        if let Some(percent) = self.max_ejection_percent
            && percent > 100
        {
            return Err(BackendPolicyError::new(
                "maxEjectionPercent",
                format!("{percent} is over 100"),
            ));
        }
        Ok(())
    }
}

/// Overrides of [`BreakerConfig`] for one service (its breaker per locality).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreakerSpec {
    /// Failure rate over the window above which the breaker opens (over 0, at most 1; 1 turns
    /// rate-based opening off; sidecar default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate_threshold: Option<f64>,
    /// Requests the window must hold before the rate counts (at least 1; sidecar default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
    /// Span of the rolling window (more than 0; sidecar default 10 s).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub window: Option<Duration>,
    /// Healthy endpoint share below which the breaker opens (0 to 1; 0 turns it off; sidecar
    /// default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_share_threshold: Option<f64>,
    /// Time open before probing (more than 0; sidecar default 5 s).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub cool_down: Option<Duration>,
    /// Consecutive probe successes that close it (at least 1; sidecar default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_probes: Option<u32>,
    /// Probes in flight at once while half-open (at least 1; sidecar default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_max_in_flight: Option<u32>,
}

impl CircuitBreakerSpec {
    /// The sidecar's `base` configuration with these overrides applied.
    pub fn apply(&self, base: &BreakerConfig) -> BreakerConfig {
        BreakerConfig {
            failure_rate_threshold: self
                .failure_rate_threshold
                .unwrap_or(base.failure_rate_threshold),
            min_requests: self.min_requests.unwrap_or(base.min_requests),
            window: self.window.unwrap_or(base.window),
            healthy_share_threshold: self
                .healthy_share_threshold
                .unwrap_or(base.healthy_share_threshold),
            cool_down: self.cool_down.unwrap_or(base.cool_down),
            half_open_probes: self.half_open_probes.unwrap_or(base.half_open_probes),
            half_open_max_in_flight: self
                .half_open_max_in_flight
                .unwrap_or(base.half_open_max_in_flight),
        }
    }

    pub(super) fn validate(&self) -> Result<(), BackendPolicyError> {
        if let Some(rate) = self.failure_rate_threshold
            && !(rate > 0.0 && rate <= 1.0)
        {
            return Err(BackendPolicyError::new(
                "failureRateThreshold",
                format!("{rate} must be over 0 and at most 1 (1 turns rate-based opening off)"),
            ));
        }
        if let Some(share) = self.healthy_share_threshold
            && !(0.0..=1.0).contains(&share)
        {
            return Err(BackendPolicyError::new(
                "healthyShareThreshold",
                format!("{share} must be from 0 to 1 (0 turns it off)"),
            ));
        }
        for (field, value) in [
            ("minRequests", self.min_requests),
            ("halfOpenProbes", self.half_open_probes),
            ("halfOpenMaxInFlight", self.half_open_max_in_flight),
        ] {
            if value == Some(0) {
                return Err(BackendPolicyError::new(field, "must be at least 1"));
            }
        }
        for (field, value) in [("window", self.window), ("coolDown", self.cool_down)] {
            if value == Some(Duration::ZERO) {
                return Err(BackendPolicyError::new(field, "must be more than 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_keep_the_sidecar_values() {
        let base = OutlierConfig {
            consecutive_failures: 7,
            ..OutlierConfig::default()
        };
        let spec = OutlierDetectionSpec {
            base_ejection: Some(Duration::from_secs(9)),
            max_ejection_percent: Some(50),
            ..OutlierDetectionSpec::default()
        };
        let applied = spec.apply(&base);
        assert_eq!(applied.consecutive_failures, 7);
        assert_eq!(applied.base_ejection, Duration::from_secs(9));
        assert_eq!(applied.max_ejection, base.max_ejection);
        assert_eq!(applied.max_ejection_percent, 50);

        let breaker = CircuitBreakerSpec {
            failure_rate_threshold: Some(0.9),
            cool_down: Some(Duration::from_secs(1)),
            ..CircuitBreakerSpec::default()
        }
        .apply(&BreakerConfig::default());
        let default = BreakerConfig::default();
        assert_eq!(breaker.failure_rate_threshold, 0.9);
        assert_eq!(breaker.cool_down, Duration::from_secs(1));
        assert_eq!(breaker.min_requests, default.min_requests);
        assert_eq!(breaker.window, default.window);
        assert_eq!(
            breaker.healthy_share_threshold,
            default.healthy_share_threshold
        );
        assert_eq!(breaker.half_open_probes, default.half_open_probes);
        assert_eq!(
            breaker.half_open_max_in_flight,
            default.half_open_max_in_flight
        );
    }

    #[test]
    fn outlier_values_out_of_range_name_their_field() {
        let field = |spec: OutlierDetectionSpec| spec.validate().unwrap_err().field;
        assert_eq!(
            field(OutlierDetectionSpec {
                consecutive_failures: Some(0),
                ..Default::default()
            }),
            "consecutiveFailures"
        );
        assert_eq!(
            field(OutlierDetectionSpec {
                base_ejection: Some(Duration::ZERO),
                ..Default::default()
            }),
            "baseEjection"
        );
        assert_eq!(
            field(OutlierDetectionSpec {
                base_ejection: Some(Duration::from_secs(10)),
                max_ejection: Some(Duration::from_secs(5)),
                ..Default::default()
            }),
            "maxEjection"
        );
        assert_eq!(
            field(OutlierDetectionSpec {
                max_ejection_percent: Some(101),
                ..Default::default()
            }),
            "maxEjectionPercent"
        );
        let off = OutlierDetectionSpec {
            max_ejection_percent: Some(0),
            ..Default::default()
        };
        assert_eq!(off.validate(), Ok(()));
    }

    #[test]
    fn breaker_values_out_of_range_name_their_field() {
        let field = |spec: CircuitBreakerSpec| spec.validate().unwrap_err().field;
        for rate in [0.0, 1.5, f64::NAN] {
            let spec = CircuitBreakerSpec {
                failure_rate_threshold: Some(rate),
                ..Default::default()
            };
            assert_eq!(field(spec), "failureRateThreshold", "{rate}");
        }
        let share = CircuitBreakerSpec {
            healthy_share_threshold: Some(-0.1),
            ..Default::default()
        };
        assert_eq!(field(share), "healthyShareThreshold");
        let probes = CircuitBreakerSpec {
            half_open_probes: Some(0),
            ..Default::default()
        };
        assert_eq!(field(probes), "halfOpenProbes");
        let window = CircuitBreakerSpec {
            window: Some(Duration::ZERO),
            ..Default::default()
        };
        assert_eq!(field(window), "window");
        let edges = CircuitBreakerSpec {
            failure_rate_threshold: Some(1.0),
            healthy_share_threshold: Some(0.0),
            ..Default::default()
        };
        assert_eq!(edges.validate(), Ok(()));
    }
}
