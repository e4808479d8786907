//! The whole outbound request walk, top to bottom:
//! parse -> authority -> destination -> route (on-demand discovery) -> body -> for each try:
//! pick (spill + P2C) -> connection (pool: direct or tunnel) -> send -> classify -> record the
//! try (endpoint) -> retry? -> settle the localities tried (breakers) -> answer.

use std::time::Duration;

use http::request::Parts;
use http::{Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mesh_core::api::SidecarSnapshot;
use mesh_core::http::{BoxBody, BoxError};
use mesh_core::names::{Destination, ServiceKey};

use super::balancer::{EndpointRef, Pick};
use super::body::{InFlightBody, ReplayBody};
use super::errors::ProxyError;
use super::pool::{ConnectError, PoolKey, Target};
use super::resolve;
use super::retry::{TryFailure, is_retryable_status, should_retry};
use crate::headers::strip_hop_by_hop;
use crate::metrics::ServiceLabels;
use crate::state::{SidecarState, now};

/// How one try ended without a response.
enum TryError {
    Connect(ConnectError),
    Protocol(hyper::Error),
    /// A streamed body went to an earlier try (the retry policy rules this out beforehand).
    BodyGone,
}

/// The last failed try, kept to answer with when no retry follows.
enum LastFailure {
    /// A 502/503/504 from upstream: passed to the app as-is (with its `x-mesh-error`).
    Response(Response<Incoming>, Pick),
    Connect(ConnectError, EndpointRef),
    Protocol(hyper::Error, EndpointRef),
    Timeout(EndpointRef),
}

impl LastFailure {
    fn kind(&self) -> TryFailure {
        match self {
            Self::Response(rsp, _) => TryFailure::Status(rsp.status()),
            Self::Connect(..) => TryFailure::Connect,
            Self::Protocol(..) => TryFailure::Protocol,
            Self::Timeout(_) => TryFailure::Timeout,
        }
    }
}

/// A response for the app and who served it.
struct Answer {
    response: Response<BoxBody>,
    cluster: String,
}

/// Handles one request from the app: proxies it, or answers it with the reason it could not.
pub async fn handle(state: &SidecarState, req: Request<Incoming>) -> Response<BoxBody> {
    let started = tokio::time::Instant::now();
    let (parts, body) = req.into_parts();
    let mut service = "-".to_string();
    let (response, cluster) = match proxy(state, &parts, body, &mut service).await {
        Ok(answer) => (answer.response, answer.cluster),
        Err(e) => {
            tracing::info!(
                method = %parts.method, uri = %parts.uri, %service, status = e.status().as_u16(),
                error = %e, "answered by the sidecar"
            );
            (e.response(), "-".to_string())
        }
    };
    state.metrics().observe_request(
        "outbound",
        &service,
        &cluster,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn proxy(
    state: &SidecarState,
    parts: &Parts,
    body: Incoming,
    service_label: &mut String,
) -> Result<Answer, ProxyError> {
    // Parse: an HTTP proxy for plain requests only.
    if parts.method == Method::CONNECT {
        return Err(ProxyError::ConnectMethod);
    }
    // Authority and destination.
    let authority = resolve::authority(parts)?;
    let dest = resolve::destination(&authority)?;
    *service_label = dest.service.to_string();
    let uri = upstream_uri(parts, &authority)?;
    // Route: the last snapshot, or the controller's answer once asked (on demand).
    let snapshot = state.route(&dest).await?;
    let Some(route) = snapshot.services.get(&dest.service) else {
        return Err(no_endpoint(&dest));
    };
    // Body: buffered when small and of known length, so that it can be sent again.
    let mut body = ReplayBody::read(body).await?;

    let balancer = state.balancer(&dest.service);
    lock(&balancer).deposit(now());
    let mut tried: Vec<EndpointRef> = Vec::new();
    let mut last: Option<LastFailure> = None;
    let answered = loop {
        // Retry? Only what the policy allows, within the budget.
        if let Some(failure) = &last {
            if !should_retry(&parts.method, failure.kind(), tried.len(), body.available()) {
                break None;
            }
            if !lock(&balancer).try_withdraw_retry(now()) {
                tracing::info!(service = %dest.service, "retry budget exhausted; not retrying");
                break None;
            }
            state
                .metrics()
                .retries
                .get_or_create(&ServiceLabels {
                    service: dest.service.to_string(),
                })
                .inc();
        }
        // Pick: locality by priority spill, endpoint by P2C, skipping those already tried.
        let pick = {
            let mut b = lock(&balancer);
            let pick = b.pick(
                route,
                dest.cluster.as_deref(),
                &tried,
                now(),
                &mut rand::rng(),
            );
            state.publish_transitions(&dest.service, &mut b);
            pick
        };
        let Some(pick) = pick else { break None };
        tried.push(pick.key());
        // Forward, bounded by the per-try timeout.
        let try_started = tokio::time::Instant::now();
        let outcome = tokio::time::timeout(
            state.request_timeout(),
            forward_once(state, &snapshot, &dest, parts, &uri, &pick, &mut body),
        )
        .await;
        let latency = try_started.elapsed();
        // Classify, record for the endpoint, and keep the failure in case no retry follows.
        let failure = match outcome {
            Ok(Ok(rsp)) => {
                let status = rsp.status();
                let success = !status.is_server_error();
                record_try(state, &dest.service, &pick.key(), success, latency);
                if success && body.is_buffered() {
                    lock(&balancer).observe_locality_latency(&pick.cluster, latency, now());
                }
                if !is_retryable_status(status) {
                    break Some((rsp, pick));
                }
                LastFailure::Response(rsp, pick)
            }
            Ok(Err(TryError::Connect(e))) => {
                tracing::debug!(service = %dest.service, endpoint = %pick.endpoint.address, error = %e, "connect failed");
                record_try(state, &dest.service, &pick.key(), false, latency);
                LastFailure::Connect(e, pick.key())
            }
            Ok(Err(TryError::BodyGone)) => {
                settle_localities(state, &dest.service, &tried, None);
                return Err(ProxyError::RequestBody(
                    "the streamed body was sent to an earlier try".into(),
                ));
            }
            Ok(Err(TryError::Protocol(e))) => {
                record_try(state, &dest.service, &pick.key(), false, latency);
                LastFailure::Protocol(e, pick.key())
            }
            Err(_elapsed) => {
                record_try(state, &dest.service, &pick.key(), false, latency);
                LastFailure::Timeout(pick.key())
            }
        };
        last = Some(failure);
    };
    // Answer: the response of the try that settled it, else the last failure.
    if let Some((rsp, pick)) = answered {
        let served = (pick.cluster.clone(), !rsp.status().is_server_error());
        settle_localities(state, &dest.service, &tried, Some(served));
        return Ok(answer(rsp, pick));
    }
    let tries = tried.len();
    match last {
        None => {
            settle_localities(state, &dest.service, &tried, None);
            Err(no_endpoint(&dest))
        }
        Some(LastFailure::Response(rsp, pick)) => {
            settle_localities(
                state,
                &dest.service,
                &tried,
                Some((pick.cluster.clone(), false)),
            );
            Ok(answer(rsp, pick))
        }
        Some(LastFailure::Connect(source, endpoint)) => {
            settle_localities(state, &dest.service, &tried, None);
            Err(ProxyError::Connect {
                service: dest.service.clone(),
                endpoint: Box::new(endpoint),
                tries,
                source: Box::new(source),
            })
        }
        Some(LastFailure::Protocol(source, endpoint)) => {
            settle_localities(state, &dest.service, &tried, None);
            Err(ProxyError::Upstream {
                service: dest.service.clone(),
                endpoint: Box::new(endpoint),
                source,
            })
        }
        Some(LastFailure::Timeout(endpoint)) => {
            settle_localities(state, &dest.service, &tried, None);
            Err(ProxyError::Timeout {
                service: dest.service.clone(),
                endpoint: Box::new(endpoint),
                after: state.request_timeout(),
                tries,
            })
        }
    }
}

/// One try: a connection from the pool first (so a connect failure leaves the body unsent),
/// then the request.
async fn forward_once(
    state: &SidecarState,
    snapshot: &SidecarSnapshot,
    dest: &Destination,
    parts: &Parts,
    uri: &Uri,
    pick: &Pick,
    body: &mut ReplayBody,
) -> Result<Response<Incoming>, TryError> {
    let target = Target {
        cluster: &pick.cluster,
        endpoint: &pick.endpoint,
        service: &dest.service,
        gateway: snapshot.gateway,
        traceparent: parts.headers.get("traceparent"),
    };
    let mut conn = state.pool().get(target).await.map_err(TryError::Connect)?;
    let Some(request_body) = body.take() else {
        return Err(TryError::BodyGone);
    };
    let mut req = Request::new(request_body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri.clone();
    *req.version_mut() = Version::HTTP_2;
    *req.headers_mut() = parts.headers.clone();
    strip_hop_by_hop(req.headers_mut());
    req.headers_mut().remove(http::header::HOST);
    match conn.try_send_request(req).await {
        Ok(rsp) => Ok(rsp),
        Err(mut e) => match e.take_message() {
            Some(unsent) => {
                body.put_back(unsent.into_body());
                state.pool().evict(&PoolKey::Endpoint {
                    cluster: pick.cluster.clone(),
                    addr: pick.endpoint.address,
                });
                Err(TryError::Connect(ConnectError::NotSent {
                    addr: pick.endpoint.address,
                    source: e.into_error(),
                }))
            }
            None => Err(TryError::Protocol(e.into_error())),
        },
    }
}

/// The upstream URI: origin-form path with the authority the app used, for HTTP/2's
/// `:authority`; the inbound sidecar passes it to its app as Host.
fn upstream_uri(parts: &Parts, authority: &str) -> Result<Uri, ProxyError> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| ProxyError::MissingAuthority)
}

fn answer(rsp: Response<Incoming>, pick: Pick) -> Answer {
    let (mut parts, body) = rsp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = InFlightBody::new(body, pick.in_flight)
        .map_err(BoxError::from)
        .boxed();
    Answer {
        response: Response::from_parts(parts, body),
        cluster: pick.cluster,
    }
}

/// Feeds one try's outcome to the endpoint's outlier detection and latency estimate.
fn record_try(
    state: &SidecarState,
    service: &ServiceKey,
    endpoint: &EndpointRef,
    success: bool,
    latency: Duration,
) {
    let balancer = state.balancer(service);
    let mut b = lock(&balancer);
    let effect = b.record_try(endpoint, success, latency, now());
    if effect.ejected {
        tracing::warn!(%service, cluster = %endpoint.cluster, endpoint = %endpoint.addr, "endpoint ejected by outlier detection");
        state
            .metrics()
            .ejections
            .get_or_create(&crate::metrics::LocalityLabels {
                service: service.to_string(),
                cluster: endpoint.cluster.clone(),
            })
            .inc();
    }
    state.publish_transitions(service, &mut b);
}

/// Feeds the request's outcome to the breaker of every locality it tried: a locality succeeded
/// if it served the final answer without a 5xx. A dead endpoint whose try was retried on a
/// sibling is outlier detection's business; it does not count against its whole locality.
fn settle_localities(
    state: &SidecarState,
    service: &ServiceKey,
    tried: &[EndpointRef],
    served: Option<(String, bool)>,
) {
    let balancer = state.balancer(service);
    let mut b = lock(&balancer);
    let mut clusters: Vec<&str> = tried.iter().map(|t| t.cluster.as_str()).collect();
    clusters.sort_unstable();
    clusters.dedup();
    for cluster in clusters {
        let success = served.as_ref().is_some_and(|(c, ok)| c == cluster && *ok);
        b.record_request(cluster, success, now());
    }
    state.publish_transitions(service, &mut b);
}

fn no_endpoint(dest: &Destination) -> ProxyError {
    ProxyError::NoEndpoint {
        service: dest.service.clone(),
        cluster: dest.cluster.clone(),
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
