//! The kinds read, their targets and bodies checked.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;
use crate::policy::backend_policy::BackendPolicySpec;
use crate::policy::fault::FaultSpec;
use crate::policy::http_cache::CacheRule;
use crate::policy::rate_limit::RateLimitSpec;

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
    let p: RateLimitPolicy = with_target(serde_json::to_value(&limit).unwrap(), service_target());
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
    let p: BackendPolicy = with_target(serde_json::to_value(&backend).unwrap(), service_target());
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
    let e = parse::<BackendPolicy>(&format!("{SERVICE}loadBalancing: roundRobin\n")).unwrap_err();
    assert!(e.contains("loadBalancing"), "{e}");
    let e =
        parse::<RateLimitPolicy>("targetRef: {group: '', kind: Service, name: echo, port: 80}\n")
            .unwrap_err();
    assert!(e.contains("port"), "{e}");
}

#[test]
fn targets_are_checked_per_kind() {
    let p: RateLimitPolicy = parse(&format!("{SERVICE}total: {{requestsPerSecond: 1}}\n")).unwrap();
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
    let p: BackendPolicy = parse("targetRef: {group: core, kind: Service, name: echo}\n").unwrap();
    assert!(field(p.validate().unwrap_err()).starts_with("targetRef.group: "));
    let p: BackendPolicy =
        parse("targetRef: {group: '', kind: Service, name: echo, sectionName: http}\n").unwrap();
    assert!(field(p.validate().unwrap_err()).starts_with("targetRef.sectionName: "));
    let p: BackendPolicy = parse("targetRef: {group: '', kind: Service, name: Echo}\n").unwrap();
    assert!(field(p.validate().unwrap_err()).starts_with("targetRef.name: "));
    let p: CachePolicy = parse("targetRef: {group: x.io, kind: HTTPRoute, name: r}\n").unwrap();
    assert!(field(p.validate().unwrap_err()).starts_with("targetRef.group: "));
}

#[test]
fn bodies_are_validated_naming_the_field() {
    let p: RateLimitPolicy = parse(&format!("{SERVICE}total: {{requestsPerSecond: 0}}\n")).unwrap();
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

#[test]
fn only_an_authorization_policy_targets_a_namespace() {
    let field = |e: AttachmentError| e.to_string();
    let namespace = "targetRef: {group: '', kind: Namespace, name: demo}\n";
    let p: BackendPolicy = parse(namespace).unwrap();
    assert_eq!(
        field(p.validate().unwrap_err()),
        "targetRef.kind: \"Namespace\" cannot be targeted by this policy (only Service)"
    );
    let p: RateLimitPolicy =
        parse(&format!("{namespace}total: {{requestsPerSecond: 1}}\n")).unwrap();
    assert!(field(p.validate().unwrap_err()).starts_with("targetRef.kind: "));
    let p: crate::policy::authorization::AuthorizationPolicy =
        parse(&format!("{namespace}action: DENY\n")).unwrap();
    assert_eq!(
        p.validate(),
        Ok(PolicyTarget::Namespace {
            name: "demo".into()
        })
    );
    let bad: crate::policy::authorization::AuthorizationPolicy =
        parse("targetRef: {group: '', kind: Namespace, name: Demo_1}\n").unwrap();
    assert!(field(bad.validate().unwrap_err()).starts_with("targetRef.name: "));
}
