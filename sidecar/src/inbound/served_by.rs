//! The served-by layer: marks every inbound answer, the app's and the sidecar's own, with the
//! cluster that served it (`x-mesh-cluster`, which callers and tests read to see where a request
//! landed), and records this endpoint and service as the response's facts for the metrics layer.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use mesh_core::api::HEADER_SERVED_BY_CLUSTER;
use mesh_core::http::BoxBody;
use mesh_core::names::ServiceKey;
use tower::{Layer, Service, ServiceExt};

use crate::facts::{ServedBy, ServiceName};
use crate::outbound::balancer::EndpointRef;
use crate::stack::BoxFuture;

/// Adds [`ServedByCluster`] to a stack.
#[derive(Debug, Clone)]
pub struct ServedByLayer {
    endpoint: EndpointRef,
    service: ServiceKey,
    header: HeaderValue,
}

impl ServedByLayer {
    /// Marks answers as served by `endpoint` for `service`.
    pub fn new(endpoint: EndpointRef, service: ServiceKey) -> Self {
        let header = HeaderValue::from_str(&endpoint.cluster)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        Self {
            endpoint,
            service,
            header,
        }
    }
}

impl<S> Layer<S> for ServedByLayer {
    type Service = ServedByCluster<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServedByCluster {
            inner,
            layer: self.clone(),
        }
    }
}

/// Marks each answer with the serving cluster.
#[derive(Debug, Clone)]
pub struct ServedByCluster<S> {
    inner: S,
    layer: ServedByLayer,
}

impl<S, B> Service<Request<B>> for ServedByCluster<S>
where
    S: Service<Request<B>, Response = Response<BoxBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<BoxBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let answer = self.inner.clone().oneshot(req);
        let layer = self.layer.clone();
        Box::pin(async move {
            let Ok(mut rsp) = answer.await;
            rsp.headers_mut()
                .insert(HEADER_SERVED_BY_CLUSTER, layer.header);
            rsp.extensions_mut().insert(ServedBy(layer.endpoint));
            rsp.extensions_mut().insert(ServiceName(layer.service));
            Ok(rsp)
        })
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use mesh_core::http::text;

    use super::*;

    #[tokio::test]
    async fn every_answer_names_the_serving_cluster() {
        let inner = tower::service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(text(StatusCode::BAD_GATEWAY, "app broke"))
        });
        let endpoint = EndpointRef {
            cluster: "eu-central".into(),
            addr: ([127, 0, 0, 1], 7).into(),
        };
        let svc = ServedByLayer::new(endpoint, "echo.demo".parse().unwrap()).layer(inner);
        let rsp = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(rsp.headers()[HEADER_SERVED_BY_CLUSTER], "eu-central");
        assert_eq!(
            rsp.extensions().get::<ServedBy>().unwrap().0.cluster,
            "eu-central"
        );
        assert_eq!(
            rsp.extensions().get::<ServiceName>().unwrap().0.to_string(),
            "echo.demo"
        );
    }
}
