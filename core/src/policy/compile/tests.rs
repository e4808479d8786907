//! The compilation of routes and policy attachments, from YAML text to service policies.

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

/// A document of one of our kinds in `demo`.
fn policy(kind: &str, name: &str, body: &str) -> String {
    format!(
        "apiVersion: mesh.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n{body}"
    )
}

const TWO_RULES: &str = "  parentRefs: [{name: echo}, {name: other}]\n  rules:\n  - name: api\n    matches: [{path: {type: PathPrefix, value: /api}}]\n  - matches: [{path: {type: PathPrefix, value: /}}]\n";
const ON_ROUTE: &str =
    "  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: split}\n";
const ON_API: &str = "  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: split, sectionName: api}\n";
const ON_ECHO: &str = "  targetRef: {group: '', kind: Service, name: echo}\n";

fn service<'a>(c: &'a CompiledPolicy, name: &str) -> &'a ServicePolicy {
    &c.services[&ServiceKey::new(name, "demo").unwrap()]
}

#[test]
fn route_policies_set_every_rule_or_the_named_one_on_every_parent() {
    let c = compile_text(
        &[
            route("split", TWO_RULES),
            policy(
                "FaultPolicy",
                "all",
                &format!("{ON_ROUTE}  abort: {{httpStatus: 503, percentage: 20}}\n"),
            ),
            policy(
                "FaultPolicy",
                "api",
                &format!("{ON_API}  delay: {{fixedDelay: 200ms, percentage: 100}}\n"),
            ),
            policy(
                "RateLimitPolicy",
                "rl",
                &format!("{ON_API}  total: {{requestsPerSecond: 5}}\n"),
            ),
            policy("CachePolicy", "cache", ON_ROUTE),
        ]
        .join("---\n"),
    );
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    for parent in ["echo", "other"] {
        let rules = &service(&c, parent).rules;
        let (api, rest) = (&rules[0], &rules[1]);
        assert_eq!(api.origin.name.as_deref(), Some("api"));
        // The policy on the rule replaces the one on the whole route.
        let fault = api.fault.as_ref().unwrap();
        assert!(fault.abort.is_none() && fault.delay.is_some(), "{fault:?}");
        assert_eq!(
            rest.fault
                .as_ref()
                .unwrap()
                .abort
                .as_ref()
                .unwrap()
                .http_status,
            503
        );
        assert_eq!(
            api.rate_limit
                .as_ref()
                .unwrap()
                .total
                .unwrap()
                .requests_per_second,
            5
        );
        assert!(rest.rate_limit.is_none());
        assert!(api.cache.is_some() && rest.cache.is_some());
    }
    assert!(c.statuses.iter().all(ObjectStatus::accepted));
    assert_eq!(
        c.statuses[2].conditions[0].message,
        "attached to rule api of HTTPRoute demo/split"
    );
}

#[test]
fn service_policies_set_the_backend_and_inbound_limit_even_without_routes() {
    let c = compile_text(
        &[
            policy(
                "BackendPolicy",
                "lb",
                &format!("{ON_ECHO}  loadBalancer: roundRobin\n"),
            ),
            policy(
                "RateLimitPolicy",
                "in",
                &format!("{ON_ECHO}  identity: {{requestsPerSecond: 10}}\n"),
            ),
        ]
        .join("---\n"),
    );
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let echo = service(&c, "echo");
    assert!(echo.rules.is_empty(), "routed implicitly");
    assert!(echo.backend.is_some());
    assert_eq!(
        echo.inbound_rate_limit
            .as_ref()
            .unwrap()
            .identity
            .unwrap()
            .requests_per_second,
        10
    );
    assert_eq!(c.services.len(), 1);
}

#[test]
fn missing_targets_are_named() {
    let c = compile_text(
        &[
            route("split", TWO_RULES),
            policy(
                "FaultPolicy",
                "gone",
                &format!(
                    "{}  abort: {{httpStatus: 500, percentage: 1}}\n",
                    ON_ROUTE.replace("split", "nope")
                ),
            ),
            policy("CachePolicy", "rule", &ON_API.replace("api", "v2")),
            policy("BackendPolicy", "svc", &ON_ECHO.replace("echo", "ghost")),
        ]
        .join("---\n"),
    );
    let reasons: Vec<&str> = c
        .statuses
        .iter()
        .map(|s| s.conditions[0].reason.as_str())
        .collect();
    assert_eq!(
        reasons,
        [
            "Accepted",
            "TargetNotFound",
            "TargetNotFound",
            "TargetNotFound"
        ]
    );
    let errors: Vec<String> = c.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors[0],
        "p.yaml: line 11: FaultPolicy demo/gone (TargetNotFound): spec.targetRef: HTTPRoute demo/nope does not exist"
    );
    assert!(
        errors[1]
            .contains("spec.targetRef.sectionName: HTTPRoute demo/split has no rule named \"v2\""),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("service ghost.demo is not known in any cluster"),
        "{}",
        errors[2]
    );
    assert!(
        service(&c, "echo")
            .rules
            .iter()
            .all(|r| r.fault.is_none() && r.cache.is_none())
    );
    assert!(service(&c, "echo").backend.is_none());
}

