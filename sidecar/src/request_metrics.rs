//! The metrics layer, the same in both directions: counts every request by service, the cluster
//! that served it and the status returned to the caller, and observes its duration until the
//! response head (`mesh_sidecar_requests_total`, `mesh_sidecar_request_duration_seconds`).
//! Service and cluster come from the response's [`ServiceName`] and [`ServedBy`] facts, `-`
//! when the request never got that far.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{Request, Response};
use mesh_core::http::BoxBody;
use tower::{Layer, Service};

use crate::facts::{ServedBy, ServiceName};
use crate::metrics::Metrics;
use crate::stack::BoxFuture;

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

/// Adds [`RequestMetrics`] to a stack.
#[derive(Debug, Clone)]
pub struct RequestMetricsLayer {
    metrics: Metrics,
    direction: Direction,
}

impl RequestMetricsLayer {
    /// Counts `direction`'s requests in `metrics`.
    pub fn new(metrics: Metrics, direction: Direction) -> Self {
        Self { metrics, direction }
    }
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics {
            inner,
            metrics: self.metrics.clone(),
            direction: self.direction,
        }
    }
}

/// Counts and times each request answered by the inner service.
#[derive(Debug, Clone)]
pub struct RequestMetrics<S> {
    inner: S,
    metrics: Metrics,
    direction: Direction,
}

impl<S, B> Service<Request<B>> for RequestMetrics<S>
where
    S: Service<Request<B>, Response = Response<BoxBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<BoxBody>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = tokio::time::Instant::now();
        let answer = self.inner.call(req);
        let metrics = self.metrics.clone();
        let direction = self.direction.label();
        Box::pin(async move {
            let Ok(rsp) = answer.await;
            let service = rsp
                .extensions()
                .get::<ServiceName>()
                .map(|s| s.0.to_string());
            let cluster = rsp
                .extensions()
                .get::<ServedBy>()
                .map(|s| s.0.cluster.as_str());
            metrics.observe_request(
                direction,
                service.as_deref().unwrap_or("-"),
                cluster.unwrap_or("-"),
                rsp.status().as_u16(),
                started.elapsed().as_secs_f64(),
            );
            Ok(rsp)
        })
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
        let svc = RequestMetricsLayer::new(metrics, Direction::Outbound).layer(inner);
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
}
