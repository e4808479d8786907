//! The cache layer over a fake upstream that counts its calls; time is a hand-moved clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::AGE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use mesh_core::http::{BoxBody, empty, full};
use mesh_core::names::Destination;
use mesh_core::policy::http_cache::CacheRule;
use mesh_core::policy::router::CompiledRule;
use mesh_core::policy::service_policy::{RouteRule, RuleBackend, RuleOrigin};
use tokio::sync::Notify;
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::facts::{MatchedRule, Resolved};
use crate::metrics::{CacheLabels, Metrics};
use crate::test_state::{echo, snapshot};

/// The cache over a fake upstream, as the tests call it.
type Svc = BoxCloneService<Request<BoxBody>, Response<BoxBody>, ProxyError>;

type Answer = Arc<dyn Fn(&Request<BoxBody>) -> Response<BoxBody> + Send + Sync>;

/// The layers below the cache: answers with `answer`, counting calls; with `hold_first`, the
/// first call waits for it to be notified.
#[derive(Clone)]
struct Upstream {
    calls: Arc<AtomicUsize>,
    hold_first: Option<Arc<Notify>>,
    answer: Answer,
}

impl Upstream {
    fn new(
        answer: impl Fn(&Request<BoxBody>) -> Response<BoxBody> + Send + Sync + 'static,
    ) -> Self {
        Self {
            calls: Arc::default(),
            hold_first: None,
            answer: Arc::new(answer),
        }
    }

    /// The same, with its first call held until the returned gate is notified.
    fn holding_first(mut self) -> (Self, Arc<Notify>) {
        let gate = Arc::new(Notify::new());
        self.hold_first = Some(gate.clone());
        (self, gate)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<BoxBody>,
        Response = Response<BoxBody>,
        Error = ProxyError,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static {
        let this = self.clone();
        tower::service_fn(move |req: Request<BoxBody>| {
            let this = this.clone();
            async move {
                let n = this.calls.fetch_add(1, Ordering::SeqCst);
                if let (0, Some(gate)) = (n, &this.hold_first) {
                    gate.notified().await;
                }
                Ok::<_, ProxyError>((this.answer)(&req))
            }
        })
    }
}

/// An answer with `body` and these header fields.
fn answer(body: &'static str, fields: &[(&'static str, &'static str)]) -> Response<BoxBody> {
    let mut rsp = Response::new(full(body));
    for (name, value) in fields {
        rsp.headers_mut()
            .append(*name, http::HeaderValue::from_static(value));
    }
    rsp
}

const FRESH_MINUTE: (&str, &str) = ("cache-control", "max-age=60");

/// A cache on a clock the test moves.
struct Fixture {
    cache: Arc<ResponseCache>,
    metrics: Metrics,
    now: Arc<Mutex<SystemTime>>,
}

impl Fixture {
    fn new(capacity: usize) -> Self {
        let now = Arc::new(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let metrics = Metrics::unregistered();
        let clock = now.clone();
        let cache = ResponseCache::with_clock(
            capacity,
            metrics.clone(),
            Arc::new(move || *clock.lock().unwrap()),
        );
        Self {
            cache,
            metrics,
            now,
        }
    }

    fn advance(&self, secs: u64) {
        *self.now.lock().unwrap() += Duration::from_secs(secs);
    }

    /// `mesh_sidecar_cache_lookups_total{service="echo.demo",result}`.
    fn lookups(&self, result: &'static str) -> u64 {
        self.metrics
            .cache_lookups
            .get_or_create(&CacheLabels {
                service: echo().to_string(),
                result,
            })
            .get()
    }

    fn stack(&self, upstream: &Upstream) -> Svc {
        BoxCloneService::new(layer(self.cache.clone()).layer(upstream.service()))
    }
}

/// The fact `route` sets for a rule caching under `cache`.
fn matched(cache: Option<CacheRule>) -> MatchedRule {
    let rule = RouteRule {
        origin: RuleOrigin {
            route: "demo/echo".into(),
            created: 0,
            index: 0,
            name: None,
        },
        matches: vec![],
        filters: vec![],
        backends: vec![RuleBackend {
            service: echo(),
            weight: 1,
            invalid: None,
        }],
        request_timeout: None,
        backend_timeout: None,
        retry: None,
        fault: None,
        rate_limit: None,
        cache,
    };
    MatchedRule(Arc::new(
        CompiledRule::new(rule, "demo").expect("a valid rule"),
    ))
}

/// A request for `http://echo.demo{path}` routed by `rule`, with these header fields.
fn request(
    method: Method,
    path: &str,
    fields: &[(&'static str, &'static str)],
    rule: Option<&MatchedRule>,
) -> Request<BoxBody> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://echo.demo{path}"))
        .body(empty())
        .unwrap();
    for (name, value) in fields {
        req.headers_mut()
            .append(*name, http::HeaderValue::from_static(value));
    }
    req.extensions_mut().insert(Resolved {
        dest: Destination {
            service: echo(),
            cluster: None,
        },
        snapshot: Arc::new(snapshot(vec![])),
    });
    if let Some(rule) = rule {
        req.extensions_mut().insert(rule.clone());
    }
    req
}

fn get(path: &str, rule: &MatchedRule) -> Request<BoxBody> {
    request(Method::GET, path, &[], Some(rule))
}

/// Sends `req`; the status, `x-mesh-cache`, `Age` and body of the answer.
fn send(
    svc: &Svc,
    req: Request<BoxBody>,
) -> impl Future<Output = (StatusCode, String, Option<String>, Bytes)> + Send + 'static {
    // Boxed here, where its type is concrete: proving `Send` of the bare `Oneshot` inside the
    // async block trips over the higher-ranked lifetime of the boxed error type.
    let call: crate::stack::BoxFuture<Result<Response<BoxBody>, ProxyError>> =
        Box::pin(svc.clone().oneshot(req));
    async move {
        let rsp = call.await.expect("an answer");
        let field = |name| {
            rsp.headers()
                .get(name)
                .map(|v: &http::HeaderValue| v.to_str().unwrap().to_string())
        };
        let cache = field(HEADER_MESH_CACHE).unwrap_or_default();
        let age = field(AGE.as_str());
        let status = rsp.status();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        (status, cache, age, body)
    }
}

