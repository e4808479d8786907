//! The route layer: a service's traffic policy applied to each request. With no route for the
//! service, the request goes on unchanged (implicit routing). Otherwise the rule of highest
//! precedence that matches is found (none: 404, as the Gateway API says), and its filters and
//! settings applied: a redirect answers at once; header modifiers and a URL rewrite change the
//! request; the backend is drawn by weight (an invalid one: 500; one that exists nowhere: 503
//! from resolving it); its timeouts and retries go down as facts (`TryTimeout`, `RetryRules`)
//! and the whole request is bounded by the rule's request timeout; response header modifiers
//! change the answer. Mirrors get a copy of their share of the requests (`mirror.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::LOCATION;
use http::{HeaderValue, Request, Response, Uri};
use http_body::Body;
use http_body_util::Either;
use mesh_core::api::SidecarSnapshot;
use mesh_core::http::{BoxBody, BoxError, empty};
use mesh_core::names::{Destination, ServiceKey};
use mesh_core::policy::filters::RouteFilter;
use mesh_core::policy::route_match::RequestView;
use mesh_core::policy::router::{CompiledRule, Router};
use rand::Rng;
use tower::{Service, ServiceExt};

use super::errors::ProxyError;
use super::mirror::{self, RoutedBody};
use super::retry_policy::RetryRules;
use crate::facts::{MatchedRule, Resolved};
use crate::stack::{Concern, ConcernLayer};
use crate::state::SidecarState;
use crate::timeout::TryTimeout;

/// The route layer, against `state`'s snapshots.
pub fn layer(state: Arc<SidecarState>) -> ConcernLayer<Route> {
    ConcernLayer(Route {
        state,
        routers: Arc::new(Routers::default()),
    })
}

/// Applies each request's route.
#[derive(Debug, Clone)]
pub struct Route {
    state: Arc<SidecarState>,
    routers: Arc<Routers>,
}

/// The compiled router of each service, rebuilt only when a new snapshot changes its policy.
#[derive(Debug, Default)]
struct Routers(Mutex<HashMap<ServiceKey, CachedRouter>>);

#[derive(Debug)]
struct CachedRouter {
    /// The snapshot version it was last checked against.
    version: u64,
    policy: mesh_core::policy::service_policy::ServicePolicy,
    router: Result<Arc<Router>, String>,
}

impl Routers {
    /// The router of `service` in `snapshot`; `None`: the service has no route.
    fn get(
        &self,
        service: &ServiceKey,
        snapshot: &SidecarSnapshot,
    ) -> Option<Result<Arc<Router>, String>> {
        let policy = snapshot.policies.get(service)?;
        let mut routers = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = routers.get_mut(service) {
            if cached.version == snapshot.version {
                return Some(cached.router.clone());
            }
            if cached.policy == *policy {
                cached.version = snapshot.version;
                return Some(cached.router.clone());
            }
        }
        let router = Router::new(policy, &service.namespace)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        if let Err(e) = &router {
            // The controller compiles the same way before sending: this is a version skew.
            tracing::error!(%service, error = %e, "the service's policy does not compile here");
        }
        routers.insert(
            service.clone(),
            CachedRouter {
                version: snapshot.version,
                policy: policy.clone(),
                router: router.clone(),
            },
        );
        Some(router)
    }
}

