//! Our policies attached to what they target, after every route is compiled: each target
//! resolved (the route and its named rule, or a known service), conflicts between policies of
//! one kind on one target settled, and the accepted settings applied to the route rules and
//! service policies that sidecars get.
//!
//! - A policy on a whole route applies to each of its rules, for every parent; a policy on one
//!   rule (`sectionName`) replaces it for that rule, as the more specific attachment does in
//!   the Gateway API (GEP-713). Two policies of one kind on the same route, or on the same
//!   rule, or on the same service, conflict: the oldest wins (creation time, then
//!   `<namespace>/<name>`, as for routes), the others are not accepted (`Conflicted`).
//! - A policy on a route that does not exist, or is not accepted, or has no rule of the name
//!   given, or on a service no cluster knows, is not accepted (`TargetNotFound`).
//! - `AuthorizationPolicy`s with rules never conflict: all those on a service and on its
//!   namespace apply together (DENY before ALLOW, as Istio), oldest first. One on a namespace
//!   applies to every service of the namespace some cluster knows. A namespace's `default` is
//!   set by one policy: a second one conflicts.

use std::collections::BTreeMap;
use std::fmt;

use super::super::attachment::PolicyTarget;
use super::super::authorization::{AuthorizationRules, NamespaceDefault};
use super::super::backend_policy::BackendPolicySpec;
use super::super::documents::{PolicyObject, PolicySpec};
use super::super::fault::FaultSpec;
use super::super::http_cache::CacheRule;
use super::super::rate_limit::RateLimitSpec;
use super::super::service_policy::{RouteRule, ServicePolicy};
use super::{Condition, KnownServices, ObjectStatus, Refusal};
use crate::names::ServiceKey;

/// What one policy sets on its target.
#[derive(Debug, Clone)]
enum Setting {
    Fault(FaultSpec),
    RateLimit(RateLimitSpec),
    Cache(CacheRule),
    Backend(BackendPolicySpec),
    Authorization(AuthorizationRules),
    AuthorizationDefault(NamespaceDefault),
}

impl Setting {
    fn of(object: &PolicyObject) -> Option<Self> {
        match &object.spec {
            PolicySpec::HttpRoute(_) => None,
            PolicySpec::FaultPolicy(p) => Some(Self::Fault(p.fault())),
            PolicySpec::RateLimitPolicy(p) => Some(Self::RateLimit(p.rate_limit())),
            PolicySpec::CachePolicy(p) => Some(Self::Cache(p.cache_rule())),
            PolicySpec::BackendPolicy(p) => Some(Self::Backend(p.backend())),
            PolicySpec::AuthorizationPolicy(p) => {
                let name = format!("{}/{}", object.meta.namespace, object.meta.name);
                Some(match p.default {
                    Some(default) => Self::AuthorizationDefault(NamespaceDefault {
                        policy: name,
                        default,
                    }),
                    None => Self::Authorization(AuthorizationRules::of(name, p)),
                })
            }
        }
    }
}

/// A policy's target once found: what conflicts are judged on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Found {
    /// The rules of a route (`<namespace>/<name>`): one named rule, or all.
    Rules { route: String, rule: Option<String> },
    /// A service.
    Service(ServiceKey),
    /// Every service of a namespace.
    Namespace(String),
    /// A namespace's default (one per namespace).
    NamespaceDefault(String),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rules { route, rule: None } => write!(f, "HTTPRoute {route}"),
            Self::Rules {
                route,
                rule: Some(rule),
            } => write!(f, "rule {rule} of HTTPRoute {route}"),
            Self::Service(key) => write!(f, "service {key}"),
            Self::Namespace(namespace) => write!(f, "namespace {namespace}"),
            Self::NamespaceDefault(namespace) => write!(f, "the default of namespace {namespace}"),
        }
    }
}

/// The accepted policies' settings, by target.
#[derive(Debug, Default)]
pub(super) struct Attachments(Vec<(Found, Setting)>);

impl Attachments {
    /// Sets what the accepted policies on `rule`'s route say: whole-route policies first, so
    /// that a policy on the rule itself replaces them.
    pub(super) fn apply_to_rule(&self, rule: &mut RouteRule) {
        for specific in [false, true] {
            for (found, setting) in &self.0 {
                let Found::Rules { route, rule: name } = found else {
                    continue;
                };
                if name.is_some() != specific
                    || *route != rule.origin.route
                    || name
                        .as_ref()
                        .is_some_and(|n| rule.origin.name.as_ref() != Some(n))
                {
                    continue;
                }
                match setting {
                    Setting::Fault(f) => rule.fault = Some(f.clone()),
                    Setting::RateLimit(r) => rule.rate_limit = Some(r.clone()),
                    Setting::Cache(c) => rule.cache = Some(c.clone()),
                    // Refused at validation: these target services.
                    Setting::Backend(_)
                    | Setting::Authorization(_)
                    | Setting::AuthorizationDefault(_) => {}
                }
            }
        }
    }

    /// Sets the backend policies, inbound limits and authorization of services (those of a
    /// namespace's policy on each service `known` has in it), adding a policy without rules
    /// for a service that had none.
    pub(super) fn apply_to_services(
        &self,
        services: &mut BTreeMap<ServiceKey, ServicePolicy>,
        known: &dyn KnownServices,
    ) {
        for (found, setting) in &self.0 {
            let keys = match found {
                Found::Service(key) => vec![key.clone()],
                Found::Namespace(namespace) | Found::NamespaceDefault(namespace) => {
                    known.in_namespace(namespace)
                }
                Found::Rules { .. } => continue,
            };
            for key in keys {
                let policy = services.entry(key).or_default();
                match setting {
                    Setting::RateLimit(r) => policy.inbound_rate_limit = Some(r.clone()),
                    Setting::Backend(b) => policy.backend = Some(b.clone()),
                    // Candidates are sorted oldest first: so is the list (a service's own
                    // policies before its namespace's).
                    Setting::Authorization(a) => policy.authorization.push(a.clone()),
                    Setting::AuthorizationDefault(d) => {
                        policy.authorization_default = Some(d.clone());
                    }
                    // Refused at validation: faults and caches target routes.
                    Setting::Fault(_) | Setting::Cache(_) => {}
                }
            }
        }
    }
}

