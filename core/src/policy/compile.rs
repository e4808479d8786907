//! From policy objects to what sidecars get (pure): each `HTTPRoute` is checked, its
//! references resolved against the services the controller knows, and its rules attached to
//! its parent services' [`ServicePolicy`]; each object gets the Gateway API's status conditions
//! (`Accepted`, `ResolvedRefs`) with a reason. A local policy file with any condition false is
//! refused as a whole (the last good policy stays); in Kubernetes an object that is not
//! accepted is left out and the others apply.

use std::collections::BTreeMap;

use super::documents::{DocumentError, PolicyObject, PolicySpec, SourceRef};
use super::filters::service_ref;
use super::http_route::{HttpRouteRule, HttpRouteSpec, parse_gateway_duration};
use super::route_match::RouteMatch;
use super::router::Router;
use super::service_policy::{RouteRule, RuleBackend, RuleOrigin, RuleRetry, ServicePolicy};
use crate::names::ServiceKey;

/// A status condition of an object, as the Gateway API words them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Condition {
    /// `Accepted` or `ResolvedRefs`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether it holds.
    pub status: bool,
    /// `Accepted`, `NoMatchingParent`, `UnsupportedValue`, `Conflicted`, `ResolvedRefs`,
    /// `BackendNotFound`, `InvalidKind`.
    pub reason: String,
    /// What is wrong, with the field.
    pub message: String,
}

/// The conditions of one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectStatus {
    /// The kind.
    pub kind: String,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// Where it was read (`file: line N`).
    pub source: String,
    /// `Accepted` then `ResolvedRefs`.
    pub conditions: Vec<Condition>,
}

impl ObjectStatus {
    /// Whether every condition holds.
    pub fn healthy(&self) -> bool {
        self.conditions.iter().all(|c| c.status)
    }

    /// Whether the object is applied (accepted).
    pub fn accepted(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.kind == "Accepted" && c.status)
    }
}

/// What a set of objects compiles to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompiledPolicy {
    /// The policy of every service some accepted object governs.
    pub services: BTreeMap<ServiceKey, ServicePolicy>,
    /// Every object's conditions, in the order given.
    pub statuses: Vec<ObjectStatus>,
    /// Every false condition, as errors naming where (for refusing a local file).
    pub errors: Vec<DocumentError>,
}

/// Compiles `objects`; `known` says whether a service exists in some cluster.
pub fn compile(objects: &[PolicyObject], known: &dyn Fn(&ServiceKey) -> bool) -> CompiledPolicy {
    let mut out = CompiledPolicy::default();
    // Each accepted route's rules per parent, with the compiled matches to find conflicts.
    let mut attached: BTreeMap<ServiceKey, Vec<(usize, RouteRule, Vec<RouteMatch>)>> =
        BTreeMap::new();
    for (i, object) in objects.iter().enumerate() {
        let PolicySpec::HttpRoute(spec) = &object.spec;
        let mut resolved = Condition {
            kind: "ResolvedRefs".into(),
            status: true,
            reason: "ResolvedRefs".into(),
            message: "every reference resolves".into(),
        };
        let accepted = match route_rules(object, spec, known, &mut resolved) {
            Ok(per_parent) => {
                for (parent, rules) in per_parent {
                    attached
                        .entry(parent)
                        .or_default()
                        .extend(rules.into_iter().map(|(r, m)| (i, r, m)));
                }
                Condition {
                    kind: "Accepted".into(),
                    status: true,
                    reason: "Accepted".into(),
                    message: "the route is attached to its parents".into(),
                }
            }
            Err((reason, message)) => Condition {
                kind: "Accepted".into(),
                status: false,
                reason: reason.into(),
                message,
            },
        };
        out.statuses.push(ObjectStatus {
            kind: object.spec.kind().into(),
            namespace: object.meta.namespace.clone(),
            name: object.meta.name.clone(),
            source: object.source.to_string(),
            conditions: vec![accepted, resolved],
        });
    }
    // Two routes with the same match on one service conflict: the newer is not accepted.
    for (parent, rules) in &attached {
        for (a, (ia, ra, ma)) in rules.iter().enumerate() {
            for (ib, rb, mb) in &rules[..a] {
                if ia == ib {
                    continue;
                }
                if let Some(m) = ma.iter().position(|m| mb.contains(m)) {
                    let (newer, older) = if (objects[*ia].created, &ra.origin.route)
                        > (objects[*ib].created, &rb.origin.route)
                    {
                        (*ia, rb)
                    } else {
                        (*ib, ra)
                    };
                    let status = &mut out.statuses[newer].conditions[0];
                    if status.status {
                        *status = Condition {
                            kind: "Accepted".into(),
                            status: false,
                            reason: "Conflicted".into(),
                            message: format!(
                                "matches[{m}] of a rule for {parent} is also matched by the older {} ({}): remove one",
                                older.origin,
                                objects[if newer == *ia { *ib } else { *ia }].source
                            ),
                        };
                    }
                }
            }
        }
    }
    for (parent, rules) in attached {
        let rules: Vec<RouteRule> = rules
            .into_iter()
            .filter(|(i, _, _)| out.statuses[*i].accepted())
            .map(|(_, r, _)| r)
            .collect();
        if !rules.is_empty() {
            out.services.insert(
                parent,
                ServicePolicy {
                    rules,
                    ..Default::default()
                },
            );
        }
    }
    for (object, status) in objects.iter().zip(&out.statuses) {
        for c in status.conditions.iter().filter(|c| !c.status) {
            out.errors.push(DocumentError {
                location: object.source.clone(),
                message: format!("{} ({}): {}", object.display_name(), c.reason, c.message),
            });
        }
    }
    out
}