#[test]
fn a_policy_on_a_refused_route_is_not_attached() {
    let c = compile_text(
        &[
            route("split", "  parentRefs: [{name: nope}]\n"),
            policy("CachePolicy", "c", ON_ROUTE),
        ]
        .join("---\n"),
    );
    assert_eq!(c.statuses[1].conditions[0].reason, "TargetNotFound");
    assert!(
        c.statuses[1].conditions[0]
            .message
            .contains("is not accepted")
    );
}

#[test]
fn the_newer_of_two_policies_of_one_kind_on_one_target_is_refused() {
    let limit = |rps: u32| format!("{ON_ECHO}  total: {{requestsPerSecond: {rps}}}\n");
    let c = compile_text(
        &[
            policy("RateLimitPolicy", "old", &limit(1)),
            policy("RateLimitPolicy", "new", &limit(2)),
            // Another kind on the same target does not conflict.
            policy("BackendPolicy", "lb", ON_ECHO),
        ]
        .join("---\n"),
    );
    assert!(c.statuses[0].accepted() && c.statuses[2].accepted());
    assert_eq!(c.statuses[1].conditions[0].reason, "Conflicted");
    assert_eq!(
        c.errors[0].to_string(),
        "p.yaml: line 8: RateLimitPolicy demo/new (Conflicted): spec.targetRef: service echo.demo already has the older RateLimitPolicy demo/old (p.yaml: line 1): remove one"
    );
    let echo = service(&c, "echo");
    assert_eq!(
        echo.inbound_rate_limit
            .as_ref()
            .unwrap()
            .total
            .unwrap()
            .requests_per_second,
        1
    );
}

#[test]
fn an_invalid_policy_built_without_the_loader_is_refused() {
    use crate::policy::documents::PolicySpec;
    let mut objects = parse_documents(
        &policy(
            "RateLimitPolicy",
            "rl",
            &format!("{ON_ECHO}  total: {{requestsPerSecond: 1}}\n"),
        ),
        "k8s",
        0,
    )
    .unwrap();
    let PolicySpec::RateLimitPolicy(p) = &mut objects[0].spec else {
        unreachable!()
    };
    p.total = None;
    let c = compile(&objects, &known);
    assert_eq!(c.statuses[0].conditions[0].reason, "Invalid");
    assert!(
        c.errors[0]
            .message
            .contains("spec.total: a rate limit needs"),
        "{}",
        c.errors[0]
    );
    assert!(c.services.is_empty());
}

#[test]
fn authorization_policies_on_a_service_all_apply_oldest_first() {
    let c = compile_text(&format!(
        "{}---\n{}---\n{}",
        policy(
            "AuthorizationPolicy",
            "allow-web",
            &format!("{ON_ECHO}  rules: [{{from: [{{source: {{namespaces: [web]}}}}]}}]\n")
        ),
        policy(
            "AuthorizationPolicy",
            "no-admin",
            &format!(
                "{ON_ECHO}  action: DENY\n  rules: [{{to: [{{operation: {{paths: ['/admin/*']}}}}]}}]\n"
            )
        ),
        policy(
            "AuthorizationPolicy",
            "gone",
            "  targetRef: {group: '', kind: Service, name: nope}\n"
        ),
    ));
    assert!(
        c.statuses[0].accepted() && c.statuses[1].accepted(),
        "{:?}",
        c.statuses
    );
    assert_eq!(c.statuses[2].conditions[0].reason, "TargetNotFound");
    assert!(
        c.errors[0].to_string().starts_with(
            "p.yaml: line 16: AuthorizationPolicy demo/gone (TargetNotFound): spec.targetRef: service nope.demo"
        ),
        "{}",
        c.errors[0]
    );
    let echo = service(&c, "echo");
    assert!(echo.rules.is_empty() && !echo.is_empty());
    let names: Vec<&str> = echo.authorization.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["demo/allow-web", "demo/no-admin"]);
    assert_eq!(
        echo.authorization[1].action,
        crate::policy::authorization::AuthorizationAction::Deny
    );
    // They travel in snapshots.
    let json = serde_json::to_string(echo).unwrap();
    assert_eq!(serde_json::from_str::<ServicePolicy>(&json).unwrap(), *echo);
}
