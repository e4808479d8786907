//! The cache layer: the response cache of routes whose rule carries a `cache` (issue 11,
//! feature 5), over the pure RFC 9111 logic in `mesh_core::policy::http_cache`. It sits below
//! `route` (which sets [`MatchedRule`]) and above `breaker` and `retry`, so an answer from the
//! store costs no endpoint, no breaker sample and no retry budget, and an answer stored is the
//! one the retries settled on.
//!
//! Per request:
//! - no [`MatchedRule`], or a rule without `cache`: passed on untouched (an unsafe method's
//!   answer still invalidates, see below);
//! - fresh in the store: answered from it with `Age` and `x-mesh-cache: hit`; stale and the
//!   request allows it (`max-stale`): `x-mesh-cache: stale`;
//! - `only-if-cached` and nothing stored answers it: 504 with `x-mesh-cache: miss`;
//! - a miss: forwarded with `x-mesh-cache: miss`; when the answer's head is storable its body
//!   is buffered up to the rule's `maxEntryBytes` and stored (past the bound, or with trailers,
//!   the rest streams through unchanged and nothing is stored);
//! - a request the cache does not handle (method, `Authorization`, conditional, no authority):
//!   forwarded with `x-mesh-cache: bypass`, a value of its own so that "the cache looked and had
//!   nothing" and "the cache did not look" can be told apart when debugging.
//!
//! Concurrent misses for one key collapse (RFC 9111 section 4 allows it): the first fetches,
//! the others wait for its flight to end (answer stored or known not storable, an error, or its
//! client gone: the flight is a drop guard) and look again. A waiter the stored answer does not
//! serve (nothing stored, another `Vary` variant) is forwarded itself without waiting again, so
//! a resource that is never storable costs one extra round of waiting at most, not a queue.
//!
//! An unsafe method's non-error answer invalidates the URIs it names (RFC 9111 section 4.4),
//! on any route: the store is shared by every route, and a POST on a route without `cache`
//! still changes what a GET on another route cached.
//!
//! Metrics: `mesh_sidecar_cache_lookups_total{service,result}` once per request the cache
//! handles (`result` is the `x-mesh-cache` value; `service` the destination `resolve` or
//! `route` chose), gauges `mesh_sidecar_cache_bytes` and `mesh_sidecar_cache_entries`.

mod body;
mod shared;

use std::sync::Arc;

use http::header::HOST;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use mesh_core::api::HEADER_MESH_ERROR;
use mesh_core::http::{BoxBody, full, text};
use mesh_core::policy::http_cache::{
    CacheRule, CachedResponse, ExchangeTimes, Lookup, RequestHead, check_storable,
};
use tower::{Service, ServiceExt};

pub use shared::{Clock, ResponseCache};

use self::body::{Buffered, buffer};
use self::shared::{Begin, Flight};
use super::errors::ProxyError;
use crate::facts::{MatchedRule, Resolved};
use crate::stack::{Concern, ConcernLayer};

/// The response header saying what the cache did: `hit`, `stale`, `miss` or `bypass`.
pub const HEADER_MESH_CACHE: &str = "x-mesh-cache";

/// The cache layer over `cache`, the sidecar's one store.
pub fn layer(cache: Arc<ResponseCache>) -> ConcernLayer<Cache> {
    ConcernLayer(Cache { cache })
}

/// Answers from and fills the response cache.
#[derive(Debug, Clone)]
pub struct Cache {
    cache: Arc<ResponseCache>,
}

/// What the cache did with a request: the `x-mesh-cache` value and the metric's `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Hit,
    Stale,
    Miss,
    Bypass,
}

impl Outcome {
    /// What the store's verdict makes of the request.
    fn of(lookup: &Lookup) -> Self {
        match lookup {
            Lookup::Fresh(_) => Self::Hit,
            Lookup::Stale(_) => Self::Stale,
            Lookup::Miss | Lookup::OnlyIfCachedMiss => Self::Miss,
            Lookup::Bypass(_) => Self::Bypass,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Stale => "stale",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// The request head the cache needs after the request went down the stack.
#[derive(Debug)]
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Head {
    fn of(parts: &Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        }
    }

    fn view(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
        }
    }
}

impl<S, B> Concern<Request<B>, S> for Cache
where
    S: Service<Request<B>, Response = Response<BoxBody>, Error = ProxyError> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = ProxyError;

