//! Traffic policy from Kubernetes objects, end to end on a real API server: the chart installs
//! the upstream `HTTPRoute` CRD and our four policy CRDs, the controller (with the chart's RBAC)
//! watches them, compiles them against the services it knows, puts the accepted ones in force
//! (its admin `GET /v1/policy` shows the compiled rules per service; a client sidecar routes by
//! them: the 90/10 split, 404 off the route, 500 for a missing backend's share) and writes each
//! object's conditions to its `status`. A route with a missing backend, a conflicting route and a rate
//! limit of zero each get the condition and reason the Gateway API defines, and the good route
//! stays in force throughout. A `GRPCRoute` with a method match is compiled as the `HTTPRoute`
//! it means, and its conditions are written on the `GRPCRoute`. `AuthorizationPolicy`s (on the
//! Service, and a default on the Namespace) are accepted and reach the compiled policy; one with
//! a `*` in the middle of a principal is `Invalid`, naming the field.
//!
//! One test walks the phases in order: the API server and the controller are expensive to
//! start. Without the Kubernetes binaries it fails with the reason, never skips.

mod kube_support;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use kube_support::{DEMO_NS, MeshCluster, apply, bring_up, get_json};
use mesh_test_support::eventually;
use serde_json::Value;
use support::{Scratch, get};

/// (cluster, region, region priority).
const CLUSTERS: [(&str, &str, &[&str]); 1] = [("east", "east", &[])];
/// The demo service, as the client sidecar resolves it.
const HOST: &str = "echo.demo.svc.clusterset.local";
/// How long a change may take to show: a watch event, a compile, a status write.
const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "current_thread")]
async fn policy_objects_are_compiled_applied_and_given_status() {
    let env = mesh_k8s_testenv::shared(&CLUSTERS.map(|(name, _, _)| name));
    let scratch = Scratch::new("kubernetes-policy");
    let mut clusters = bring_up(env, &CLUSTERS, &["controller-0"], &[], &scratch.0).await;
    let proxy = clusters[0].start_client(&["controller-0"]).await;
    let east = &clusters[0];
    // bring_up waited for every CRD of `mesh check`'s list, the policy kinds included.
    // The canary: a Service exported without endpoints is known to the controller.
    apply(
        east.kube,
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: echo-canary, namespace: {DEMO_NS}}}\n\
             spec: {{selector: {{app: echo-canary}}, ports: [{{name: http, port: 80, protocol: TCP}}]}}\n---\n\
             apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {{name: echo-canary, namespace: {DEMO_NS}}}\n"
        ),
    );

    a_split_route_is_accepted_and_in_force(east).await;
    the_sidecar_routes_by_it(proxy).await;
    a_missing_backend_is_not_resolved_and_the_rest_applies(east).await;
    eventually("500 for the missing backend's share", SETTLE, async || {
        get(proxy, &format!("http://{HOST}/missing/x")).await.status == 500
    })
    .await;
    a_conflicting_route_is_not_accepted(east).await;
    a_rate_of_zero_is_invalid_until_fixed(east).await;
    a_grpc_route_is_accepted_and_in_force(east).await;
    authorization_policies_reach_the_compiled_policy(east).await;

    for c in &mut clusters {
        c.stop().await;
    }
}

