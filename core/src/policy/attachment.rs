//! Our policy kinds (API group `mesh.dev`, version `mesh.dev/v1alpha1`), for what the Gateway
//! API does not cover: `FaultPolicy`, `RateLimitPolicy`, `CachePolicy` and `BackendPolicy`.
//! Each is shaped like a Gateway API policy attachment (GEP-713): `spec.targetRef` names the
//! object it applies to, in the policy's own namespace, and the rest of `spec` is the body,
//! written directly in `spec` with the fields of the existing spec type:
//!
//! ```yaml
//! apiVersion: mesh.dev/v1alpha1
//! kind: FaultPolicy
//! metadata: {name: echo-faults, namespace: demo}
//! spec:
//!   targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: echo-split, sectionName: api}
//!   abort: {httpStatus: 503, percentage: 20}
//! ```
//!
//! | kind | targets | body |
//! |---|---|---|
//! | `FaultPolicy` | an `HTTPRoute` (all rules, or the rule named by `sectionName`) | [`FaultSpec`] |
//! | `CachePolicy` | an `HTTPRoute` (same) | [`CacheRule`] |
//! | `RateLimitPolicy` | an `HTTPRoute` (client side, per rule) or a `Service` (its inbound servers) | [`RateLimitSpec`] |
//! | `BackendPolicy` | a `Service` | [`BackendPolicySpec`] |
//!
//! Each kind is one struct with `targetRef` and the body's fields side by side, rather than the
//! body under `#[serde(flatten)]`: serde cannot refuse unknown fields through `flatten`, and a
//! flattened body is buffered, which loses the line of a bad value. The body's field list is
//! repeated here; a test checks that every field of each body is read.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::backend_policy::{
    BackendPolicySpec, CircuitBreakerSpec, LimitsSpec, LoadBalancerSpec, OutlierDetectionSpec,
};
use super::fault::{AbortFault, DelayFault, FaultSpec};
use super::http_cache::CacheRule;
use super::rate_limit::{Rate, RateLimitMode, RateLimitOverride, RateLimitSpec};

/// The API group of our kinds.
pub const MESH_API_GROUP: &str = "mesh.dev";
/// The `apiVersion` our kinds are read as.
pub const MESH_API_VERSION: &str = "mesh.dev/v1alpha1";
/// The Gateway API's group, the group of an `HTTPRoute` target.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// Why a policy's spec is refused; names the field under `spec`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct AttachmentError {
    /// The field, under `spec` (`targetRef.kind`, `total.requestsPerSecond`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn error(field: impl Into<String>, reason: impl Into<String>) -> AttachmentError {
    AttachmentError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `spec.targetRef`: the object a policy applies to, in the policy's namespace (the Gateway
/// API's `LocalPolicyTargetReferenceWithSectionName`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyTargetRef {
    /// `gateway.networking.k8s.io` for an `HTTPRoute`, `""` (core) for a `Service`; required,
    /// as upstream, so that a kind is never read in the wrong group.
    pub group: String,
    /// `HTTPRoute` or `Service`.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// For an `HTTPRoute`: the `name` of the one rule the policy applies to; unset, every rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// Which kinds of object a policy kind may target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// An `HTTPRoute`.
    Route,
    /// A `Service`.
    Service,
}

/// What a policy applies to, checked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyTarget {
    /// An `HTTPRoute` of the policy's namespace: one named rule, or all (`rule: None`).
    Route {
        /// The route's name.
        name: String,
        /// The rule's name (`sectionName`).
        rule: Option<String>,
    },
    /// A `Service` of the policy's namespace.
    Service {
        /// The service's name.
        name: String,
    },
}

