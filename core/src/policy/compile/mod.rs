//! From policy objects to what sidecars get (pure): each `HTTPRoute` is checked, its
//! references resolved against the services the controller knows, and its rules attached to
//! its parent services' [`ServicePolicy`]; then each of our policies (`FaultPolicy`,
//! `RateLimitPolicy`, `CachePolicy`, `BackendPolicy`, `AuthorizationPolicy`) is attached to
//! what it targets: a route's rules or a service. Each object gets the Gateway API's status conditions
//! (`Accepted`, and `ResolvedRefs` for routes) with a reason. A local policy file with any
//! condition false is refused as a whole (the last good policy stays); in Kubernetes an object
//! that is not accepted is left out and the others apply.
//!
//! - `routes.rs`: one route checked and turned into rules per parent;
//! - `attach.rs`: the policies' targets resolved, their conflicts, and their settings applied.

mod attach;
mod routes;

use std::collections::{BTreeMap, BTreeSet};

use super::documents::{DocumentError, PolicyObject, PolicySpec, SourceRef};
use super::route_match::RouteMatch;
use super::service_policy::{RouteRule, ServicePolicy};
use crate::names::ServiceKey;
use routes::route_rules;

/// Why an object is not accepted: the reason and the message.
type Refusal = (&'static str, String);

/// A status condition of an object, as the Gateway API words them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Condition {
    /// `Accepted` or `ResolvedRefs`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether it holds.
    pub status: bool,
    /// `Accepted`, `NoMatchingParent`, `UnsupportedValue`, `Conflicted`, `ResolvedRefs`,
    /// `BackendNotFound`, `InvalidKind`; for our policies also `TargetNotFound` and `Invalid`.
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
    /// `Accepted` then (routes) `ResolvedRefs`.
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

/// The services references resolve against: those some cluster has.
trait KnownServices {
    /// Whether `key` exists in some cluster.
    fn knows(&self, key: &ServiceKey) -> bool;
    /// The services of `namespace` (what a policy on the namespace applies to).
    fn in_namespace(&self, namespace: &str) -> Vec<ServiceKey>;
}

impl KnownServices for BTreeSet<ServiceKey> {
    fn knows(&self, key: &ServiceKey) -> bool {
        self.contains(key)
    }

    fn in_namespace(&self, namespace: &str) -> Vec<ServiceKey> {
        self.iter()
            .filter(|k| k.namespace == namespace)
            .cloned()
            .collect()
    }
}

/// A predicate: it cannot list a namespace's services.
struct Predicate<'a>(&'a dyn Fn(&ServiceKey) -> bool);

impl KnownServices for Predicate<'_> {
    fn knows(&self, key: &ServiceKey) -> bool {
        (self.0)(key)
    }

    fn in_namespace(&self, _: &str) -> Vec<ServiceKey> {
        Vec::new()
    }
}

/// Compiles `objects` against the services `known` lists: what the controller does.
pub fn compile_known(objects: &[PolicyObject], known: &BTreeSet<ServiceKey>) -> CompiledPolicy {
    compile_with(objects, known)
}

/// Compiles `objects`, `known` saying whether a service exists in some cluster (tests and
/// benchmarks): a predicate cannot list a namespace's services, so a policy on a namespace is
/// accepted but applies to none; [`compile_known`] applies it to each.
pub fn compile(objects: &[PolicyObject], known: &dyn Fn(&ServiceKey) -> bool) -> CompiledPolicy {
    compile_with(objects, &Predicate(known))
}

fn compile_with(objects: &[PolicyObject], known: &dyn KnownServices) -> CompiledPolicy {
    let mut out = CompiledPolicy::default();
    // Each accepted route's rules per parent, with the compiled matches to find conflicts.
    let mut attached: BTreeMap<ServiceKey, Vec<(usize, RouteRule, Vec<RouteMatch>)>> =
        BTreeMap::new();
    for (i, object) in objects.iter().enumerate() {
        let PolicySpec::HttpRoute(spec) = &object.spec else {
            // Our policies are attached once every route is known (below).
            out.statuses.push(ObjectStatus {
                kind: object.spec.kind().into(),
                namespace: object.meta.namespace.clone(),
                name: object.meta.name.clone(),
                source: object.source.to_string(),
                conditions: Vec::new(),
            });
            continue;
        };
        let mut resolved = Condition {
            kind: "ResolvedRefs".into(),
            status: true,
            reason: "ResolvedRefs".into(),
            message: "every reference resolves".into(),
        };
        let accepted = match route_rules(object, spec, &|k| known.knows(k), &mut resolved) {
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
    let attachments = attach::resolve(objects, known, &mut out.statuses);
    for (parent, rules) in attached {
        let rules: Vec<RouteRule> = rules
            .into_iter()
            .filter(|(i, _, _)| out.statuses[*i].accepted())
            .map(|(_, mut r, _)| {
                attachments.apply_to_rule(&mut r);
                r
            })
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
    // A service with only a backend policy or an inbound limit gets a policy without rules:
    // sidecars route it implicitly.
    attachments.apply_to_services(&mut out.services, known);
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
mod authorization_tests;
#[cfg(test)]
mod tests;