/// A route with a path match and a 90/10 split between two services.
fn split_route(name: &str, path: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {DEMO_NS}}}\n\
         spec:\n  parentRefs: [{{group: \"\", kind: Service, name: echo}}]\n  rules:\n\
         \x20 - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n\
         \x20   backendRefs: [{{name: echo, port: 80, weight: 90}}, {{name: echo-canary, port: 80, weight: 10}}]\n"
    )
}

/// `GET /v1/policy` of the controller.
async fn policy_report(admin: SocketAddr) -> Value {
    mesh_launcher::admin_client::get_json(admin, mesh_core::api::PATH_POLICY)
        .await
        .expect("GET /v1/policy")
}

/// The rules of `demo/echo` in force, by the route they come from, with their backends as
/// `(service, weight)`.
fn echo_rules(report: &Value) -> Vec<(String, Vec<(String, u64)>)> {
    report["services"]["echo.demo"]["rules"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| {
                    let backends = r["backends"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|b| {
                            (
                                b["service"].as_str().unwrap().to_string(),
                                b["weight"].as_u64().unwrap(),
                            )
                        })
                        .collect();
                    (r["origin"]["route"].as_str().unwrap().to_string(), backends)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the split route's rule is in force, as written.
fn split_in_force(report: &Value) -> bool {
    echo_rules(report).iter().any(|(route, backends)| {
        route == "demo/split"
            && *backends
                == [
                    ("echo.demo".to_string(), 90),
                    ("echo-canary.demo".to_string(), 10),
                ]
    })
}

/// The conditions of ours in `route`'s `status.parents[]` for the parent `echo`, by type:
/// `(status, reason)`, with the generation they were judged at.
fn route_conditions(route: &Value) -> Vec<(String, String, String, Option<i64>)> {
    route["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["controllerName"] == "mesh.dev/controller" && p["parentRef"]["name"] == "echo"
        })
        .flat_map(|p| p["conditions"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default().to_string(),
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["observedGeneration"].as_i64(),
            )
        })
        .collect()
}

/// Waits until HTTPRoute `name`'s conditions are `expected` (`(type, status, reason)`) for its
/// current generation; returns the route.
async fn wait_route_conditions(
    c: &MeshCluster,
    name: &str,
    expected: &[(&str, &str, &str)],
) -> Value {
    wait_kind_conditions(c, "httproute", name, expected).await
}

/// Waits until the route `name` of `resource` (`httproute`, `grpcroute`) has the conditions
/// `expected` (`(type, status, reason)`) for its current generation; returns the route.
async fn wait_kind_conditions(
    c: &MeshCluster,
    resource: &str,
    name: &str,
    expected: &[(&str, &str, &str)],
) -> Value {
    let mut last = Value::Null;
    let got = tokio::time::timeout(SETTLE, async {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        loop {
            every.tick().await;
            if let Some(route) = get_json(c.kube, &[resource, name, "-n", DEMO_NS]) {
                let generation = route["metadata"]["generation"].as_i64();
                let conditions = route_conditions(&route);
                let matches = conditions.len() == expected.len()
                    && expected.iter().all(|(t, s, r)| {
                        conditions.iter().any(|(ct, cs, cr, g)| {
                            ct == t && cs == s && cr == r && *g == generation
                        })
                    });
                last = route.clone();
                if matches {
                    return route;
                }
            }
        }
    })
    .await;
    got.unwrap_or_else(|_| {
        panic!(
            "{resource} {name}: conditions {expected:?} not written within {SETTLE:?}; last seen:\n{}\n{}",
            serde_json::to_string_pretty(&last["status"]).unwrap_or_default(),
            c.logs()
        )
    })
}

async fn a_split_route_is_accepted_and_in_force(c: &MeshCluster) {
    let admin = c.addr("controller-0", "admin");
    apply(c.kube, &split_route("split", "/api"));
    let route = wait_route_conditions(
        c,
        "split",
        &[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "True", "ResolvedRefs"),
        ],
    )
    .await;
    let parent = &route["status"]["parents"][0];
    assert_eq!(parent["parentRef"]["kind"], "Service", "{parent}");
    assert_eq!(parent["parentRef"]["group"], "", "{parent}");
    eventually("the split in force in GET /v1/policy", SETTLE, async || {
        split_in_force(&policy_report(admin).await)
    })
    .await;
    let report = policy_report(admin).await;
    let rule = &report["services"]["echo.demo"]["rules"][0];
    assert_eq!(rule["matches"][0]["path"]["type"], "PathPrefix", "{rule}");
    assert_eq!(rule["matches"][0]["path"]["value"], "/api", "{rule}");
    assert!(report["refused"].as_array().unwrap().is_empty(), "{report}");
    let statuses = report["objects"].as_array().unwrap();
    assert!(
        statuses
            .iter()
            .any(|o| o["name"] == "split" && o["source"] == "kubernetes HTTPRoute demo/split"),
        "{report}"
    );

    // Unchanged conditions are not written again: the resource version stays.
    let version = route["metadata"]["resourceVersion"].clone();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = get_json(c.kube, &["httproute", "split", "-n", DEMO_NS]).unwrap();
    assert_eq!(
        again["metadata"]["resourceVersion"], version,
        "the status of an unchanged route was written again"
    );
}

/// The compiled route reaches the client sidecar with its snapshot: `/api` is split 90/10
/// between `echo` and `echo-canary` (which has no endpoints anywhere: 503, as the Gateway API
/// says), and a request matching no rule gets 404.
async fn the_sidecar_routes_by_it(proxy: SocketAddr) {
    eventually(
        "the sidecar applies the route (404 off it)",
        SETTLE,
        async || get(proxy, &format!("http://{HOST}/elsewhere")).await.status == 404,
    )
    .await;
    let (mut ok, mut unavailable) = (0u32, 0u32);
    for i in 0..300 {
        let answer = get(proxy, &format!("http://{HOST}/api/{i}")).await;
        match answer.status.as_u16() {
            200 => ok += 1,
            503 => unavailable += 1,
            other => panic!("/api/{i}: {other} {}", answer.text()),
        }
    }
    // 10% expected; the bounds are far enough out that chance never crosses them.
    let share = f64::from(unavailable) / f64::from(ok + unavailable);
    assert!(
        (0.03..=0.2).contains(&share),
        "canary share {share:.3} ({unavailable} of 300) is not near 10%"
    );
}

async fn a_missing_backend_is_not_resolved_and_the_rest_applies(c: &MeshCluster) {
    let admin = c.addr("controller-0", "admin");
    apply(
        c.kube,
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: missing, namespace: {DEMO_NS}}}\n\
             spec:\n  parentRefs: [{{group: \"\", kind: Service, name: echo}}]\n  rules:\n\
             \x20 - matches: [{{path: {{type: PathPrefix, value: /missing}}}}]\n\
             \x20   backendRefs: [{{name: nope, port: 80}}]\n"
        ),
    );
    wait_route_conditions(
        c,
        "missing",
        &[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "False", "BackendNotFound"),
        ],
    )
    .await;
    let report = policy_report(admin).await;
    assert!(split_in_force(&report), "{report}");
    assert!(
        report["refused"].as_array().unwrap().iter().any(|e| e
            .as_str()
            .unwrap()
            .contains("HTTPRoute demo/missing (BackendNotFound)")),
        "{report}"
    );
}

