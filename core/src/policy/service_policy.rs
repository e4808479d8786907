//! The policy of one service as the controller distributes it in sidecar snapshots: its route
//! rules (from every `HTTPRoute` whose parent it is) with what our policy objects attach to
//! them, already checked by the controller (`compile`). Sidecars turn it into a `Router`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::authorization::{AuthorizationRules, NamespaceDefault};
use super::backend_policy::BackendPolicySpec;
use super::fault::FaultSpec;
use super::http_cache::CacheRule;
use super::http_route::{HttpRouteFilter, HttpRouteMatch};
use super::rate_limit::RateLimitSpec;
use crate::names::ServiceKey;

/// What governs the requests to one service. The default (no rules) is the implicit routing
/// every service has without a route: each request to the service goes to the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ServicePolicy {
    /// The rules of every route attached to the service; a request matching none of them
    /// gets 404, as the Gateway API says, once there is at least one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RouteRule>,
    /// How its endpoints are chosen and protected (`BackendPolicy` targeting the service);
    /// `None`: the sidecar's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendPolicySpec>,
    /// The rate limit of the service's inbound servers (`RateLimitPolicy` targeting the
    /// service), applied by the sidecars serving it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_rate_limit: Option<RateLimitSpec>,
    /// The `AuthorizationPolicy`s targeting the service or its namespace, oldest first,
    /// checked by the sidecars serving it; empty: the namespace's default decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization: Vec<AuthorizationRules>,
    /// The namespace's default when the service has no ALLOW policy; `None`: allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_default: Option<NamespaceDefault>,
}

impl ServicePolicy {
    /// Whether the service has no policy at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
            && self.backend.is_none()
            && self.inbound_rate_limit.is_none()
            && self.authorization.is_empty()
            && self.authorization_default.is_none()
    }
}

/// Where a rule comes from: for precedence ties, logs, metrics and answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleOrigin {
    /// `<namespace>/<name>` of the route.
    pub route: String,
    /// The route's creation time (Unix seconds; older routes win ties).
    #[serde(default)]
    pub created: i64,
    /// The rule's index in the route.
    pub index: usize,
    /// The rule's name, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl std::fmt::Display for RuleOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{name}", self.route),
            None => write!(f, "{}/rules[{}]", self.route, self.index),
        }
    }
}

/// One rule of a route, for one parent service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteRule {
    /// Where it comes from.
    pub origin: RuleOrigin,
    /// Its matches (OR); empty means `PathPrefix /`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    /// Its filters, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    /// Its backends with their weights; never empty (the parent service when the route names
    /// none).
    pub backends: Vec<RuleBackend>,
    /// Bounds the whole request (every try) until the response head; `None`: the sidecar's
    /// default.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_timeout: Option<Duration>,
    /// Bounds each try until its response head; `None`: the sidecar's default.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_timeout: Option<Duration>,
    /// Retries of this rule's requests; `None`: the sidecar's default policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RuleRetry>,
    /// Client-side faults injected into this rule's requests (`FaultPolicy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultSpec>,
    /// The rate limit of this rule's requests, applied by the calling sidecar
    /// (`RateLimitPolicy` targeting the route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Response caching of this rule's requests (`CachePolicy`); `None`: no caching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheRule>,
}

impl RouteRule {
    /// A rule from `origin` that sends every request to `service`, with no other setting
    /// (the sidecar's defaults apply).
    pub fn to_service(origin: RuleOrigin, service: ServiceKey) -> Self {
        Self {
            origin,
            matches: Vec::new(),
            filters: Vec::new(),
            backends: vec![RuleBackend {
                service,
                weight: 1,
                invalid: None,
            }],
            request_timeout: None,
            backend_timeout: None,
            retry: None,
            fault: None,
            rate_limit: None,
            cache: None,
        }
    }
}

/// A backend of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleBackend {
    /// The service.
    pub service: ServiceKey,
    /// Its weight among the rule's backends.
    pub weight: u32,
    /// Why the reference is invalid (a missing service, a kind that is no Service): its share
    /// of the requests gets 500, as the Gateway API says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

/// A rule's retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRetry {
    /// Statuses retried, beside connection failures (always retried).
    pub codes: Vec<u16>,
    /// Tries after the first.
    pub attempts: u32,
    /// The least wait before each retry.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub backoff: Option<Duration>,
}
