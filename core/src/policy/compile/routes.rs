//! One `HTTPRoute` checked and turned into the rules of each of its parent services.

use super::super::documents::PolicyObject;
use super::super::filters::service_ref;
use super::super::http_route::{HttpRouteRule, HttpRouteSpec, parse_gateway_duration};
use super::super::route_match::RouteMatch;
use super::super::router::Router;
use super::super::service_policy::{RouteRule, RuleBackend, RuleOrigin, RuleRetry, ServicePolicy};
use super::{Condition, Refusal};
use crate::names::ServiceKey;

/// The rules of one route per parent, each with its compiled matches.
pub(super) type ParentRules = Vec<(ServiceKey, Vec<(RouteRule, Vec<RouteMatch>)>)>;

/// The rules of one route per parent, or why the route is not accepted. Backends that do not
/// resolve are kept, marked invalid (500 for their share), and `resolved` says why.
pub(super) fn route_rules(
    object: &PolicyObject,
    spec: &HttpRouteSpec,
    known: &dyn Fn(&ServiceKey) -> bool,
    resolved: &mut Condition,
) -> Result<ParentRules, Refusal> {
    let namespace = &object.meta.namespace;
    let route = format!("{namespace}/{}", object.meta.name);
    if !spec.hostnames.is_empty() {
        return Err((
            "UnsupportedValue",
            "spec.hostnames: mesh routes bind to a Service and match no host names (GAMMA)".into(),
        ));
    }
    if spec.parent_refs.is_empty() {
        return Err((
            "NoMatchingParent",
            "spec.parentRefs: a mesh route needs a Service parent".into(),
        ));
    }
    let mut parents = Vec::new();
    for (i, p) in spec.parent_refs.iter().enumerate() {
        let field = format!("spec.parentRefs[{i}]");
        if p.group.as_deref().is_some_and(|g| !g.is_empty())
            || p.kind.as_deref().is_some_and(|k| k != "Service")
        {
            return Err((
                "NoMatchingParent",
                format!(
                    "{field}: the parent of a mesh route is a Service (group \"\", kind Service)"
                ),
            ));
        }
        let parent_ns = p.namespace.as_deref().unwrap_or(namespace);
        if parent_ns != namespace {
            return Err((
                "UnsupportedValue",
                format!(
                    "{field}.namespace: consumer routes (a route in another namespace than its Service) are not supported; put the route in {parent_ns}"
                ),
            ));
        }
        let key = ServiceKey::new(&p.name, parent_ns)
            .map_err(|e| ("NoMatchingParent", format!("{field}.name: {e}")))?;
        if !known(&key) {
            return Err((
                "NoMatchingParent",
                format!("{field}: service {key} is not known in any cluster"),
            ));
        }
        parents.push(key);
    }
    let mut per_parent: ParentRules = parents.iter().map(|p| (p.clone(), Vec::new())).collect();
    for (index, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{index}]");
        for (parent, rules) in per_parent.iter_mut() {
            let compiled = route_rule(
                &route,
                object.created,
                index,
                rule,
                parent,
                known,
                resolved,
                &at,
            )?;
            // The sidecar's own compilation, so nothing a sidecar would refuse is sent.
            Router::new(
                &ServicePolicy {
                    rules: vec![compiled.clone()],
                    ..Default::default()
                },
                namespace,
            )
            .map_err(|e| {
                (
                    "UnsupportedValue",
                    format!("{at}: {}: {}", e.field, e.reason),
                )
            })?;
            let ms = if compiled.matches.is_empty() {
                vec![RouteMatch::default()]
            } else {
                compiled
                    .matches
                    .iter()
                    .map(|m| m.compile().expect("checked by the router"))
                    .collect()
            };
            rules.push((compiled, ms));
        }
    }
    if spec.rules.is_empty() {
        // The Gateway API's default rule: every request to the parent, to the parent.
        for (parent, rules) in per_parent.iter_mut() {
            let rule = HttpRouteRule::default();
            let compiled = route_rule(
                &route,
                object.created,
                0,
                &rule,
                parent,
                known,
                resolved,
                "spec.rules",
            )?;
            rules.push((compiled, vec![RouteMatch::default()]));
        }
    }
    Ok(per_parent)
}