impl<S, B> Concern<Request<B>, S> for Route
where
    S: Service<Request<RoutedBody<B>>, Response = Response<BoxBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = ProxyError;

    async fn handle(self, req: Request<B>, next: S) -> Result<Response<BoxBody>, ProxyError> {
        let Some(resolved) = req.extensions().get::<Resolved>().cloned() else {
            return Err(ProxyError::Misassembled("Resolved"));
        };
        let service = resolved.dest.service.clone();
        let router = match self.routers.get(&service, &resolved.snapshot) {
            None => return next.oneshot(req.map(Either::Left)).await,
            // A policy without routes (a backend policy only): implicit routing.
            Some(Ok(router)) if router.is_empty() => {
                return next.oneshot(req.map(Either::Left)).await;
            }
            Some(Ok(router)) => router,
            Some(Err(reason)) => return Err(ProxyError::PolicyInvalid { service, reason }),
        };
        let (mut parts, body) = req.into_parts();
        let (rule, prefix) = {
            let view = RequestView {
                method: &parts.method,
                path: parts.uri.path(),
                query: parts.uri.query(),
                headers: &parts.headers,
            };
            match router.route(&view) {
                Some(m) => (m.rule.clone(), m.prefix.map(str::to_string)),
                None => return Err(ProxyError::NoRoute { service }),
            }
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        if let Some(redirect) = rule.redirect() {
            let host = parts.uri.authority().map_or("", |a| a.as_str());
            let location = redirect.location(host, &path_and_query, prefix.as_deref());
            let mut rsp = Response::new(empty());
            *rsp.status_mut() = redirect.status;
            if let Ok(v) = HeaderValue::from_str(&location) {
                rsp.headers_mut().insert(LOCATION, v);
            }
            return Ok(rsp);
        }
        for filter in &rule.filters {
            match filter {
                RouteFilter::RequestHeaders(edits) => edits.apply(&mut parts.headers),
                RouteFilter::Rewrite(rewrite) => {
                    let authority = rewrite
                        .hostname
                        .clone()
                        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
                        .unwrap_or_default();
                    let path = match &rewrite.path {
                        Some(change) => change.apply(&path_and_query, prefix.as_deref()),
                        None => path_and_query.clone(),
                    };
                    parts.uri = Uri::builder()
                        .scheme("http")
                        .authority(authority)
                        .path_and_query(path)
                        .build()
                        .map_err(|e| ProxyError::PolicyInvalid {
                            service: service.clone(),
                            reason: format!(
                                "{}: the rewritten URI is invalid: {e}",
                                rule.rule.origin
                            ),
                        })?;
                }
                RouteFilter::ResponseHeaders(_)
                | RouteFilter::Redirect(_)
                | RouteFilter::Mirror(_) => {}
            }
        }
        let mirrors = mirror::drawn(
            rule.filters.iter().filter_map(|f| match f {
                RouteFilter::Mirror(m) => Some(m),
                _ => None,
            }),
            &mut rand::rng(),
        );
        let (body, copy) = mirror::buffer_for_copy(body, !mirrors.is_empty(), &service).await?;
        if let Some(copy) = copy {
            mirror::send(&self.state, &next, &parts, copy, mirrors);
        }
        let backend = rule.backend_for(rand::rng().random());
        if let Some(reason) = &backend.invalid {
            return Err(ProxyError::InvalidBackend {
                service,
                reason: reason.clone(),
            });
        }
        if backend.service != service {
            let dest = Destination {
                service: backend.service.clone(),
                cluster: None,
            };
            let snapshot = self.state.route(&dest).await?;
            parts.extensions.insert(Resolved { dest, snapshot });
        }
        settings(&rule, &mut parts.extensions);
        let call = next.oneshot(Request::from_parts(parts, body));
        let mut rsp = match rule.rule.request_timeout.filter(|t| !t.is_zero()) {
            Some(after) => tokio::time::timeout(after, call)
                .await
                .map_err(|_| ProxyError::RequestTimeout { service, after })??,
            None => call.await?,
        };
        for filter in &rule.filters {
            if let RouteFilter::ResponseHeaders(edits) = filter {
                edits.apply(rsp.headers_mut());
            }
        }
        Ok(rsp)
    }
}

/// The rule's settings for the layers below, as facts.
fn settings(rule: &Arc<CompiledRule>, extensions: &mut http::Extensions) {
    if let Some(after) = rule.rule.backend_timeout {
        extensions.insert(TryTimeout(after));
    }
    if let Some(retry) = &rule.rule.retry {
        extensions.insert(RetryRules::for_route(
            retry.attempts,
            &retry.codes,
            retry.backoff,
        ));
    }
    extensions.insert(MatchedRule(rule.clone()));
}

#[cfg(test)]
mod tests;
