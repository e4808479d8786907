//! The four kinds' specs: `targetRef` beside the fields of the body they carry.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::super::backend_policy::{
    BackendPolicySpec, CircuitBreakerSpec, LimitsSpec, LoadBalancerSpec, OutlierDetectionSpec,
};
use super::super::fault::{AbortFault, DelayFault, FaultSpec};
use super::super::http_cache::CacheRule;
use super::super::rate_limit::{Rate, RateLimitMode, RateLimitOverride, RateLimitSpec};
use super::{AttachmentError, PolicyTarget, PolicyTargetRef, TargetKind, error};

/// The `spec` of a `FaultPolicy`: client-side faults injected into a route's requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultPolicy {
    /// The `HTTPRoute` (or one of its rules).
    pub target_ref: PolicyTargetRef,
    /// As [`FaultSpec::delay`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayFault>,
    /// As [`FaultSpec::abort`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortFault>,
}

impl FaultPolicy {
    /// What it targets.
    pub const TARGETS: &'static [TargetKind] = &[TargetKind::Route];

    /// The body.
    pub fn fault(&self) -> FaultSpec {
        FaultSpec {
            delay: self.delay.clone(),
            abort: self.abort.clone(),
        }
    }

    /// Checks the target and the body.
    pub fn validate(&self) -> Result<PolicyTarget, AttachmentError> {
        let target = self.target_ref.target(Self::TARGETS)?;
        self.fault()
            .validate()
            .map_err(|e| error(e.field, e.reason))?;
        Ok(target)
    }
}

/// The `spec` of a `RateLimitPolicy`: a route's limit in each calling sidecar, or a service's
/// limit in each sidecar serving it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitPolicy {
    /// The `HTTPRoute` (or one of its rules), or the `Service`.
    pub target_ref: PolicyTargetRef,
    /// As [`RateLimitSpec::total`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Rate>,
    /// As [`RateLimitSpec::identity`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Rate>,
    /// As [`RateLimitSpec::overrides`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<RateLimitOverride>,
    /// As [`RateLimitSpec::mode`]; default `enforce`.
    #[serde(default)]
    pub mode: RateLimitMode,
}

impl RateLimitPolicy {
    /// What it targets.
    pub const TARGETS: &'static [TargetKind] = &[TargetKind::Route, TargetKind::Service];

    /// The body.
    pub fn rate_limit(&self) -> RateLimitSpec {
        RateLimitSpec {
            total: self.total,
            identity: self.identity,
            overrides: self.overrides.clone(),
            mode: self.mode,
        }
    }

    /// Checks the target and the body.
    pub fn validate(&self) -> Result<PolicyTarget, AttachmentError> {
        let target = self.target_ref.target(Self::TARGETS)?;
        self.rate_limit()
            .validate()
            .map_err(|e| error(e.field, e.reason))?;
        Ok(target)
    }
}

/// The `spec` of a `CachePolicy`: the response cache of a route's requests. Unset fields take
/// [`CacheRule`]'s defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CachePolicy {
    /// The `HTTPRoute` (or one of its rules).
    pub target_ref: PolicyTargetRef,
    /// As [`CacheRule::max_entry_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entry_bytes: Option<u64>,
    /// As [`CacheRule::allow_authorized`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_authorized: Option<bool>,
    /// As [`CacheRule::heuristic_fraction`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heuristic_fraction: Option<f64>,
    /// As [`CacheRule::heuristic_cap`].
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub heuristic_cap: Option<Duration>,
    /// As [`CacheRule::methods`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
}

impl CachePolicy {
    /// What it targets.
    pub const TARGETS: &'static [TargetKind] = &[TargetKind::Route];

    /// The body, with the defaults of unset fields.
    pub fn cache_rule(&self) -> CacheRule {
        let d = CacheRule::default();
        CacheRule {
            max_entry_bytes: self.max_entry_bytes.unwrap_or(d.max_entry_bytes),
            allow_authorized: self.allow_authorized.unwrap_or(d.allow_authorized),
            heuristic_fraction: self.heuristic_fraction.unwrap_or(d.heuristic_fraction),
            heuristic_cap: self.heuristic_cap.unwrap_or(d.heuristic_cap),
            methods: self.methods.clone().unwrap_or(d.methods),
        }
    }

    /// Checks the target and the body.
    pub fn validate(&self) -> Result<PolicyTarget, AttachmentError> {
        let target = self.target_ref.target(Self::TARGETS)?;
        self.cache_rule()
            .validate()
            .map_err(|e| error(e.field, e.reason))?;
        Ok(target)
    }
}

/// The `spec` of a `BackendPolicy`: how a service's endpoints are chosen and protected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendPolicy {
    /// The `Service`.
    pub target_ref: PolicyTargetRef,
    /// As [`BackendPolicySpec::load_balancer`]; default `p2cEwma`.
    #[serde(default)]
    pub load_balancer: LoadBalancerSpec,
    /// As [`BackendPolicySpec::outlier_detection`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionSpec>,
    /// As [`BackendPolicySpec::circuit_breaker`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// As [`BackendPolicySpec::limits`]; default unlimited.
    #[serde(default, skip_serializing_if = "LimitsSpec::is_unlimited")]
    pub limits: LimitsSpec,
}

impl BackendPolicy {
    /// What it targets.
    pub const TARGETS: &'static [TargetKind] = &[TargetKind::Service];

    /// The body.
    pub fn backend(&self) -> BackendPolicySpec {
        BackendPolicySpec {
            load_balancer: self.load_balancer.clone(),
            outlier_detection: self.outlier_detection.clone(),
            circuit_breaker: self.circuit_breaker.clone(),
            limits: self.limits.clone(),
        }
    }

    /// Checks the target and the body.
    pub fn validate(&self) -> Result<PolicyTarget, AttachmentError> {
        let target = self.target_ref.target(Self::TARGETS)?;
        self.backend()
            .validate()
            .map_err(|e| error(e.field, e.reason))?;
        Ok(target)
    }
}
