//! From the watched objects to what `compile` reads (pure): each object's `spec` JSON read
//! into the mesh's spec type of its kind, its identity and creation time taken from its
//! metadata. An object whose spec cannot be read (a field the mesh does not support, a value
//! of the wrong type) is not compiled: it gets its own `Accepted: False` status here, with the
//! reason Gateway API clients expect (`UnsupportedValue` for a route, `Invalid` for our kinds,
//! as `compile` words a bad body), and the other objects apply.
//!
//! A `GRPCRoute`'s spec is read as the `HTTPRoute` it means (`GrpcRouteSpec::to_http_route`,
//! as in local mode) and compiled with the other routes. `compile` names what it judges by the
//! spec's kind, so it reports a `GRPCRoute` as an `HTTPRoute`; [`own_kinds`] gives those
//! statuses back their kind (told apart by the source, which names the kind watched), so a
//! `GRPCRoute`'s conditions go to the `GRPCRoute`, never to an `HTTPRoute` of the same name.
//!
//! Routes whose parents are all Gateways (not one `kind: Service` parent) belong to an
//! ingress controller, not to the mesh: they are skipped, neither compiled nor given a status.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta as KubeMeta;
use mesh_core::policy::compile::{Condition, ObjectStatus};
use mesh_core::policy::documents::{ObjectMeta, PolicyObject, PolicySpec, SourceRef};
use mesh_core::policy::grpc_route::GrpcRouteAsHttp;
use mesh_k8s::policy::{
    AuthorizationPolicy, BackendPolicy, CachePolicy, FaultPolicy, GrpcRoute, HttpRoute,
    RateLimitPolicy,
};
use serde::de::DeserializeOwned;

/// Every watched object of the policy kinds, as the stores hold them.
#[derive(Debug, Clone, Default)]
pub(crate) struct WatchedPolicy {
    /// `HTTPRoute`s.
    pub routes: Vec<Arc<HttpRoute>>,
    /// `GRPCRoute`s.
    pub grpc_routes: Vec<Arc<GrpcRoute>>,
    /// `FaultPolicy`s.
    pub faults: Vec<Arc<FaultPolicy>>,
    /// `RateLimitPolicy`s.
    pub rate_limits: Vec<Arc<RateLimitPolicy>>,
    /// `CachePolicy`s.
    pub caches: Vec<Arc<CachePolicy>>,
    /// `BackendPolicy`s.
    pub backends: Vec<Arc<BackendPolicy>>,
    /// `AuthorizationPolicy`s.
    pub authorizations: Vec<Arc<AuthorizationPolicy>>,
}

/// What the objects read to: those to compile, and those refused before compiling.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ReadPolicy {
    /// The objects whose spec was read, sorted by kind, namespace and name (so the input of
    /// `compile` does not depend on the order the watches list them in).
    pub objects: Vec<PolicyObject>,
    /// The objects whose spec could not be read, with their `Accepted: False` condition.
    pub unreadable: Vec<ObjectStatus>,
}

/// Reads every object of `watched`.
pub(crate) fn read(watched: &WatchedPolicy) -> ReadPolicy {
    let mut out = ReadPolicy::default();
    for route in &watched.routes {
        if !is_mesh_route(&route.spec) {
            continue;
        }
        add(
            &mut out,
            "HTTPRoute",
            &route.metadata,
            &route.spec,
            PolicySpec::HttpRoute,
        );
    }
    for route in &watched.grpc_routes {
        if !is_mesh_route(&route.spec) {
            continue;
        }
        add(
            &mut out,
            "GRPCRoute",
            &route.metadata,
            &route.spec,
            |g: GrpcRouteAsHttp| PolicySpec::HttpRoute(g.0),
        );
    }
    for p in &watched.faults {
        add(
            &mut out,
            "FaultPolicy",
            &p.metadata,
            &p.spec.0,
            PolicySpec::FaultPolicy,
        );
    }
    for p in &watched.rate_limits {
        add(
            &mut out,
            "RateLimitPolicy",
            &p.metadata,
            &p.spec.0,
            PolicySpec::RateLimitPolicy,
        );
    }
    for p in &watched.caches {
        add(
            &mut out,
            "CachePolicy",
            &p.metadata,
            &p.spec.0,
            PolicySpec::CachePolicy,
        );
    }
    for p in &watched.backends {
        add(
            &mut out,
            "BackendPolicy",
            &p.metadata,
            &p.spec.0,
            PolicySpec::BackendPolicy,
        );
    }
    for p in &watched.authorizations {
        add(
            &mut out,
            "AuthorizationPolicy",
            &p.metadata,
            &p.spec.0,
            PolicySpec::AuthorizationPolicy,
        );
    }
    // The source last: a `GRPCRoute` and an `HTTPRoute` of one name have the same spec kind.
    let order = |kind: &str, ns: &str, name: &str, source: String| {
        (kind.to_string(), ns.to_string(), name.to_string(), source)
    };
    out.objects.sort_by_key(|o| {
        order(
            o.spec.kind(),
            &o.meta.namespace,
            &o.meta.name,
            o.source.to_string(),
        )
    });
    out.unreadable
        .sort_by_key(|s| order(&s.kind, &s.namespace, &s.name, s.source.clone()));
    out
}