/// Resolves the target of every policy among `objects` (routes' `statuses` final), writes
/// each policy's `Accepted` condition into `statuses`, and returns the accepted settings.
pub(super) fn resolve(
    objects: &[PolicyObject],
    known: &dyn KnownServices,
    statuses: &mut [ObjectStatus],
) -> Attachments {
    let mut candidates: Vec<(usize, Found)> = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        let Some(checked) = object.spec.validate_attachment() else {
            continue;
        };
        let found = checked
            .map_err(|e| ("Invalid", format!("spec.{e}")))
            .and_then(|target| find(objects, object, &target, known, statuses));
        match found {
            Ok(found) => candidates.push((i, found)),
            Err((reason, message)) => statuses[i].conditions = vec![condition(reason, message)],
        }
    }
    // Oldest first within each (kind, target): the first of a group wins.
    let order = |i: usize| {
        let o = &objects[i];
        (o.spec.kind(), o.created, &o.meta.namespace, &o.meta.name)
    };
    candidates.sort_by(|(a, fa), (b, fb)| {
        let (ka, ca, na, ma) = order(*a);
        let (kb, cb, nb, mb) = order(*b);
        (ka, fa, ca, na, ma).cmp(&(kb, fb, cb, nb, mb))
    });
    let mut accepted = Attachments::default();
    let mut winner: Option<(usize, &Found)> = None;
    for (i, found) in &candidates {
        let object = &objects[*i];
        let kind = object.spec.kind();
        // Authorization rules never conflict; a namespace's default does.
        let conflicts = !matches!(object.spec, PolicySpec::AuthorizationPolicy(_))
            || matches!(found, Found::NamespaceDefault(_));
        if let Some((w, wf)) = winner
            && objects[w].spec.kind() == kind
            && conflicts
            && wf == found
        {
            let older = &objects[w];
            statuses[*i].conditions = vec![condition(
                "Conflicted",
                format!(
                    "spec.targetRef: {found} already has the older {kind} {}/{} ({}): remove one",
                    older.meta.namespace, older.meta.name, older.source
                ),
            )];
            continue;
        }
        winner = Some((*i, found));
        let Some(setting) = Setting::of(object) else {
            continue;
        };
        statuses[*i].conditions = vec![Condition {
            kind: "Accepted".into(),
            status: true,
            reason: "Accepted".into(),
            message: format!("attached to {found}"),
        }];
        accepted.0.push((found.clone(), setting));
    }
    accepted
}

/// The route, rule or service `target` names, from `policy`'s namespace.
fn find(
    objects: &[PolicyObject],
    policy: &PolicyObject,
    target: &PolicyTarget,
    known: &dyn KnownServices,
    statuses: &[ObjectStatus],
) -> Result<Found, Refusal> {
    let namespace = &policy.meta.namespace;
    match target {
        PolicyTarget::Route { name, rule } => {
            let route = format!("{namespace}/{name}");
            let Some((j, spec)) = objects.iter().enumerate().find_map(|(j, o)| match &o.spec {
                PolicySpec::HttpRoute(spec)
                    if o.meta.namespace == *namespace && o.meta.name == *name =>
                {
                    Some((j, spec))
                }
                _ => None,
            }) else {
                return Err((
                    "TargetNotFound",
                    format!("spec.targetRef: HTTPRoute {route} does not exist"),
                ));
            };
            if !statuses[j].accepted() {
                return Err((
                    "TargetNotFound",
                    format!(
                        "spec.targetRef: HTTPRoute {route} is not accepted (see its conditions)"
                    ),
                ));
            }
            if let Some(rule) = rule
                && !spec.rules.iter().any(|r| r.name.as_ref() == Some(rule))
            {
                return Err((
                    "TargetNotFound",
                    format!(
                        "spec.targetRef.sectionName: HTTPRoute {route} has no rule named {rule:?}"
                    ),
                ));
            }
            Ok(Found::Rules {
                route,
                rule: rule.clone(),
            })
        }
        PolicyTarget::Service { name } => {
            let key = ServiceKey::new(name, namespace)
                .map_err(|e| ("Invalid", format!("spec.targetRef.name: {e}")))?;
            if !known.knows(&key) {
                return Err((
                    "TargetNotFound",
                    format!("spec.targetRef: service {key} is not known in any cluster"),
                ));
            }
            Ok(Found::Service(key))
        }
        PolicyTarget::Namespace { name } => {
            if name != namespace {
                return Err((
                    "Invalid",
                    format!(
                        "spec.targetRef.name: a policy applies in its own namespace {namespace}, \
                         not in {name}"
                    ),
                ));
            }
            let sets_default = matches!(
                &policy.spec,
                PolicySpec::AuthorizationPolicy(p) if p.default.is_some()
            );
            Ok(if sets_default {
                Found::NamespaceDefault(name.clone())
            } else {
                Found::Namespace(name.clone())
            })
        }
    }
}

fn condition(reason: &str, message: String) -> Condition {
    Condition {
        kind: "Accepted".into(),
        status: false,
        reason: reason.into(),
        message,
    }
}
