//! The served-by layer: marks every inbound answer, the app's and the sidecar's own, with the
//! cluster that served it (`x-mesh-cluster`, which callers and tests read to see where a request
//! landed), and records this endpoint and service as the response's facts for the metrics layer.

use std::convert::Infallible;

use http::{HeaderValue, Request, Response};
use mesh_core::api::HEADER_SERVED_BY_CLUSTER;
use mesh_core::http::BoxBody;
use mesh_core::names::ServiceKey;
use tower::{Service, ServiceExt};

use crate::facts::{ServedBy, ServiceName};
use crate::outbound::balancer::EndpointRef;
use crate::stack::{Concern, ConcernLayer};

/// The served-by layer: answers are marked as served by `endpoint` for `service`.
pub fn layer(endpoint: EndpointRef, service: ServiceKey) -> ConcernLayer<ServedByCluster> {
    let header = HeaderValue::from_str(&endpoint.cluster)
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    ConcernLayer(ServedByCluster {
        served_by: ServedBy(endpoint),
        service: ServiceName(service),
        header,
    })
}

/// Marks each answer with the serving cluster.
#[derive(Debug, Clone)]
pub struct ServedByCluster {
    served_by: ServedBy,
    service: ServiceName,
    header: HeaderValue,
}

impl<S, B> Concern<Request<B>, S> for ServedByCluster
where
    S: Service<Request<B>, Response = Response<BoxBody>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;

    async fn handle(self, req: Request<B>, next: S) -> Result<Response<BoxBody>, Infallible> {
        let Ok(mut rsp) = next.oneshot(req).await;
        rsp.headers_mut()
            .insert(HEADER_SERVED_BY_CLUSTER, self.header);
        rsp.extensions_mut().insert(self.served_by);
        rsp.extensions_mut().insert(self.service);
        Ok(rsp)
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
        let svc = tower::Layer::layer(&layer(endpoint, "echo.demo".parse().unwrap()), inner);
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
