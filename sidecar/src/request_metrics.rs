//! The metrics layer, the same in both directions: counts every request by service, the cluster
//! that served it and the status returned to the caller, and observes its duration until the
//! response head (`mesh_sidecar_requests_total`, `mesh_sidecar_request_duration_seconds`).
//! Service and cluster come from the response's [`ServiceName`] and [`ServedBy`] facts, `-`
//! when the request never got that far.

use std::convert::Infallible;

use http::{Request, Response};
use mesh_core::http::BoxBody;
use tower::{Service, ServiceExt};

use crate::facts::{ServedBy, ServiceName};
use crate::metrics::Metrics;
use crate::stack::{Concern, ConcernLayer};

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
        self.metrics.observe_request(
            self.direction.label(),
            service.as_deref().unwrap_or("-"),
            cluster.unwrap_or("-"),
            rsp.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        Ok(rsp)
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
}
