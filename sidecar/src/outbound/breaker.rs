//! The breaker layer: once a request is settled, feeds its outcome to the circuit breaker of
//! every locality (service, cluster) it tried. A locality succeeded if it served the final
//! answer without a 5xx (a trailers-only gRPC UNAVAILABLE counts as a 503, see
//! [`grpc_status`]); a dead endpoint whose try was retried on a sibling is outlier
//! detection's business and does not count against its whole locality. Breakers count whole
//! requests, endpoints count tries. (An open breaker is honoured where endpoints are chosen:
//! the balancer gives its locality no health.)

use std::sync::Arc;

use http::{Request, Response};
use mesh_core::http::BoxBody;
use tower::{Service, ServiceExt};

use super::balancer::EndpointRef;
use super::errors::ProxyError;
use super::grpc_status;
use super::retry::Unanswered;
use crate::facts::{Resolved, ServedBy, Tried};
use crate::stack::{Concern, ConcernLayer};
use crate::state::{SidecarState, now};

/// The breaker layer, settling on `state`'s per-service balancers.
pub fn layer(state: Arc<SidecarState>) -> ConcernLayer<Breaker> {
    ConcernLayer(Breaker { state })
}

/// Settles each request on the breakers of the localities it tried.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: Arc<SidecarState>,
}

impl<S, B> Concern<Request<B>, S> for Breaker
where
    S: Service<Request<B>, Response = Response<BoxBody>, Error = Unanswered> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = ProxyError;

    async fn handle(self, req: Request<B>, next: S) -> Result<Response<BoxBody>, ProxyError> {
        let Some(service) = req
            .extensions()
            .get::<Resolved>()
            .map(|r| r.dest.service.clone())
        else {
            return Err(ProxyError::Misassembled("Resolved"));
        };
        let (result, outcomes) = match next.oneshot(req).await {
            Ok(rsp) => {
                let tried = rsp.extensions().get::<Tried>().map(|t| t.0.as_slice());
                let served = rsp.extensions().get::<ServedBy>().map(|s| {
                    let failed = grpc_status::is_failure(rsp.status(), rsp.headers());
                    (s.0.cluster.as_str(), !failed)
                });
                let outcomes = locality_outcomes(tried.unwrap_or_default(), served);
                (Ok(rsp), outcomes)
            }
            Err(Unanswered { error, tried }) => (Err(error), locality_outcomes(&tried, None)),
        };
        if !outcomes.is_empty() {
            let balancer = self.state.balancer(&service);
            let mut b = balancer.lock().unwrap_or_else(|p| p.into_inner());
            let now = now();
            for (cluster, success) in outcomes {
                b.record_request(&cluster, success, now);
            }
            self.state.publish_transitions(&service, &mut b);
        }
        result
    }
}

/// Each locality a request tried, once, and whether it succeeded: it served the final answer
/// (`served`: its cluster and whether the answer was not a 5xx).
pub fn locality_outcomes(
    tried: &[EndpointRef],
    served: Option<(&str, bool)>,
) -> Vec<(String, bool)> {
    let mut clusters: Vec<&str> = tried.iter().map(|t| t.cluster.as_str()).collect();
    clusters.sort_unstable();
    clusters.dedup();
    clusters
        .into_iter()
        .map(|cluster| {
            let success = served.is_some_and(|(c, ok)| c == cluster && ok);
            (cluster.to_string(), success)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(cluster: &str, port: u16) -> EndpointRef {
        EndpointRef {
            cluster: cluster.into(),
            addr: ([127, 0, 0, 1], port).into(),
        }
    }

    #[test]
    fn a_locality_succeeds_only_by_serving_the_final_answer() {
        let tried = [at("us-east", 1), at("us-east", 2), at("us-west", 3)];
        assert_eq!(
            locality_outcomes(&tried, Some(("us-west", true))),
            vec![("us-east".into(), false), ("us-west".into(), true)]
        );
        // A sibling retry in the same locality saves it: one success, not a failure too.
        assert_eq!(
            locality_outcomes(
                &[at("us-east", 1), at("us-east", 2)],
                Some(("us-east", true))
            ),
            vec![("us-east".into(), true)]
        );
        assert_eq!(
            locality_outcomes(&tried, Some(("us-west", false))),
            vec![("us-east".into(), false), ("us-west".into(), false)]
        );
        assert_eq!(
            locality_outcomes(&tried, None),
            vec![("us-east".into(), false), ("us-west".into(), false)]
        );
        assert!(locality_outcomes(&[], None).is_empty());
    }

    #[tokio::test]
    async fn failed_requests_open_the_breaker_of_every_locality_tried() {
        let state = crate::test_state::state();
        let snapshot = Arc::new(crate::test_state::snapshot(vec![]));
        let inner = tower::service_fn(|_: Request<()>| async {
            Err::<Response<BoxBody>, _>(Unanswered {
                error: ProxyError::NoEndpoint {
                    service: crate::test_state::echo(),
                    cluster: None,
                },
                tried: vec![at("us-east", 1), at("us-west", 2)],
            })
        });
        let svc = tower::Layer::layer(&layer(state.clone()), inner);
        for _ in 0..50 {
            let mut req = Request::new(());
            req.extensions_mut().insert(Resolved {
                dest: "echo.demo"
                    .parse::<mesh_core::names::ServiceKey>()
                    .map(|service| mesh_core::names::Destination {
                        service,
                        cluster: None,
                    })
                    .unwrap(),
                snapshot: snapshot.clone(),
            });
            let err = svc.clone().oneshot(req).await.unwrap_err();
            assert!(matches!(err, ProxyError::NoEndpoint { .. }));
        }
        let report = state.breaker_report("test", now());
        let open: Vec<&str> = report
            .breakers
            .iter()
            .filter(|b| b.state == mesh_core::api::ReportedBreakerState::Open)
            .map(|b| b.cluster.as_str())
            .collect();
        assert_eq!(open, ["us-east", "us-west"], "{report:?}");
    }
}