#[tokio::test]
async fn a_fresh_answer_is_served_from_the_store_with_its_age() {
    let f = Fixture::new(1 << 20);
    let upstream = Upstream::new(|_| answer("v1", &[FRESH_MINUTE]));
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    let (status, cache, age, body) = send(&svc, get("/a", &rule)).await;
    assert_eq!(
        (status, cache.as_str(), age, &body[..]),
        (StatusCode::OK, "miss", None, &b"v1"[..])
    );
    f.advance(10);
    let (status, cache, age, body) = send(&svc, get("/a", &rule)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache, "hit");
    assert_eq!(age.as_deref(), Some("10"));
    assert_eq!(body, "v1");
    assert_eq!(upstream.calls(), 1);
    assert_eq!((f.lookups("miss"), f.lookups("hit")), (1, 1));
    assert_eq!(f.metrics.cache_entries.get(), 1);
    assert!(f.metrics.cache_bytes.get() > 2);
    // Past its lifetime it is fetched again, unless the request accepts it stale.
    f.advance(60);
    let (_, cache, age, _) = send(
        &svc,
        request(
            Method::GET,
            "/a",
            &[("cache-control", "max-stale=30")],
            Some(&rule),
        ),
    )
    .await;
    assert_eq!((cache.as_str(), age.as_deref()), ("stale", Some("70")));
    let (_, cache, _, _) = send(&svc, get("/a", &rule)).await;
    assert_eq!(cache, "miss");
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn vary_variants_are_kept_apart() {
    let f = Fixture::new(1 << 20);
    let upstream = Upstream::new(|req| {
        let lang = match req.headers().get("accept-language").map(|v| v.as_bytes()) {
            Some(b"fr") => "bonjour",
            _ => "hello",
        };
        answer(lang, &[FRESH_MINUTE, ("vary", "accept-language")])
    });
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    let lang = |l| {
        request(
            Method::GET,
            "/greet",
            &[("accept-language", l)],
            Some(&rule),
        )
    };
    assert_eq!(send(&svc, lang("en")).await.1, "miss");
    assert_eq!(send(&svc, lang("fr")).await.1, "miss");
    let (_, cache, _, body) = send(&svc, lang("en")).await;
    assert_eq!((cache.as_str(), &body[..]), ("hit", &b"hello"[..]));
    let (_, cache, _, body) = send(&svc, lang("fr")).await;
    assert_eq!((cache.as_str(), &body[..]), ("hit", &b"bonjour"[..]));
    assert_eq!(upstream.calls(), 2);
    assert_eq!(f.metrics.cache_entries.get(), 2);
}

#[tokio::test]
async fn no_store_answers_are_never_stored() {
    let f = Fixture::new(1 << 20);
    let upstream =
        Upstream::new(|_| answer("secret", &[("cache-control", "no-store, max-age=60")]));
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    for _ in 0..3 {
        let (status, cache, _, body) = send(&svc, get("/a", &rule)).await;
        assert_eq!(
            (status, cache.as_str(), &body[..]),
            (StatusCode::OK, "miss", &b"secret"[..])
        );
    }
    assert_eq!(upstream.calls(), 3);
    assert_eq!(f.metrics.cache_entries.get(), 0);
}

#[tokio::test]
async fn fifty_concurrent_misses_make_one_upstream_request() {
    let f = Fixture::new(1 << 20);
    let (upstream, gate) = Upstream::new(|_| answer("shared", &[FRESH_MINUTE])).holding_first();
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    let tasks: Vec<_> = (0..50)
        .map(|_| tokio::spawn(send(&svc, get("/hot", &rule))))
        .collect();
    // Every other request joins the leader's flight before the upstream answers.
    while f.cache.waiters() < 49 {
        tokio::task::yield_now().await;
    }
    assert_eq!(upstream.calls(), 1);
    gate.notify_one();
    let mut results = Vec::new();
    for task in tasks {
        let (status, cache, _, body) = task.await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"shared"[..]));
        results.push(cache);
    }
    assert_eq!(upstream.calls(), 1, "collapsed into one upstream request");
    assert_eq!(results.iter().filter(|c| *c == "miss").count(), 1);
    assert_eq!(results.iter().filter(|c| *c == "hit").count(), 49);
    assert_eq!(f.cache.waiters(), 0);
}

