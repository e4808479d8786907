//! The route layer's tests: a state whose snapshot routes `echo.demo` and `echo-canary.demo`
//! with a compiled policy, and a recording service below the layer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use mesh_core::api::ServiceRoute;
use mesh_core::http::{BoxBody, text};
use mesh_core::names::{Destination, ServiceKey};
use mesh_core::policy::compile::compile;
use mesh_core::policy::documents::parse_documents;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

use super::*;
use crate::outbound::retry_policy::RetryRules;
use crate::test_state::{CLUSTER, echo, endpoint, locality, snapshot, state};
use crate::timeout::TryTimeout;

const ROUTES: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-routes, namespace: demo}
spec:
  parentRefs: [{name: echo}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /canary}}]
    backendRefs: [{name: echo-canary}]
    timeouts: {request: 2s, backendRequest: 500ms}
    retry: {codes: [500], attempts: 4}
  - matches: [{path: {type: Exact, value: /old}}]
    filters:
    - {type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}, statusCode: 301}}
  - matches: [{path: {type: PathPrefix, value: /api/v1}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-route, value: api}]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-answered, value: api}]}}
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {request: 300ms}
  - matches: [{path: {type: PathPrefix, value: /gone}}]
    backendRefs: [{name: gone}]
";

fn canary() -> ServiceKey {
    "echo-canary.demo".parse().unwrap()
}

/// What the service below the layer saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    uri: String,
    route_header: Option<String>,
    dest: ServiceKey,
    try_timeout: Option<Duration>,
    retry: Option<RetryRules>,
    matched: bool,
}

/// The layer under test over its recording service.
type Routed = BoxCloneService<Request<Full<Bytes>>, Response<BoxBody>, ProxyError>;

/// The route layer over a state routing echo (with `ROUTES` unless `routed` is false) and
/// echo-canary, above a service that records each request and answers 200 (after 1 s for
/// `/slow`).
fn stack(routed: bool) -> (Routed, Arc<Mutex<Vec<Seen>>>, Arc<SidecarSnapshot>) {
    let state = state();
    let mut snap = snapshot(vec![locality(CLUSTER, vec![endpoint(CLUSTER, 9)])]);
    snap.services.insert(
        canary(),
        ServiceRoute {
            localities: vec![locality(CLUSTER, vec![endpoint(CLUSTER, 10)])],
        },
    );
    if routed {
        let objects = parse_documents(ROUTES, "routes.yaml", 0).unwrap();
        let compiled = compile(&objects, &|k| k.name != "gone");
        assert_eq!(compiled.statuses.len(), 1);
        snap.policies = compiled.services;
    }
    state.apply_snapshot(snap);
    let snapshot = state.snapshot().expect("applied");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let inner = tower::service_fn(move |req: Request<RoutedBody<Full<Bytes>>>| {
        let record = record.clone();
        async move {
            let ext = req.extensions();
            record.lock().unwrap().push(Seen {
                uri: req.uri().to_string(),
                route_header: req
                    .headers()
                    .get("x-route")
                    .map(|v| v.to_str().unwrap().to_string()),
                dest: ext.get::<Resolved>().unwrap().dest.service.clone(),
                try_timeout: ext.get::<TryTimeout>().map(|t| t.0),
                retry: ext.get::<RetryRules>().cloned(),
                matched: ext.get::<MatchedRule>().is_some(),
            });
            if req.uri().path().starts_with("/slow") {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok::<_, ProxyError>(text(StatusCode::OK, "ok"))
        }
    });
    (
        BoxCloneService::new(layer(state).layer(inner)),
        seen,
        snapshot,
    )
}

fn request(path: &str, snapshot: &Arc<SidecarSnapshot>) -> Request<Full<Bytes>> {
    let mut req = Request::get(format!("http://echo.demo.svc.clusterset.local{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    req.extensions_mut().insert(Resolved {
        dest: Destination {
            service: echo(),
            cluster: None,
        },
        snapshot: snapshot.clone(),
    });
    req
}

#[tokio::test]
async fn a_service_without_routes_passes_unchanged() {
    let (svc, seen, snap) = stack(false);
    let rsp = svc.oneshot(request("/anything", &snap)).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].dest, echo());
    assert!(!seen[0].matched);
}

#[tokio::test]
async fn the_rule_picks_the_backend_and_its_settings_go_down_as_facts() {
    let (svc, seen, snap) = stack(true);
    let rsp = svc.oneshot(request("/canary/x", &snap)).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].dest, canary());
    assert!(seen[0].matched);
    assert_eq!(seen[0].try_timeout, Some(Duration::from_millis(500)));
    assert_eq!(seen[0].retry, Some(RetryRules::for_route(4, &[500], None)));
}

#[tokio::test]
async fn no_matching_rule_is_a_404_and_an_invalid_backend_a_500() {
    let (svc, seen, snap) = stack(true);
    let e = svc
        .clone()
        .oneshot(request("/nowhere", &snap))
        .await
        .unwrap_err();
    assert!(matches!(e, ProxyError::NoRoute { .. }), "{e}");
    assert_eq!(e.status(), StatusCode::NOT_FOUND);
    let e = svc.oneshot(request("/gone", &snap)).await.unwrap_err();
    assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR, "{e}");
    assert!(seen.lock().unwrap().is_empty(), "nothing went down");
}

#[tokio::test]
async fn a_redirect_answers_at_once() {
    let (svc, seen, snap) = stack(true);
    let rsp = svc.oneshot(request("/old?q=1", &snap)).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        rsp.headers()[LOCATION],
        "http://echo.demo.svc.clusterset.local/new?q=1"
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn rewrites_and_header_modifiers_change_the_request_and_the_answer() {
    let (svc, seen, snap) = stack(true);
    let rsp = svc
        .oneshot(request("/api/v1/users?id=7", &snap))
        .await
        .unwrap();
    assert_eq!(rsp.headers()["x-answered"], "api");
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[0].uri,
        "http://echo.demo.svc.clusterset.local/v2/users?id=7"
    );
    assert_eq!(seen[0].route_header.as_deref(), Some("api"));
}

#[tokio::test(start_paused = true)]
async fn the_request_timeout_bounds_everything_below() {
    let (svc, _, snap) = stack(true);
    let started = tokio::time::Instant::now();
    let e = svc.oneshot(request("/slow", &snap)).await.unwrap_err();
    assert!(matches!(e, ProxyError::RequestTimeout { .. }), "{e}");
    assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(started.elapsed(), Duration::from_millis(300));
}
