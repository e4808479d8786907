//! The metrics layer, the same in both directions: counts every request by service, the cluster
//! that served it and the status returned to the caller, and observes its duration until the
//! response head (`mesh_sidecar_requests_total`, `mesh_sidecar_request_duration_seconds`).
//! Service and cluster come from the response's [`ServiceName`] and [`ServedBy`] facts, `-`
//! when the request never got that far.
//!
//! The label set is bounded: a service label only ever names a service the mesh knows (one
//! a snapshot lists, or the inbound sidecar's own), since a request for a service that does
//! not exist is counted under [`UNKNOWN_SERVICE`] (its answer carries
//! [`UnknownServiceAnswer`], not the name), and an authority that is no mesh name under `-`.
//! Otherwise a client sending random `Host` values would add a series per request and grow
//! the sidecar's memory and its `/metrics` page without bound.
//!
//! A gRPC answer (`content-type: application/grpc`) is also counted by its `grpc-status`
//! (`mesh_sidecar_grpc_responses_total`): from the head of a trailers-only answer at once, else
//! from the trailers when the body ends ([`GrpcStatusBody`]), `-` when it ends or is dropped
//! without one. The HTTP status alone says 200 for every gRPC call, failed or not.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use mesh_core::http::{BoxBody, BoxError};
use tower::{Service, ServiceExt};

use crate::facts::{ServedBy, ServiceName};
use crate::metrics::{GrpcLabels, Metrics};
use crate::outbound::grpc_status::{grpc_status, is_grpc};
use crate::stack::{Concern, ConcernLayer};

/// The service label of requests for a service the mesh does not know. Never a real service's
/// label: those are `name.namespace`, with a dot.
pub const UNKNOWN_SERVICE: &str = "unknown";

/// Response (outbound): the request named a service that no snapshot lists (unknown, or not
/// listed within the discovery wait). Set by the errors layer instead of [`ServiceName`];
/// read by the metrics layer, which counts the request under [`UNKNOWN_SERVICE`].
#[derive(Debug, Clone, Copy)]
pub struct UnknownServiceAnswer;

/// Which way the requests go, the `direction` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the local app to a service.
    Outbound,
    /// From another sidecar to the local app.
    Inbound,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// The metrics layer of `direction`, counting in `metrics`.
pub fn layer(metrics: Metrics, direction: Direction) -> ConcernLayer<RequestMetrics> {
    ConcernLayer(RequestMetrics { metrics, direction })
}

/// Counts and times each request answered by the layers below.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    metrics: Metrics,
    direction: Direction,
}

impl<S, B> Concern<Request<B>, S> for RequestMetrics
where
    S: Service<Request<B>, Response = Response<BoxBody>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;

    async fn handle(self, req: Request<B>, next: S) -> Result<Response<BoxBody>, Infallible> {
        let started = tokio::time::Instant::now();
        let Ok(rsp) = next.oneshot(req).await;
        let service = rsp
            .extensions()
            .get::<ServiceName>()
            .map(|s| s.0.to_string());
        let cluster = rsp
            .extensions()
            .get::<ServedBy>()
            .map(|s| s.0.cluster.as_str());
        let unknown = rsp.extensions().get::<UnknownServiceAnswer>().is_some();
        let service = match service.as_deref() {
            Some(service) => service,
            None if unknown => UNKNOWN_SERVICE,
            None => "-",
        };
        let cluster = cluster.unwrap_or("-");
        self.metrics.observe_request(
            self.direction.label(),
            service,
            cluster,
            rsp.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        if !is_grpc(rsp.headers()) {
            return Ok(rsp);
        }
        let labels = GrpcLabels {
            direction: self.direction.label(),
            service: service.to_string(),
            cluster: cluster.to_string(),
            grpc_status: String::new(),
        };
        if let Some(code) = grpc_status(rsp.headers()) {
            count_grpc(&self.metrics, labels, Some(code));
            return Ok(rsp);
        }
        let metrics = self.metrics;
        Ok(rsp.map(|body| GrpcStatusBody::new(body, metrics, labels).boxed()))
    }
}

fn count_grpc(metrics: &Metrics, mut labels: GrpcLabels, code: Option<u32>) {
    labels.grpc_status = code.map_or_else(|| "-".to_string(), |c| c.to_string());
    metrics.grpc_responses.get_or_create(&labels).inc();
}

/// A gRPC response body that counts the call's `grpc-status` once: from its trailers, or `-`
/// when it ends or is dropped without them.
pub struct GrpcStatusBody {
    inner: BoxBody,
    /// Where and under which labels to count; `None` once counted.
    pending: Option<(Metrics, GrpcLabels)>,
}

impl GrpcStatusBody {
    /// Wraps `inner`, to be counted in `metrics` under `labels` (its `grpc_status` is set here).
    pub fn new(inner: BoxBody, metrics: Metrics, labels: GrpcLabels) -> Self {
        Self {
            inner,
            pending: Some((metrics, labels)),
        }
    }

    fn count(&mut self, code: Option<u32>) {
        if let Some((metrics, labels)) = self.pending.take() {
            count_grpc(&metrics, labels, code);
        }
    }
}

impl Drop for GrpcStatusBody {
    fn drop(&mut self) {
        self.count(None);
    }
}