#[tokio::test]
async fn waiters_of_an_answer_that_is_not_stored_go_upstream_themselves() {
    let f = Fixture::new(1 << 20);
    let (upstream, gate) =
        Upstream::new(|_| answer("mine", &[("cache-control", "private")])).holding_first();
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    let tasks: Vec<_> = (0..5)
        .map(|_| tokio::spawn(send(&svc, get("/me", &rule))))
        .collect();
    while f.cache.waiters() < 4 {
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    for task in tasks {
        let (status, cache, _, body) = task.await.unwrap();
        assert_eq!(
            (status, cache.as_str(), &body[..]),
            (StatusCode::OK, "miss", &b"mine"[..])
        );
    }
    assert_eq!(upstream.calls(), 5);
}

#[tokio::test]
async fn a_cancelled_leader_does_not_leave_its_waiters_hanging() {
    let f = Fixture::new(1 << 20);
    // The leader's upstream call never answers; its client gives up.
    let (upstream, _never) = Upstream::new(|_| answer("late", &[FRESH_MINUTE])).holding_first();
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    let leader = tokio::spawn(send(&svc, get("/slow", &rule)));
    while upstream.calls() < 1 {
        tokio::task::yield_now().await;
    }
    let waiter = tokio::spawn(send(&svc, get("/slow", &rule)));
    while f.cache.waiters() < 1 {
        tokio::task::yield_now().await;
    }
    leader.abort();
    let (status, cache, _, body) = waiter.await.unwrap();
    assert_eq!(
        (status, cache.as_str(), &body[..]),
        (StatusCode::OK, "miss", &b"late"[..])
    );
    assert_eq!(upstream.calls(), 2);
    // What the waiter fetched was stored.
    assert_eq!(send(&svc, get("/slow", &rule)).await.1, "hit");
}

#[tokio::test]
async fn the_byte_bound_evicts_the_least_recently_used() {
    const KIB: &str = include_str!("tests.rs");
    let body: &'static str = &KIB[..1000];
    // Room for two such entries (body, header fields and key), not three.
    let f = Fixture::new(2500);
    let upstream = Upstream::new(move |_| answer(body, &[FRESH_MINUTE]));
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    for path in ["/1", "/2", "/3"] {
        assert_eq!(send(&svc, get(path, &rule)).await.1, "miss");
        assert!(f.cache.stats().bytes_in_use <= 2500);
    }
    assert_eq!(f.metrics.cache_entries.get(), 2);
    assert!(f.metrics.cache_bytes.get() <= 2500);
    assert_eq!(f.cache.stats().evictions, 1);
    assert_eq!(send(&svc, get("/3", &rule)).await.1, "hit");
    assert_eq!(
        send(&svc, get("/1", &rule)).await.1,
        "miss",
        "evicted first"
    );
    assert_eq!(upstream.calls(), 4);
}

#[tokio::test]
async fn an_answer_past_the_entry_bound_streams_through_unstored() {
    let f = Fixture::new(1 << 20);
    let upstream = Upstream::new(|_| answer("0123456789abcdef", &[FRESH_MINUTE]));
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule {
        max_entry_bytes: 8,
        ..CacheRule::default()
    }));
    for _ in 0..2 {
        let (_, cache, _, body) = send(&svc, get("/big", &rule)).await;
        assert_eq!(
            (cache.as_str(), &body[..]),
            ("miss", &b"0123456789abcdef"[..])
        );
    }
    assert_eq!(upstream.calls(), 2);
    assert_eq!(f.metrics.cache_entries.get(), 0);
}

