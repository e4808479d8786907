//! The cache layer over a fake upstream that counts its calls; time is a hand-moved clock.

mod bypass;
mod collapsing;
mod serving;

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
use mesh_core::policy::service_policy::{RouteRule, RuleOrigin};
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
fn answer(body: impl Into<Bytes>, fields: &[(&'static str, &'static str)]) -> Response<BoxBody> {
    let mut rsp = Response::new(full(body.into()));
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
        cache,
        ..RouteRule::to_service(
            RuleOrigin {
                route: "demo/echo".into(),
                created: 0,
                index: 0,
                name: None,
            },
            echo(),
        )
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