impl PolicyTargetRef {
    /// The target, if its group and kind are among `allowed` and its names are usable.
    pub fn target(&self, allowed: &[TargetKind]) -> Result<PolicyTarget, AttachmentError> {
        let kind = match (self.group.as_str(), self.kind.as_str()) {
            (GATEWAY_API_GROUP, "HTTPRoute") => TargetKind::Route,
            ("", "Service") => TargetKind::Service,
            (group, "HTTPRoute") => {
                return Err(error(
                    "targetRef.group",
                    format!("an HTTPRoute is in group {GATEWAY_API_GROUP}, not {group:?}"),
                ));
            }
            (group, "Service") => {
                return Err(error(
                    "targetRef.group",
                    format!("a Service is in the core group \"\", not {group:?}"),
                ));
            }
            (_, other) => return Err(error("targetRef.kind", refused_kind(other, allowed))),
        };
        if !allowed.contains(&kind) {
            return Err(error("targetRef.kind", refused_kind(&self.kind, allowed)));
        }
        if self.name.is_empty() {
            return Err(error("targetRef.name", "must name the target"));
        }
        match kind {
            TargetKind::Route => {
                if self.section_name.as_deref() == Some("") {
                    return Err(error(
                        "targetRef.sectionName",
                        "must name a rule of the route, or be left out for every rule",
                    ));
                }
                Ok(PolicyTarget::Route {
                    name: self.name.clone(),
                    rule: self.section_name.clone(),
                })
            }
            TargetKind::Service => {
                crate::names::check_label(&self.name)
                    .map_err(|e| error("targetRef.name", e.to_string()))?;
                if self.section_name.is_some() {
                    return Err(error(
                        "targetRef.sectionName",
                        "a policy on a Service covers all of its ports; per-port policies are \
                         not supported",
                    ));
                }
                Ok(PolicyTarget::Service {
                    name: self.name.clone(),
                })
            }
        }
    }
}