#[tokio::test]
async fn an_unsafe_method_invalidates_on_any_route_unless_it_failed() {
    let f = Fixture::new(1 << 20);
    let upstream = Upstream::new(|req| match req.uri().path() {
        "/fail" => {
            let mut rsp = answer("no", &[]);
            *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            rsp
        }
        _ => answer("doc", &[FRESH_MINUTE]),
    });
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    let plain = matched(None);
    send(&svc, get("/doc", &rule)).await;
    send(&svc, get("/fail", &rule)).await;
    assert_eq!(f.metrics.cache_entries.get(), 1, "a 500 is not stored");
    // A POST on the caching route bypasses the cache and drops the entry.
    let (_, cache, _, _) = send(&svc, request(Method::POST, "/doc", &[], Some(&rule))).await;
    assert_eq!(cache, "bypass");
    assert_eq!(f.metrics.cache_entries.get(), 0);
    assert_eq!(send(&svc, get("/doc", &rule)).await.1, "miss");
    // A PUT on a route without caching drops it too, and is not marked.
    let (_, cache, _, _) = send(&svc, request(Method::PUT, "/doc", &[], Some(&plain))).await;
    assert_eq!(cache, "");
    assert_eq!(f.metrics.cache_entries.get(), 0);
    send(&svc, get("/doc", &rule)).await;
    // A failed DELETE invalidates nothing.
    *f.now.lock().unwrap() += Duration::from_secs(1);
    let upstream_fail = Upstream::new(|_| {
        let mut rsp = answer("", &[]);
        *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        rsp
    });
    let failing = f.stack(&upstream_fail);
    send(&failing, request(Method::DELETE, "/doc", &[], None)).await;
    assert_eq!(f.metrics.cache_entries.get(), 1);
    assert_eq!(send(&svc, get("/doc", &rule)).await.1, "hit");
}

#[tokio::test]
async fn requests_the_cache_does_not_handle_are_marked_or_left_alone() {
    let f = Fixture::new(1 << 20);
    let upstream = Upstream::new(|_| answer("x", &[FRESH_MINUTE]));
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    // No rule at all, or a rule without cache: untouched.
    let (_, cache, _, _) = send(&svc, request(Method::GET, "/a", &[], None)).await;
    assert_eq!(cache, "");
    let (_, cache, _, _) = send(&svc, get("/a", &matched(None))).await;
    assert_eq!(cache, "");
    assert_eq!(f.metrics.cache_entries.get(), 0);
    // Authorization bypasses the cache under the default rule.
    let auth = request(
        Method::GET,
        "/a",
        &[("authorization", "Bearer t")],
        Some(&rule),
    );
    assert_eq!(send(&svc, auth).await.1, "bypass");
    assert_eq!(f.lookups("bypass"), 1);
    // only-if-cached with nothing stored: 504 without going upstream.
    let before = upstream.calls();
    let only = request(
        Method::GET,
        "/a",
        &[("cache-control", "only-if-cached")],
        Some(&rule),
    );
    let (status, cache, _, _) = send(&svc, only).await;
    assert_eq!(
        (status, cache.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "miss")
    );
    assert_eq!(upstream.calls(), before);
}

#[tokio::test]
async fn a_head_is_answered_from_a_stored_get() {
    let f = Fixture::new(1 << 20);
    let upstream = Upstream::new(|_| answer("body", &[FRESH_MINUTE]));
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    send(&svc, get("/a", &rule)).await;
    let rsp = svc
        .clone()
        .oneshot(request(Method::HEAD, "/a", &[], Some(&rule)))
        .await
        .unwrap();
    assert_eq!(rsp.headers()[HEADER_MESH_CACHE], "hit");
    assert_eq!(rsp.headers()["content-length"], "4");
    assert!(
        rsp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    assert_eq!(upstream.calls(), 1);
}