type Refusal = (&'static str, String);
type ParentRules = Vec<(ServiceKey, Vec<(RouteRule, Vec<RouteMatch>)>)>;

/// The rules of one route per parent, or why the route is not accepted. Backends that do not
/// resolve are kept, marked invalid (500 for their share), and `resolved` says why.
fn route_rules(
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
        if b.weight > super::http_route::MAX_WEIGHT {
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

/// Where a compiled object came from, for messages.
pub fn source_of(
    objects: &[PolicyObject],
    kind: &str,
    namespace: &str,
    name: &str,
) -> Option<SourceRef> {
    objects
        .iter()
        .find(|o| o.spec.kind() == kind && o.meta.namespace == namespace && o.meta.name == name)
        .map(|o| o.source.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::documents::parse_documents;

    fn known(k: &ServiceKey) -> bool {
        k.namespace == "demo" && ["echo", "echo-canary", "other"].contains(&k.name.as_str())
    }

    fn route(name: &str, body: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n{body}"
        )
    }

    fn compile_text(text: &str) -> CompiledPolicy {
        compile(&parse_documents(text, "p.yaml", 0).unwrap(), &known)
    }

    #[test]
    fn a_split_attaches_to_its_parent() {
        let c = compile_text(&route(
            "split",
            "  parentRefs: [{name: echo}]\n  rules:\n  - backendRefs: [{name: echo, weight: 90}, {name: echo-canary, weight: 10}]\n    timeouts: {request: 2s, backendRequest: 500ms}\n    retry: {codes: [503], attempts: 2}\n",
        ));
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let echo = &c.services[&ServiceKey::new("echo", "demo").unwrap()];
        assert_eq!(echo.rules[0].backends.len(), 2);
        assert_eq!(
            echo.rules[0].request_timeout,
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(echo.rules[0].retry.as_ref().unwrap().attempts, 2);
    }

    #[test]
    fn missing_services_are_named() {
        let c = compile_text(&route("a", "  parentRefs: [{name: nope}]\n"));
        assert_eq!(c.statuses[0].conditions[0].reason, "NoMatchingParent");
        assert!(c.errors[0].to_string().starts_with("p.yaml: line 1: HTTPRoute demo/a (NoMatchingParent): spec.parentRefs[0]: service nope.demo"), "{}", c.errors[0]);
        let c = compile_text(&route(
            "b",
            "  parentRefs: [{name: echo}]\n  rules: [{backendRefs: [{name: gone}]}]\n",
        ));
        assert_eq!(c.statuses[0].conditions[1].reason, "BackendNotFound");
        let rule = &c.services[&ServiceKey::new("echo", "demo").unwrap()].rules[0];
        assert!(rule.backends[0].invalid.is_some());
    }

    #[test]
    fn the_newer_of_two_conflicting_routes_is_refused() {
        let body = "  parentRefs: [{name: echo}]\n  rules: [{matches: [{path: {type: Exact, value: /x}}], backendRefs: [{name: other}]}]\n";
        let c = compile_text(&format!(
            "{}---\n{}",
            route("old", body),
            route("new", body)
        ));
        assert!(c.statuses[0].accepted());
        assert_eq!(c.statuses[1].conditions[0].reason, "Conflicted");
        assert!(
            c.errors[0].to_string().contains("line 8"),
            "{}",
            c.errors[0]
        );
        assert_eq!(
            c.services[&ServiceKey::new("echo", "demo").unwrap()]
                .rules
                .len(),
            1
        );
    }

    #[test]
    fn zero_weights_and_bad_regexes_are_refused() {
        let c = compile_text(&route(
            "z",
            "  parentRefs: [{name: echo}]\n  rules: [{backendRefs: [{name: echo, weight: 0}]}]\n",
        ));
        assert!(
            c.errors[0].message.contains("weights sum to zero"),
            "{}",
            c.errors[0]
        );
        let c = compile_text(&route(
            "r",
            "  parentRefs: [{name: echo}]\n  rules: [{matches: [{path: {type: RegularExpression, value: 'a{5000}{5000}'}}]}]\n",
        ));
        assert!(
            c.errors[0].message.contains("too costly"),
            "{}",
            c.errors[0]
        );
        assert!(c.services.is_empty());
    }
}