async fn a_conflicting_route_is_not_accepted(c: &MeshCluster) {
    let admin = c.addr("controller-0", "admin");
    // Same match on the same service: the newer route loses (on a creation-time tie, the
    // name decides, and `split` sorts first).
    apply(c.kube, &split_route("split-copy", "/api"));
    let route = wait_route_conditions(
        c,
        "split-copy",
        &[
            ("Accepted", "False", "Conflicted"),
            ("ResolvedRefs", "True", "ResolvedRefs"),
        ],
    )
    .await;
    let message = route["status"]["parents"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Accepted")
        .map(|c| c["message"].as_str().unwrap().to_string())
        .unwrap();
    assert!(message.contains("demo/split"), "{message}");
    let report = policy_report(admin).await;
    assert!(split_in_force(&report), "{report}");
    assert!(
        !echo_rules(&report)
            .iter()
            .any(|(r, _)| r == "demo/split-copy"),
        "a route not accepted is left out: {report}"
    );
    // The older route is untouched.
    wait_route_conditions(
        c,
        "split",
        &[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "True", "ResolvedRefs"),
        ],
    )
    .await;
}

async fn a_rate_of_zero_is_invalid_until_fixed(c: &MeshCluster) {
    let admin = c.addr("controller-0", "admin");
    let limit = |rate: u32| {
        format!(
            "apiVersion: mesh.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{name: echo-limit, namespace: {DEMO_NS}}}\n\
             spec:\n  targetRef: {{group: \"\", kind: Service, name: echo}}\n  total: {{requestsPerSecond: {rate}}}\n"
        )
    };
    let accepted = |want| wait_accepted(c, "ratelimitpolicy", "echo-limit", want);
    apply(c.kube, &limit(0));
    let refused = accepted(("False", "Invalid")).await;
    let (_, _, message) = kube_support::condition(&refused, "Accepted").unwrap();
    assert!(
        message.contains("spec.total.requestsPerSecond"),
        "the message names the field: {message}"
    );
    let report = policy_report(admin).await;
    assert!(split_in_force(&report), "{report}");
    assert!(
        report["services"]["echo.demo"]["inbound_rate_limit"].is_null(),
        "a refused limit is not in force: {report}"
    );

    apply(c.kube, &limit(100));
    accepted(("True", "Accepted")).await;
    eventually("the fixed limit in force", SETTLE, async || {
        policy_report(admin).await["services"]["echo.demo"]["inbound_rate_limit"]["total"]
            ["requestsPerSecond"]
            == 100
    })
    .await;
    assert!(split_in_force(&policy_report(admin).await));
}