#[allow(clippy::too_many_arguments)]
fn route_rule(
    route: &str,
    created: i64,
    index: usize,
    rule: &HttpRouteRule,
    parent: &ServiceKey,
    known: &dyn Fn(&ServiceKey) -> bool,
    resolved: &mut Condition,
    at: &str,
) -> Result<RouteRule, Refusal> {
    let unsupported =
        |field: &str, why: String| ("UnsupportedValue", format!("{at}.{field}: {why}"));
    if rule.session_persistence.is_some() {
        return Err(unsupported(
            "sessionPersistence",
            "not supported: use a BackendPolicy with consistentHash for session affinity".into(),
        ));
    }
    let redirects = rule.filters.iter().any(|f| f.request_redirect.is_some());
    if redirects && !rule.backend_refs.is_empty() {
        return Err(unsupported(
            "backendRefs",
            "a rule with a RequestRedirect has no backends".into(),
        ));
    }
    let mut backends = Vec::new();
    for (i, b) in rule.backend_refs.iter().enumerate() {
        let field = format!("{at}.backendRefs[{i}]");
        if !b.filters.is_empty() {
            return Err((
                "UnsupportedValue",
                format!(
                    "{field}.filters: per-backend filters are not supported; put them on the rule"
                ),
            ));
        }
        if b.weight > super::super::http_route::MAX_WEIGHT {
            return Err((
                "UnsupportedValue",
                format!("{field}.weight: {} is above 1000000", b.weight),
            ));
        }
        let (service, invalid) = match service_ref(&b.target, &parent.namespace, &field) {
            Ok(s) if known(&s) => (s, None),
            Ok(s) => {
                let why = format!("{field}: service {s} is not known in any cluster");
                mark(resolved, "BackendNotFound", &why);
                (s, Some(why))
            }
            Err(e) => {
                mark(resolved, "InvalidKind", &e.to_string());
                (parent.clone(), Some(e.to_string()))
            }
        };
        backends.push(RuleBackend {
            service,
            weight: b.weight,
            invalid,
        });
    }
    if backends.is_empty() {
        backends.push(RuleBackend {
            service: parent.clone(),
            weight: 1,
            invalid: None,
        });
    }
    let duration = |field: &str, text: &Option<String>| {
        text.as_deref()
            .map(|t| parse_gateway_duration(t).map_err(|e| unsupported(field, e)))
            .transpose()
    };
    let (request_timeout, backend_timeout) = match &rule.timeouts {
        Some(t) => (
            duration("timeouts.request", &t.request)?,
            duration("timeouts.backendRequest", &t.backend_request)?,
        ),
        None => (None, None),
    };
    let retry = match &rule.retry {
        None => None,
        Some(r) => {
            if let Some((i, c)) = r
                .codes
                .iter()
                .enumerate()
                .find(|(_, c)| !(400..=599).contains(*c))
            {
                return Err(unsupported(
                    &format!("retry.codes[{i}]"),
                    format!("{c} is not a status from 400 to 599"),
                ));
            }
            Some(RuleRetry {
                codes: r.codes.clone(),
                attempts: r.attempts.unwrap_or(1),
                backoff: duration("retry.backoff", &r.backoff)?,
            })
        }
    };
    Ok(RouteRule {
        origin: RuleOrigin {
            route: route.to_string(),
            created,
            index,
            name: rule.name.clone(),
        },
        matches: rule.matches.clone(),
        filters: rule.filters.clone(),
        backends,
        request_timeout,
        backend_timeout,
        retry,
        fault: None,
        rate_limit: None,
        cache: None,
    })
}

fn mark(resolved: &mut Condition, reason: &str, message: &str) {
    if resolved.status {
        *resolved = Condition {
            kind: "ResolvedRefs".into(),
            status: false,
            reason: reason.into(),
            message: message.into(),
        };
    }
}