impl Body for GrpcStatusBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.count(grpc_status(trailers));
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.count(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::StatusCode;
    use mesh_core::http::text;
    use prometheus_client::registry::Registry;
    use tower::ServiceExt;

    use super::*;
    use crate::outbound::balancer::EndpointRef;

    fn encoded(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[tokio::test(start_paused = true)]
    async fn labels_come_from_the_response_facts() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let inner = tower::service_fn(|req: Request<()>| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut rsp = text(StatusCode::OK, "ok");
            if req.uri().path() == "/served" {
                rsp.extensions_mut()
                    .insert(ServiceName("echo.demo".parse().unwrap()));
                rsp.extensions_mut().insert(ServedBy(EndpointRef {
                    cluster: "us-west".into(),
                    addr: ([127, 0, 0, 1], 9).into(),
                }));
            }
            Ok::<_, Infallible>(rsp)
        });
        let svc = tower::Layer::layer(&layer(metrics, Direction::Outbound), inner);
        let req = |path: &str| Request::builder().uri(path).body(()).unwrap();
        svc.clone().oneshot(req("/served")).await.unwrap();
        svc.oneshot(req("/other")).await.unwrap();

        let text = encoded(&registry);
        assert!(
            text.contains(
                r#"direction="outbound",service="echo.demo",cluster="us-west",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"direction="outbound",service="-",cluster="-",status="200"} 1"#),
            "{text}"
        );
        // The paused clock advanced exactly 300 ms for the request.
        assert!(
            text.contains(r#"duration_seconds_sum{direction="outbound",service="echo.demo"} 0.3"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn grpc_calls_are_counted_by_their_status_from_trailers_or_head() {
        use http_body_util::Full;

        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let inner = tower::service_fn(|req: Request<()>| async move {
            let mut rsp = match req.uri().path() {
                // Trailers-only: the status in the head.
                "/unavailable" => {
                    let mut rsp = Response::new(mesh_core::http::empty());
                    rsp.headers_mut()
                        .insert("grpc-status", http::HeaderValue::from_static("14"));
                    rsp
                }
                "/ok" => {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    let body = Full::new(Bytes::from_static(b"\0\0\0\0\0"))
                        .map_err(|e| -> BoxError { match e {} })
                        .with_trailers(async move { Some(Ok(trailers)) })
                        .boxed();
                    Response::new(body)
                }
                _ => Response::new(
                    Full::new(Bytes::from_static(b"x"))
                        .map_err(|e| match e {})
                        .boxed(),
                ),
            };
            rsp.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/grpc"),
            );
            Ok::<_, Infallible>(rsp)
        });
        let svc = tower::Layer::layer(&layer(metrics, Direction::Inbound), inner);
        let req = |path: &str| Request::builder().uri(path).body(()).unwrap();
        let rsp = svc.clone().oneshot(req("/unavailable")).await.unwrap();
        drop(rsp);
        let rsp = svc.clone().oneshot(req("/ok")).await.unwrap();
        let collected = rsp.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        // A body dropped before its trailers: no status.
        let rsp = svc.oneshot(req("/cut")).await.unwrap();
        drop(rsp);

        let text = encoded(&registry);
        for code in ["14", "0", "-"] {
            assert!(
                text.contains(&format!(
                    r#"mesh_sidecar_grpc_responses_total{{direction="inbound",service="-",cluster="-",grpc_status="{code}"}} 1"#
                )),
                "{code}: {text}"
            );
        }
    }

    #[tokio::test]
    async fn random_hosts_cannot_grow_the_label_set() {
        use rand::{Rng, SeedableRng};

        use crate::outbound::errors::{self, ProxyError};
        use crate::outbound::resolve::destination;

        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        // What `resolve` does with an authority, the snapshot knowing only `echo.demo`.
        let inner = tower::service_fn(|req: Request<()>| async move {
            let host = req.headers()[http::header::HOST]
                .to_str()
                .unwrap()
                .to_string();
            let dest = destination(&host)?;
            if dest.service.to_string() != "echo.demo" {
                return Err(ProxyError::UnknownService {
                    service: dest.service,
                    asked: "controller at 127.0.0.1:7000".into(),
                });
            }
            let mut rsp = text(StatusCode::OK, "ok");
            rsp.extensions_mut().insert(ServiceName(dest.service));
            Ok(rsp)
        });
        let svc = tower::Layer::layer(
            &layer(metrics, Direction::Outbound),
            tower::Layer::layer(&errors::layer(), inner),
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for i in 0..10_000 {
            let host = match i % 3 {
                0 => format!("svc-{}.ns-{}", rng.random::<u32>(), rng.random::<u16>()),
                1 => format!("{}.example.com", rng.random::<u64>()),
                _ => "echo.demo".to_string(),
            };
            let req = Request::builder()
                .uri("/")
                .header(http::header::HOST, host)
                .body(())
                .unwrap();
            svc.clone().oneshot(req).await.unwrap();
        }

        let text = encoded(&registry);
        let series = |family: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{family}{{")))
                .count()
        };
        // echo.demo (200), unknown (503), and `-` for names that are no mesh name (400).
        assert_eq!(series("mesh_sidecar_requests_total"), 3, "{text}");
        assert_eq!(
            series("mesh_sidecar_request_duration_seconds_count"),
            3,
            "{text}"
        );
        assert!(
            text.contains(r#"service="unknown",cluster="-",status="503"} 3334"#),
            "{text}"
        );
        assert!(
            text.contains(r#"service="-",cluster="-",status="400"} 3333"#),
            "{text}"
        );
    }
}