fn refused_kind(kind: &str, allowed: &[TargetKind]) -> String {
    let names: Vec<&str> = allowed
        .iter()
        .map(|k| match k {
            TargetKind::Route => "HTTPRoute",
            TargetKind::Service => "Service",
        })
        .collect();
    format!(
        "{kind:?} cannot be targeted by this policy (only {})",
        names.join(" or ")
    )
}

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

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    use super::*;

    const ROUTE: &str =
        "targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: echo-split}\n";
    const SERVICE: &str = "targetRef: {group: '', kind: Service, name: echo}\n";

    fn parse<T: DeserializeOwned>(yaml: &str) -> Result<T, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    /// `body` (a full body as JSON) with a target, read as `T`.
    fn with_target<T: DeserializeOwned>(body: Value, target: Value) -> T {
        let mut spec = body;
        spec["targetRef"] = target;
        serde_json::from_value(spec).unwrap()
    }

    fn route_target() -> Value {
        json!({"group": GATEWAY_API_GROUP, "kind": "HTTPRoute", "name": "r"})
    }

    fn service_target() -> Value {
        json!({"group": "", "kind": "Service", "name": "echo"})
    }

    #[test]
    fn every_field_of_each_body_is_read() {
        // Bodies with every field set, as the body types themselves write them: a field added to
        // a body and not here is refused as unknown, and this test fails.
        let fault: FaultSpec = parse(
            "delay: {fixedDelay: 200ms, percentage: 10}\nabort: {httpStatus: 503, percentage: 20}\n",
        )
        .unwrap();
        let p: FaultPolicy = with_target(serde_json::to_value(&fault).unwrap(), route_target());
        assert_eq!(p.fault(), fault);
        let limit: RateLimitSpec = parse(
            "total: {requestsPerSecond: 100, burst: 5}\nidentity: {requestsPerSecond: 10}\n\
             overrides: [{requestsPerSecond: 50, burst: 1, identities: [spiffe://a.mesh/ns/d/sa/x]}]\n\
             mode: shadow\n",
        )
        .unwrap();
        let p: RateLimitPolicy =
            with_target(serde_json::to_value(&limit).unwrap(), service_target());
        assert_eq!(p.rate_limit(), limit);
        let cache: CacheRule = parse(
            "maxEntryBytes: 10\nallowAuthorized: true\nheuristicFraction: 0.5\n\
             heuristicCap: 1h\nmethods: [GET]\n",
        )
        .unwrap();
        let p: CachePolicy = with_target(serde_json::to_value(&cache).unwrap(), route_target());
        assert_eq!(p.cache_rule(), cache);
        let backend: BackendPolicySpec = parse(
            "loadBalancer: {consistentHash: {header: x-user}}\n\
             outlierDetection: {consecutiveFailures: 3}\ncircuitBreaker: {minRequests: 5}\n\
             limits: {maxConnections: 2}\n",
        )
        .unwrap();
        let p: BackendPolicy =
            with_target(serde_json::to_value(&backend).unwrap(), service_target());
        assert_eq!(p.backend(), backend);
    }

    #[test]
    fn unset_cache_fields_take_the_rules_defaults() {
        let p: CachePolicy = parse(ROUTE).unwrap();
        assert_eq!(p.cache_rule(), CacheRule::default());
        let p: CachePolicy = parse(&format!("{ROUTE}heuristicCap: 2m\n")).unwrap();
        assert_eq!(p.cache_rule().heuristic_cap, Duration::from_secs(120));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<CachePolicy>(&json).unwrap(), p);
    }

    #[test]
    fn unknown_fields_are_refused_beside_the_target() {
        let e = parse::<FaultPolicy>(&format!("{ROUTE}abrot: {{httpStatus: 503}}\n")).unwrap_err();
        assert!(e.contains("abrot"), "{e}");
        let e =
            parse::<BackendPolicy>(&format!("{SERVICE}loadBalancing: roundRobin\n")).unwrap_err();
        assert!(e.contains("loadBalancing"), "{e}");
        let e = parse::<RateLimitPolicy>(
            "targetRef: {group: '', kind: Service, name: echo, port: 80}\n",
        )
        .unwrap_err();
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn targets_are_checked_per_kind() {
        let p: RateLimitPolicy =
            parse(&format!("{SERVICE}total: {{requestsPerSecond: 1}}\n")).unwrap();
        assert_eq!(
            p.validate(),
            Ok(PolicyTarget::Service {
                name: "echo".into()
            })
        );
        let p: RateLimitPolicy = parse(
            "targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: api}\n\
             total: {requestsPerSecond: 1}\n",
        )
        .unwrap();
        assert_eq!(
            p.validate(),
            Ok(PolicyTarget::Route {
                name: "r".into(),
                rule: Some("api".into())
            })
        );
        let field = |e: AttachmentError| e.to_string();
        let p: FaultPolicy = parse(&format!(
            "{SERVICE}abort: {{httpStatus: 503, percentage: 1}}\n"
        ))
        .unwrap();
        assert_eq!(
            field(p.validate().unwrap_err()),
            "targetRef.kind: \"Service\" cannot be targeted by this policy (only HTTPRoute)"
        );
        let p: BackendPolicy = parse(ROUTE).unwrap();
        assert!(
            field(p.validate().unwrap_err()).starts_with("targetRef.kind: \"HTTPRoute\""),
            "a backend policy is per service"
        );
        let p: BackendPolicy =
            parse("targetRef: {group: core, kind: Service, name: echo}\n").unwrap();
        assert!(field(p.validate().unwrap_err()).starts_with("targetRef.group: "));
        let p: BackendPolicy =
            parse("targetRef: {group: '', kind: Service, name: echo, sectionName: http}\n")
                .unwrap();
        assert!(field(p.validate().unwrap_err()).starts_with("targetRef.sectionName: "));
        let p: BackendPolicy =
            parse("targetRef: {group: '', kind: Service, name: Echo}\n").unwrap();
        assert!(field(p.validate().unwrap_err()).starts_with("targetRef.name: "));
        let p: CachePolicy = parse("targetRef: {group: x.io, kind: HTTPRoute, name: r}\n").unwrap();
        assert!(field(p.validate().unwrap_err()).starts_with("targetRef.group: "));
    }

    #[test]
    fn bodies_are_validated_naming_the_field() {
        let p: RateLimitPolicy =
            parse(&format!("{SERVICE}total: {{requestsPerSecond: 0}}\n")).unwrap();
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "total.requestsPerSecond: must be at least 1"
        );
        let p: CachePolicy = parse(&format!("{ROUTE}methods: [GET, POST]\n")).unwrap();
        let e = p.validate().unwrap_err();
        assert_eq!(e.field, "methods[1]");
        assert!(e.reason.contains("non-cacheable method"), "{e}");
        let p: FaultPolicy = parse(ROUTE).unwrap();
        assert_eq!(p.validate().unwrap_err().field, "delay");
        let p: BackendPolicy = parse(&format!("{SERVICE}limits: {{maxConnections: 0}}\n")).unwrap();
        assert_eq!(p.validate().unwrap_err().field, "limits.maxConnections");
    }
}