/// Gives the statuses `compile` made of `GRPCRoute`s (reported as `HTTPRoute`s, the spec they
/// were read into) their own kind back, so they are written on the `GRPCRoute`.
pub(crate) fn own_kinds(statuses: &mut [ObjectStatus]) {
    for s in statuses {
        if s.kind == "HTTPRoute"
            && s.source == source("GRPCRoute", &s.namespace, &s.name).to_string()
        {
            s.kind = "GRPCRoute".into();
        }
    }
}

/// Whether a route's spec names a Service among its parents (GAMMA): the mesh's to govern.
pub(crate) fn is_mesh_route(spec: &serde_json::Value) -> bool {
    spec["parentRefs"]
        .as_array()
        .is_some_and(|parents| parents.iter().any(|p| p["kind"] == "Service"))
}

/// Where a Kubernetes object was read, for messages: `kubernetes <kind> <namespace>/<name>`.
pub(crate) fn source(kind: &str, namespace: &str, name: &str) -> SourceRef {
    SourceRef {
        file: format!("kubernetes {kind} {namespace}/{name}"),
        line: 0,
    }
}

/// Reads one object's `spec` as `S` into `out`.
fn add<S: DeserializeOwned>(
    out: &mut ReadPolicy,
    kind: &'static str,
    meta: &KubeMeta,
    spec: &serde_json::Value,
    wrap: fn(S) -> PolicySpec,
) {
    let namespace = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let source = source(kind, &namespace, &name);
    match serde_json::from_value::<S>(spec.clone()) {
        Ok(spec) => out.objects.push(PolicyObject {
            source,
            meta: ObjectMeta {
                name,
                namespace,
                labels: meta.labels.clone().unwrap_or_default(),
                annotations: meta.annotations.clone().unwrap_or_default(),
            },
            created: meta
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second()),
            spec: wrap(spec),
        }),
        Err(e) => out.unreadable.push(ObjectStatus {
            kind: kind.into(),
            source: source.to_string(),
            conditions: vec![Condition {
                kind: "Accepted".into(),
                status: false,
                // The words `compile` uses for a value it cannot apply, per kind.
                reason: if kind.ends_with("Route") {
                    "UnsupportedValue"
                } else {
                    "Invalid"
                }
                .into(),
                message: format!("spec: {e}"),
            }],
            namespace,
            name,
        }),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use mesh_core::names::ServiceKey;
    use mesh_core::policy::compile::compile;
    use mesh_k8s::policy::RateLimitPolicySpec;
    use serde_json::json;

    use super::*;

    fn meta(name: &str, created: i64) -> KubeMeta {
        KubeMeta {
            name: Some(name.into()),
            namespace: Some("demo".into()),
            creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
            generation: Some(1),
            ..KubeMeta::default()
        }
    }

    /// The conditions compiling gave the object `name`.
    fn conditions_of<'a>(
        compiled: &'a mesh_core::policy::compile::CompiledPolicy,
        name: &str,
    ) -> &'a [mesh_core::policy::compile::Condition] {
        &compiled
            .statuses
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no status for {name}"))
            .conditions
    }

    fn route(name: &str, created: i64, spec: serde_json::Value) -> Arc<HttpRoute> {
        Arc::new(HttpRoute {
            metadata: meta(name, created),
            spec,
            status: None,
        })
    }

    /// A route as the API server returns it: with the defaults of the upstream CRD filled in.
    fn split(path: &str, canary: &str) -> serde_json::Value {
        json!({
            "parentRefs": [{"group": "", "kind": "Service", "name": "echo"}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                "backendRefs": [
                    {"group": "", "kind": "Service", "name": "echo", "weight": 90},
                    {"group": "", "kind": "Service", "name": canary, "weight": 10}
                ]
            }]
        })
    }

    fn known(k: &ServiceKey) -> bool {
        k.namespace == "demo" && ["echo", "echo-canary"].contains(&k.name.as_str())
    }

    #[test]
    fn objects_not_accepted_are_left_out_and_the_others_apply() {
        let watched = WatchedPolicy {
            routes: vec![
                route("good", 100, split("/api", "echo-canary")),
                route("missing-backend", 110, split("/other", "nope")),
                route("conflicting", 120, split("/api", "echo-canary")),
                route(
                    "unsupported",
                    130,
                    json!({"parentRefs": [{"group": "", "kind": "Service", "name": "echo"}],
                           "rules": [{"futureFilter": {}}]}),
                ),
                route(
                    "ingress",
                    90,
                    json!({"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}]}),
                ),
            ],
            rate_limits: vec![Arc::new(RateLimitPolicy {
                metadata: meta("zero", 140),
                spec: RateLimitPolicySpec(json!({
                    "targetRef": {"group": "", "kind": "Service", "name": "echo"},
                    "total": {"requestsPerSecond": 0}
                })),
                status: None,
            })],
            ..WatchedPolicy::default()
        };
        let read = read(&watched);
        assert_eq!(read.objects.len(), 4, "the ingress route is not the mesh's");
        assert_eq!(read.objects[0].created, 120);
        assert_eq!(
            read.objects[0].source.to_string(),
            "kubernetes HTTPRoute demo/conflicting"
        );
        assert_eq!(read.unreadable.len(), 1);
        let unsupported = &read.unreadable[0].conditions[0];
        assert_eq!(
            (unsupported.reason.as_str(), unsupported.status),
            ("UnsupportedValue", false)
        );
        assert!(
            unsupported.message.contains("futureFilter"),
            "{}",
            unsupported.message
        );

        let compiled = compile(&read.objects, &known);
        let status = |name: &str| conditions_of(&compiled, name).to_vec();
        assert_eq!(status("conflicting")[0].reason, "Conflicted");
        assert!(status("good").iter().all(|c| c.status));
        let missing = status("missing-backend");
        assert!(missing[0].status, "accepted: its good share still applies");
        assert_eq!(missing[1].reason, "BackendNotFound");
        let zero = &status("zero")[0];
        assert_eq!((zero.status, zero.reason.as_str()), (false, "Invalid"));
        assert!(
            zero.message.contains("total.requestsPerSecond"),
            "{}",
            zero.message
        );
        // Only accepted objects' rules are in force: the good route and the accepted route
        // with a missing backend, not the conflicting one, nor the refused limit.
        let echo = &compiled.services[&ServiceKey::new("echo", "demo").unwrap()];
        let mut origins: Vec<String> = echo.rules.iter().map(|r| r.origin.route.clone()).collect();
        origins.sort();
        assert_eq!(origins, ["demo/good", "demo/missing-backend"]);
        assert!(echo.inbound_rate_limit.is_none());
    }

    #[test]
    fn a_grpc_route_is_compiled_as_the_http_route_it_means_and_keeps_its_kind() {
        let grpc = |name: &str, created: i64, rules: serde_json::Value| {
            Arc::new(GrpcRoute {
                metadata: meta(name, created),
                spec: json!({
                    "parentRefs": [{"group": "", "kind": "Service", "name": "echo"}],
                    "rules": rules
                }),
                status: None,
            })
        };
        let watched = WatchedPolicy {
            // An HTTPRoute of the same name: its status must not be confused with the GRPCRoute's.
            routes: vec![route("calls", 100, split("/api", "echo-canary"))],
            grpc_routes: vec![
                grpc(
                    "calls",
                    110,
                    json!([{
                        "matches": [{"method": {"type": "Exact", "service": "pkg.Echo", "method": "Say"}}],
                        "backendRefs": [{"group": "", "kind": "Service", "name": "echo-canary"}]
                    }]),
                ),
                grpc(
                    "bad-filter",
                    120,
                    json!([{"filters": [{"type": "URLRewrite"}]}]),
                ),
            ],
            ..WatchedPolicy::default()
        };
        let read = read(&watched);
        assert_eq!(read.objects.len(), 2);
        assert_eq!(read.unreadable.len(), 1);
        let bad = &read.unreadable[0];
        assert_eq!(bad.kind, "GRPCRoute");
        assert_eq!(bad.conditions[0].reason, "UnsupportedValue");
        assert!(
            bad.conditions[0]
                .message
                .contains("rules[0].filters[0].type"),
            "{}",
            bad.conditions[0].message
        );

        let mut compiled = compile(&read.objects, &known);
        own_kinds(&mut compiled.statuses);
        let mut kinds: Vec<(&str, &str, bool)> = compiled
            .statuses
            .iter()
            .map(|s| (s.kind.as_str(), s.name.as_str(), s.conditions[0].status))
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            [("GRPCRoute", "calls", true), ("HTTPRoute", "calls", true)]
        );
        let echo = &compiled.services[&ServiceKey::new("echo", "demo").unwrap()];
        assert!(
            echo.rules
                .iter()
                .any(|r| format!("{:?}", r).contains("/pkg.Echo/Say")),
            "the method match is in force: {:?}",
            echo.rules
        );
    }

    #[test]
    fn a_policy_with_an_unknown_field_is_invalid() {
        let watched = WatchedPolicy {
            rate_limits: vec![Arc::new(RateLimitPolicy {
                metadata: meta("typo", 1),
                spec: RateLimitPolicySpec(json!({
                    "targetRef": {"group": "", "kind": "Service", "name": "echo"},
                    "totl": {"requestsPerSecond": 5}
                })),
                status: None,
            })],
            ..WatchedPolicy::default()
        };
        let read = read(&watched);
        assert!(read.objects.is_empty());
        let c = &read.unreadable[0].conditions[0];
        assert_eq!(c.reason, "Invalid");
        assert!(c.message.contains("totl"), "{}", c.message);
    }

    #[test]
    fn authorization_policies_are_read_and_compiled_like_local_ones() {
        use mesh_core::policy::compile::compile_known;
        use mesh_k8s::policy::AuthorizationPolicySpec;
        let authz = |name: &str, created: i64, spec: serde_json::Value| {
            Arc::new(AuthorizationPolicy {
                metadata: meta(name, created),
                spec: AuthorizationPolicySpec(spec),
                status: None,
            })
        };
        let watched = WatchedPolicy {
            authorizations: vec![
                authz(
                    "no-admin",
                    1,
                    json!({"targetRef": {"group": "", "kind": "Service", "name": "echo"},
                           "action": "DENY",
                           "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]}),
                ),
                authz(
                    "defaults",
                    2,
                    json!({"targetRef": {"group": "", "kind": "Namespace", "name": "demo"},
                           "default": "deny"}),
                ),
                authz(
                    "typo",
                    3,
                    json!({"targetRef": {"group": "", "kind": "Service", "name": "echo"},
                           "rules": [{"form": []}]}),
                ),
                authz(
                    "bad-principal",
                    4,
                    json!({"targetRef": {"group": "", "kind": "Service", "name": "echo"},
                           "rules": [{"from": [{"source": {"principals": ["spiffe://a/*/x"]}}]}]}),
                ),
            ],
            ..WatchedPolicy::default()
        };
        let read = read(&watched);
        assert_eq!(read.unreadable.len(), 1);
        assert_eq!(read.unreadable[0].name, "typo");
        assert!(
            read.unreadable[0].conditions[0].message.contains("form"),
            "{:?}",
            read.unreadable[0]
        );
        let known = [ServiceKey::new("echo", "demo").unwrap()].into();
        let compiled = compile_known(&read.objects, &known);
        let status = |name: &str| conditions_of(&compiled, name)[0].clone();
        assert!(status("no-admin").status && status("defaults").status);
        let bad = status("bad-principal");
        assert_eq!(bad.reason, "Invalid");
        assert!(
            bad.message
                .starts_with("spec.rules[0].from[0].source.principals[0]"),
            "{}",
            bad.message
        );
        let echo = &compiled.services[&ServiceKey::new("echo", "demo").unwrap()];
        assert_eq!(echo.authorization[0].name, "demo/no-admin");
        assert_eq!(
            echo.authorization_default.as_ref().unwrap().policy,
            "demo/defaults"
        );
    }
}