    async fn handle(self, req: Request<B>, next: S) -> Result<Response<BoxBody>, ProxyError> {
        let matched = req.extensions().get::<MatchedRule>().map(|m| m.0.clone());
        let Some(rule) = matched.as_ref().and_then(|m| m.rule.cache.as_ref()) else {
            return self.uncached(req, next).await;
        };
        let service = req
            .extensions()
            .get::<Resolved>()
            .map_or_else(|| "-".to_string(), |r| r.dest.service.to_string());
        let (parts, body) = req.into_parts();
        let head = Head::of(&parts);
        let req = Request::from_parts(parts, body);
        let (lookup, flight) = match self.cache.begin(rule, head.view()) {
            Begin::Lookup(lookup) => (lookup, None),
            Begin::Lead(flight) => (Lookup::Miss, Some(flight)),
            Begin::Wait(mut waiting) => {
                // Err: the flight ended, which is all a waiter waits for (no value is sent).
                let _ = waiting.changed().await;
                // A miss now (nothing stored, or another variant) is forwarded without a
                // flight: a waiter is never queued twice.
                (self.cache.lookup(rule, head.view()), None)
            }
        };
        let outcome = Outcome::of(&lookup);
        // Counted before forwarding, so that a request failing below is counted too.
        self.cache.count(&service, outcome.as_str());
        let rsp = match lookup {
            Lookup::Fresh(cached) | Lookup::Stale(cached) => from_store(cached),
            Lookup::OnlyIfCachedMiss => {
                let mut rsp = text(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the request said only-if-cached and the cache holds no answer for it",
                );
                rsp.headers_mut().insert(
                    HEADER_MESH_ERROR,
                    HeaderValue::from_static("only-if-cached"),
                );
                rsp
            }
            Lookup::Miss => self.fetch(rule, &head, req, next, flight).await?,
            Lookup::Bypass(_) => {
                let rsp = next.oneshot(req).await?;
                self.invalidate(&head, &rsp);
                rsp
            }
        };
        Ok(marked(rsp, outcome))
    }
}

impl Cache {
    /// A request on a route without caching: passed on; an unsafe method's answer invalidates.
    async fn uncached<S, B>(self, req: Request<B>, next: S) -> Result<Response<BoxBody>, ProxyError>
    where
        S: Service<Request<B>, Response = Response<BoxBody>, Error = ProxyError>,
    {
        if req.method().is_safe() {
            return next.oneshot(req).await;
        }
        // Invalidation needs only the target: the URI and the Host it may fall back to.
        let mut headers = HeaderMap::new();
        if let Some(host) = req.headers().get(HOST) {
            headers.insert(HOST, host.clone());
        }
        let head = Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers,
        };
        let rsp = next.oneshot(req).await?;
        self.invalidate(&head, &rsp);
        Ok(rsp)
    }

    /// Forwards a miss and stores its answer when it may be; `flight`, if this request leads
    /// one, ends once the answer is stored or known not storable.
    async fn fetch<S, B>(
        &self,
        rule: &CacheRule,
        head: &Head,
        req: Request<B>,
        next: S,
        flight: Option<Flight>,
    ) -> Result<Response<BoxBody>, ProxyError>
    where
        S: Service<Request<B>, Response = Response<BoxBody>, Error = ProxyError>,
    {
        let request_time = self.cache.now();
        let rsp = next.oneshot(req).await?;
        let times = ExchangeTimes {
            request_time,
            response_time: self.cache.now(),
        };
        let (parts, body) = rsp.into_parts();
        if check_storable(rule, head.view(), (&parts).into(), times).is_err() {
            drop(flight);
            return Ok(Response::from_parts(parts, body));
        }
        let body = match buffer(body, rule.max_entry_bytes).await {
            Buffered::Complete(bytes) => {
                // Refused here only by the whole entry's size: the answer is forwarded anyway.
                let _ = self
                    .cache
                    .store(rule, head.view(), (&parts).into(), bytes.clone(), times);
                full(bytes)
            }
            Buffered::Streaming(body) => body,
        };
        drop(flight);
        Ok(Response::from_parts(parts, body))
    }

    /// Invalidates what an unsafe request's answer made obsolete.
    fn invalidate(&self, head: &Head, rsp: &Response<BoxBody>) {
        if !head.method.is_safe() {
            let response = mesh_core::policy::http_cache::ResponseHead {
                status: rsp.status(),
                headers: rsp.headers(),
            };
            self.cache.invalidate(head.view(), response);
        }
    }
}

/// The answer built from a stored one.
fn from_store(cached: CachedResponse) -> Response<BoxBody> {
    let mut rsp = Response::new(full(cached.body));
    *rsp.status_mut() = cached.status;
    *rsp.headers_mut() = cached.headers;
    rsp
}

/// `rsp` with `x-mesh-cache` saying what the cache did.
fn marked(mut rsp: Response<BoxBody>, outcome: Outcome) -> Response<BoxBody> {
    rsp.headers_mut().insert(
        HEADER_MESH_CACHE,
        HeaderValue::from_static(outcome.as_str()),
    );
    rsp
}

#[cfg(test)]
mod tests;