/// A `GRPCRoute` sending one method of `pkg.Echo` to the canary: accepted, its conditions on
/// the `GRPCRoute` (not on an `HTTPRoute`), its rule in force as the Exact path the call has.
async fn a_grpc_route_is_accepted_and_in_force(c: &MeshCluster) {
    let admin = c.addr("controller-0", "admin");
    apply(
        c.kube,
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: calls, namespace: {DEMO_NS}}}\n\
             spec:\n  parentRefs: [{{group: \"\", kind: Service, name: echo}}]\n  rules:\n\
             \x20 - matches: [{{method: {{service: pkg.Echo, method: Say}}}}]\n\
             \x20   backendRefs: [{{name: echo-canary, port: 80}}]\n"
        ),
    );
    let route = wait_kind_conditions(
        c,
        "grpcroute",
        "calls",
        &[
            ("Accepted", "True", "Accepted"),
            ("ResolvedRefs", "True", "ResolvedRefs"),
        ],
    )
    .await;
    assert_eq!(route["kind"], "GRPCRoute");
    assert!(
        get_json(c.kube, &["httproute", "calls", "-n", DEMO_NS]).is_none(),
        "no HTTPRoute of that name"
    );
    let method_rule = |report: &Value| {
        report["services"]["echo.demo"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["origin"]["route"] == "demo/calls")
            .cloned()
    };
    eventually(
        "the GRPCRoute's rule in force in GET /v1/policy",
        SETTLE,
        async || method_rule(&policy_report(admin).await).is_some(),
    )
    .await;
    let report = policy_report(admin).await;
    let rule = method_rule(&report).unwrap();
    assert_eq!(rule["matches"][0]["path"]["type"], "Exact", "{rule}");
    assert_eq!(
        rule["matches"][0]["path"]["value"], "/pkg.Echo/Say",
        "{rule}"
    );
    assert_eq!(rule["backends"][0]["service"], "echo-canary.demo", "{rule}");
    assert!(split_in_force(&report), "{report}");
    assert!(
        report["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "GRPCRoute"
                && o["name"] == "calls"
                && o["source"] == "kubernetes GRPCRoute demo/calls"),
        "{report}"
    );
}

/// Waits until our policy `name` of `resource` has the `Accepted` condition `want`
/// (`(status, reason)`) for its current generation; the object.
async fn wait_accepted(c: &MeshCluster, resource: &str, name: &str, want: (&str, &str)) -> Value {
    let mut last = Value::Null;
    let seen = mesh_test_support::wait_for(
        &format!("{resource} {name}'s Accepted"),
        SETTLE,
        async || {
            let Some(p) = get_json(c.kube, &[resource, name, "-n", DEMO_NS]) else {
                return false;
            };
            let generation = p["metadata"]["generation"].as_i64();
            last = p.clone();
            kube_support::condition(&p, "Accepted")
                .is_some_and(|(s, r, _)| (s.as_str(), r.as_str()) == want)
                && p["status"]["conditions"][0]["observedGeneration"].as_i64() == generation
        },
    )
    .await;
    assert!(seen.is_ok(), "{want:?}: last seen {last}\n{}", c.logs());
    last
}

/// An `AuthorizationPolicy` on the Service and a namespace default are accepted and in
/// `GET /v1/policy`'s compiled echo; a bad principal pattern is `Invalid` with its field.
async fn authorization_policies_reach_the_compiled_policy(c: &MeshCluster) {
    let admin = c.addr("controller-0", "admin");
    apply(
        c.kube,
        &format!(
            "apiVersion: mesh.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: no-admin, namespace: {DEMO_NS}}}\n\
             spec:\n  targetRef: {{group: \"\", kind: Service, name: echo}}\n  action: DENY\n\
             \x20 rules: [{{to: [{{operation: {{paths: ['/admin/*']}}}}]}}]\n---\n\
             apiVersion: mesh.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: defaults, namespace: {DEMO_NS}}}\n\
             spec:\n  targetRef: {{group: \"\", kind: Namespace, name: {DEMO_NS}}}\n  default: authenticated\n---\n\
             apiVersion: mesh.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: bad-principal, namespace: {DEMO_NS}}}\n\
             spec:\n  targetRef: {{group: \"\", kind: Service, name: echo}}\n\
             \x20 rules: [{{from: [{{source: {{principals: ['spiffe://east.mesh/ns/*/sa/x']}}}}]}}]\n"
        ),
    );
    for name in ["no-admin", "defaults"] {
        wait_accepted(c, "authorizationpolicy", name, ("True", "Accepted")).await;
    }
    let bad = wait_accepted(
        c,
        "authorizationpolicy",
        "bad-principal",
        ("False", "Invalid"),
    )
    .await;
    let (_, _, message) = kube_support::condition(&bad, "Accepted").unwrap();
    assert!(
        message.contains("spec.rules[0].from[0].source.principals[0]"),
        "the message names the field: {message}"
    );
    eventually("the authorization in force", SETTLE, async || {
        let echo = &policy_report(admin).await["services"]["echo.demo"];
        echo["authorization"][0]["name"] == "demo/no-admin"
            && echo["authorization_default"]["policy"] == "demo/defaults"
    })
    .await;
    let report = policy_report(admin).await;
    let echo = &report["services"]["echo.demo"];
    assert_eq!(
        echo["authorization"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(echo["authorization"][0]["action"], "DENY", "{report}");
    assert_eq!(
        echo["authorization_default"]["default"], "authenticated",
        "{report}"
    );
    assert_eq!(
        report["services"]["echo-canary.demo"]["authorization_default"]["policy"], "demo/defaults",
        "every service of the namespace: {report}"
    );
    assert!(split_in_force(&report), "{report}");
}
