//! The fault layer: the `FaultPolicy` of the request's route rule, injected on the client side
//! (Istio's `HTTPFaultInjection`). Each request draws its faults (`FaultSpec::decide`): a delay
//! holds it back, then it goes on; an abort answers the policy's status at once, without
//! sending it (and so without retries: the layer sits above `retry`, as Istio's client-side
//! faults bypass retries). Faulted answers say so in `x-mesh-fault` (`delay`, `abort`, or
//! both), the counterpart of Envoy's `DI` and `FI` response flags, and every fault is counted
//! in `mesh_sidecar_faults_injected_total{service,kind}`.

use http::{HeaderName, HeaderValue, Request, Response};
use mesh_core::http::BoxBody;
use mesh_core::policy::fault::FaultDecision;
use tower::{Service, ServiceExt};

use super::errors::ProxyError;
use crate::facts::{MatchedRule, Resolved};
use crate::metrics::Metrics;
use crate::stack::{Concern, ConcernLayer};

/// `x-mesh-fault`: the faults injected into the request the answer is for.
pub const HEADER_MESH_FAULT: HeaderName = HeaderName::from_static("x-mesh-fault");

/// The fault layer, counting in `metrics`.
pub fn layer(metrics: Metrics) -> ConcernLayer<Fault> {
    ConcernLayer(Fault { metrics })
}

/// Injects the matched rule's faults.
#[derive(Debug, Clone)]
pub struct Fault {
    metrics: Metrics,
}

impl<S, B> Concern<Request<B>, S> for Fault
where
    S: Service<Request<B>, Response = Response<BoxBody>, Error = ProxyError> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = ProxyError;

    async fn handle(self, req: Request<B>, next: S) -> Result<Response<BoxBody>, ProxyError> {
        let Some(MatchedRule(rule)) = req.extensions().get::<MatchedRule>().cloned() else {
            // No route (implicit routing): no policy either.
            return next.oneshot(req).await;
        };
        let Some(spec) = &rule.rule.fault else {
            return next.oneshot(req).await;
        };
        // The thread's generator is not `Send`: draw before any `.await`.
        let FaultDecision { delay, abort } = spec.decide(&mut rand::rng());
        if delay.is_none() && abort.is_none() {
            return next.oneshot(req).await;
        }
        let Some(resolved) = req.extensions().get::<Resolved>() else {
            return Err(ProxyError::Misassembled("Resolved"));
        };
        let service = resolved.dest.service.clone();
        let label = service.to_string();
        if let Some(delay) = delay {
            self.metrics.count_fault(&label, "delay");
            tokio::time::sleep(delay).await;
        }
        if let Some(status) = abort {
            self.metrics.count_fault(&label, "abort");
            return Err(ProxyError::FaultAbort {
                service,
                rule: rule.rule.origin.to_string(),
                status,
                delayed: delay.is_some(),
            });
        }
        let mut rsp = next.oneshot(req).await?;
        rsp.headers_mut()
            .append(HEADER_MESH_FAULT, HeaderValue::from_static("delay"));
        Ok(rsp)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http::StatusCode;
    use mesh_core::api::HEADER_MESH_ERROR;
    use mesh_core::http::text;
    use mesh_core::names::Destination;
    use mesh_core::policy::fault::{AbortFault, DelayFault, FaultSpec};
    use mesh_core::policy::router::CompiledRule;
    use mesh_core::policy::service_policy::{RouteRule, RuleOrigin};
    use prometheus_client::registry::Registry;
    use tower::Layer;

    use super::*;
    use crate::test_state::{echo, snapshot};

    /// A request that matched a rule of `echo.demo` with `fault`.
    fn request(fault: Option<FaultSpec>) -> Request<()> {
        let rule = RouteRule {
            fault,
            ..RouteRule::to_service(
                RuleOrigin {
                    route: "demo/split".into(),
                    created: 0,
                    index: 0,
                    name: Some("api".into()),
                },
                echo(),
            )
        };
        let mut req = Request::new(());
        req.extensions_mut().insert(MatchedRule(Arc::new(
            CompiledRule::new(rule, "demo").unwrap(),
        )));
        req.extensions_mut().insert(Resolved {
            dest: Destination {
                service: echo(),
                cluster: None,
            },
            snapshot: Arc::new(snapshot(vec![])),
        });
        req
    }

    fn spec(delay_ms: Option<u64>, abort: Option<u16>) -> FaultSpec {
        FaultSpec {
            delay: delay_ms.map(|ms| DelayFault {
                fixed_delay: Duration::from_millis(ms),
                percentage: 100.0,
            }),
            abort: abort.map(|status| AbortFault {
                http_status: status,
                percentage: 100.0,
            }),
        }
    }

    /// The layer over an app that counts its calls, and the metrics' text.
    fn faulted() -> (
        impl Service<Request<()>, Response = Response<BoxBody>, Error = ProxyError> + Clone,
        Arc<AtomicUsize>,
        impl Fn() -> String,
    ) {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let app = tower::service_fn(move |_: Request<()>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, ProxyError>(text(StatusCode::OK, "app")) }
        });
        let exported = move || {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out
        };
        (layer(metrics).layer(app), calls, exported)
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_holds_the_request_back_then_sends_it() {
        let (svc, calls, exported) = faulted();
        let started = tokio::time::Instant::now();
        let rsp = svc
            .oneshot(request(Some(spec(Some(200), None))))
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()[HEADER_MESH_FAULT], "delay");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(
            exported().contains(
                "mesh_sidecar_faults_injected_total{service=\"echo.demo\",kind=\"delay\"} 1"
            ),
            "{}",
            exported()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_answers_at_once_without_sending() {
        let (svc, calls, exported) = faulted();
        let started = tokio::time::Instant::now();
        let err = svc
            .oneshot(request(Some(spec(None, Some(503)))))
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "the app is never called");
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        let rsp = err.response();
        assert_eq!(rsp.headers()[HEADER_MESH_FAULT], "abort");
        assert_eq!(rsp.headers()[HEADER_MESH_ERROR], "fault-injected");
        assert!(err.to_string().contains("demo/split/api"), "{err}");
        assert!(exported().contains("kind=\"abort\"} 1"), "{}", exported());
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_abort_waits_then_answers_marked_with_both() {
        let (svc, calls, _) = faulted();
        let started = tokio::time::Instant::now();
        let err = svc
            .oneshot(request(Some(spec(Some(50), Some(500)))))
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_millis(50));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let rsp = err.response();
        assert_eq!(rsp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let marks: Vec<_> = rsp.headers().get_all(HEADER_MESH_FAULT).iter().collect();
        assert_eq!(marks, ["delay", "abort"]);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_without_a_fault_or_a_rule_pass_untouched() {
        let (svc, calls, exported) = faulted();
        let rsp = svc.clone().oneshot(request(None)).await.unwrap();
        assert!(rsp.headers().get(HEADER_MESH_FAULT).is_none());
        let never = FaultSpec {
            abort: Some(AbortFault {
                http_status: 503,
                percentage: 0.0,
            }),
            delay: None,
        };
        let rsp = svc.clone().oneshot(request(Some(never))).await.unwrap();
        assert!(rsp.headers().get(HEADER_MESH_FAULT).is_none());
        let rsp = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(!exported().contains("faults_injected_total{"));
    }
}
