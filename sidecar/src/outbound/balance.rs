//! The balance layer: chooses the endpoint of each try ([`ServiceBalancer::pick`]: priority
//! spill over localities, the service's load-balancing algorithm within, skipping the endpoints
//! this request already tried and those at the service's request limit, a latency probe on a
//! first try), hands it down as the [`Picked`] fact, and records how the try went: outlier
//! detection and the endpoint's latency estimate for every try, the locality's latency for
//! successful tries with small buffered bodies (a streamed upload measures the app, not the
//! locality). The response keeps the endpoint's in-flight count while it streams.
//!
//! The service's backend policy comes with the snapshot that routed the request (the
//! [`Resolved`] fact) and is put in force in the service's balancer before each pick. The
//! consistent-hash key's `sourceIdentity` is this sidecar's own workload identity: the caller
//! of every request it sends.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use mesh_core::http::{BoxBody, BoxError};
use mesh_core::names::ServiceKey;
use mesh_core::policy::backend_policy::{HashSource, LimitExceeded};
use tower::{Service, ServiceExt};

use super::balancer::{EndpointRef, NoPick, ServiceBalancer, TryRequest};
use super::body::{InFlightBody, TryBody};
use super::connect::TryError;
use super::grpc_status;
use crate::facts::{Picked, Resolved, ServedBy, Tried};
use crate::metrics::LocalityLabels;
use crate::stack::{Concern, ConcernLayer};
use crate::state::{SidecarState, now};

/// Why the balance layer produced no response for a try.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    /// No locality has a usable endpoint this request has not tried.
    #[error("no usable endpoint left")]
    NoEndpoint,
    /// Every endpoint this try could go to is at the service's concurrency limit, or the try
    /// would wait for a connection past `limits.maxPendingRequests`: fail fast rather than
    /// queue.
    #[error("{0}")]
    LimitExceeded(LimitExceeded),
    /// The try on `endpoint` failed.
    #[error("endpoint {} in {}: {error}", .endpoint.addr, .endpoint.cluster)]
    Try {
        /// The endpoint tried.
        endpoint: EndpointRef,
        /// How the try failed.
        #[source]
        error: TryError,
    },
    /// A layer above did not set a fact this one needs: the stack is assembled wrongly.
    #[error("the outbound stack is misassembled: no {0} fact on the request")]
    MissingFact(&'static str),
}

/// The balance layer, over the routes of `state`'s snapshots with its per-service balancers.
pub fn layer(state: Arc<SidecarState>) -> ConcernLayer<Balance> {
    ConcernLayer(Balance { state })
}

/// Picks the endpoint of each try and records its outcome.
#[derive(Debug, Clone)]
pub struct Balance {
    state: Arc<SidecarState>,
}

impl<S, RB> Concern<Request<TryBody>, S> for Balance
where
    S: Service<Request<TryBody>, Response = Response<RB>, Error = TryError> + Send + 'static,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = bytes::Bytes> + Unpin + Send + Sync + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = BalanceError;

    async fn handle(
        self,
        mut req: Request<TryBody>,
        next: S,
    ) -> Result<Response<BoxBody>, BalanceError> {
        let Some(resolved) = req.extensions().get::<Resolved>().cloned() else {
            return Err(BalanceError::MissingFact("Resolved"));
        };
        let dest = &resolved.dest;
        let Some(route) = resolved.snapshot.services.get(&dest.service) else {
            return Err(BalanceError::NoEndpoint);
        };
        let policy = resolved
            .snapshot
            .policies
            .get(&dest.service)
            .and_then(|p| p.backend.as_ref());
        let balancer = self.state.balancer(&dest.service);
        let pick = {
            let tried = req.extensions().get::<Tried>();
            let tried = tried.map(|t| t.0.as_slice()).unwrap_or_default();
            let mut b = lock(&balancer);
            let now = now();
            b.set_policy(policy, now);
            let hash_key = b.hash_key(req.headers(), own_identity(&self.state, &b).as_deref());
            let request = TryRequest {
                only_cluster: dest.cluster.as_deref(),
                tried,
                hash_key,
            };
            let pick = b.pick(route, request, now, &mut rand::rng());
            self.state.publish_transitions(&dest.service, &mut b);
            pick
        };
        let pick = match pick {
            Ok(pick) => pick,
            Err(NoPick::NoEndpoint) => return Err(BalanceError::NoEndpoint),
            Err(NoPick::AtLimit(limit)) => return Err(BalanceError::LimitExceeded(limit)),
        };
        let endpoint = pick.key();
        let buffered = req.body().is_buffered();
        req.extensions_mut().insert(Picked {
            cluster: pick.cluster.clone(),
            endpoint: pick.endpoint.clone(),
        });
        let started = tokio::time::Instant::now();
        let result = next.oneshot(req).await;
        let latency = started.elapsed();
        let outcome = match &result {
            Ok(rsp) if grpc_status::is_failure(rsp.status(), rsp.headers()) => {
                Some(TryOutcome::Failed)
            }
            Ok(_) if buffered => Some(TryOutcome::ComparableSuccess),
            Ok(_) => Some(TryOutcome::Success),
            // The body never left: nothing is known about the endpoint. A pending-requests
            // refusal is the service's own limit, not the endpoint's failure.
            Err(TryError::BodyGone | TryError::MissingFact(_) | TryError::LimitExceeded(_)) => None,
            Err(_) => Some(TryOutcome::Failed),
        };
        if let Some(outcome) = outcome {
            let mut b = lock(&balancer);
            record_try(
                &self.state,
                &dest.service,
                &mut b,
                &endpoint,
                outcome,
                latency,
            );
        }
        match result {
            Ok(rsp) => {
                let (parts, body) = rsp.into_parts();
                let body = InFlightBody::new(body, pick.in_flight)
                    .map_err(Into::into)
                    .boxed();
                let mut rsp = Response::from_parts(parts, body);
                rsp.extensions_mut().insert(ServedBy(endpoint));
                Ok(rsp)
            }
            // Refused like an endpoint at its limit: answered at once, not retried.
            Err(TryError::LimitExceeded(limit)) => Err(BalanceError::LimitExceeded(limit)),
            Err(error) => Err(BalanceError::Try { endpoint, error }),
        }
    }
}

/// This sidecar's workload identity, when the service hashes on the caller's identity (only
/// then: it is a string to build).
fn own_identity(state: &SidecarState, balancer: &ServiceBalancer) -> Option<String> {
    let source = balancer
        .policy()
        .load_balancer
        .consistent_hash()?
        .source()?;
    (source == HashSource::SourceIdentity).then(|| state.identity().id().to_string())
}

/// How one try went, as the balancer learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TryOutcome {
    /// A response that is not a 5xx, whose time says how fast the locality answers.
    ComparableSuccess,
    /// A response that is not a 5xx, whose time includes streaming the request body.
    Success,
    /// A 5xx (or a trailers-only gRPC failure such as UNAVAILABLE), no connection, a broken
    /// exchange or a timeout.
    Failed,
}

/// Feeds one try's outcome to the endpoint's outlier detection and latency estimate (and the
/// locality's latency, when comparable), and publishes what changed.
fn record_try(
    state: &SidecarState,
    service: &ServiceKey,
    balancer: &mut ServiceBalancer,
    endpoint: &EndpointRef,
    outcome: TryOutcome,
    latency: Duration,
) {
    let now = now();
    let effect = balancer.record_try(endpoint, outcome != TryOutcome::Failed, latency, now);
    if outcome == TryOutcome::ComparableSuccess {
        balancer.observe_locality_latency(&endpoint.cluster, latency, now);
    }
    if effect.ejected {
        tracing::warn!(%service, cluster = %endpoint.cluster, endpoint = %endpoint.addr, "endpoint ejected by outlier detection");
        state
            .metrics()
            .ejections
            .get_or_create(&LocalityLabels {
                service: service.to_string(),
                cluster: endpoint.cluster.clone(),
            })
            .inc();
    }
    state.publish_transitions(service, balancer);
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use bytes::Bytes;
    use http::StatusCode;
    use http_body_util::Full;
    use mesh_core::names::Destination;

    use super::*;
    use crate::outbound::body::ReplayBody;
    use crate::stack::BoxFuture;
    use crate::test_state::{echo, endpoint, locality, snapshot, state};

    /// A connector stand-in that answers `status`, after `delay`, and reports what it was sent.
    fn answering(
        status: u16,
        delay: Duration,
        picked: Arc<std::sync::Mutex<Vec<Picked>>>,
    ) -> tower::util::BoxCloneService<Request<TryBody>, Response<Full<Bytes>>, TryError> {
        tower::util::BoxCloneService::new(tower::service_fn(
            move |req: Request<TryBody>| -> BoxFuture<_> {
                picked
                    .lock()
                    .unwrap()
                    .push(req.extensions().get::<Picked>().unwrap().clone());
                Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    let mut rsp = Response::new(Full::new(Bytes::from_static(b"x")));
                    *rsp.status_mut() = StatusCode::from_u16(status).unwrap();
                    Ok(rsp)
                })
            },
        ))
    }

    fn request(
        tried: Vec<EndpointRef>,
        snap: &Arc<mesh_core::api::SidecarSnapshot>,
    ) -> Request<TryBody> {
        let mut req = Request::new(TryBody::new(ReplayBody::Buffered(Bytes::new())));
        req.extensions_mut().insert(Resolved {
            dest: Destination {
                service: echo(),
                cluster: None,
            },
            snapshot: snap.clone(),
        });
        req.extensions_mut().insert(Tried(tried));
        req
    }

    #[tokio::test(start_paused = true)]
    async fn each_try_skips_what_was_tried_and_names_who_served() {
        let state = state();
        let snap = Arc::new(snapshot(vec![locality(
            "us-east",
            vec![endpoint("us-east", 1), endpoint("us-east", 2)],
        )]));
        let picked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let svc = tower::Layer::layer(
            &layer(state.clone()),
            answering(200, Duration::from_millis(5), picked.clone()),
        );
        let first = svc.clone().oneshot(request(vec![], &snap)).await.unwrap();
        let served = first.extensions().get::<ServedBy>().unwrap().0.clone();
        let second = svc
            .clone()
            .oneshot(request(vec![served.clone()], &snap))
            .await
            .unwrap();
        let other = second.extensions().get::<ServedBy>().unwrap().0.clone();
        let ports: HashSet<u16> = [served.addr.port(), other.addr.port()].into();
        assert_eq!(
            ports,
            HashSet::from([1, 2]),
            "the retry went to the sibling"
        );
        assert_eq!(picked.lock().unwrap().len(), 2);
        // Both endpoints tried: nothing is left for a third try.
        let err = svc
            .oneshot(request(vec![served, other], &snap))
            .await
            .unwrap_err();
        assert!(matches!(err, BalanceError::NoEndpoint), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_requests_refusal_is_the_services_limit_not_the_endpoints_failure() {
        let state = state();
        let snap = Arc::new(snapshot(vec![locality(
            "us-east",
            vec![endpoint("us-east", 1)],
        )]));
        let limit = LimitExceeded::PendingRequests { max: 1 };
        let refusing = tower::service_fn(move |_: Request<TryBody>| async move {
            Err::<Response<Full<Bytes>>, _>(TryError::LimitExceeded(limit))
        });
        let svc = tower::Layer::layer(&layer(state.clone()), refusing);
        for _ in 0..10 {
            let err = svc
                .clone()
                .oneshot(request(vec![], &snap))
                .await
                .unwrap_err();
            assert!(
                matches!(err, BalanceError::LimitExceeded(l) if l == limit),
                "{err}"
            );
        }
        // The same ten tries failing at the endpoints eject one (see the next test).
        for port in [1, 2] {
            let addr = ([127, 0, 0, 1], port).into();
            assert!(!state.endpoint_ejected(&echo(), "us-east", addr));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failing_tries_eject_the_endpoint() {
        let state = state();
        let snap = Arc::new(snapshot(vec![locality(
            "us-east",
            vec![endpoint("us-east", 1), endpoint("us-east", 2)],
        )]));
        let picked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let svc = tower::Layer::layer(
            &layer(state.clone()),
            answering(503, Duration::from_millis(1), picked.clone()),
        );
        for _ in 0..10 {
            let rsp = svc.clone().oneshot(request(vec![], &snap)).await.unwrap();
            assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        let ejected = [1, 2]
            .into_iter()
            .filter(|port| {
                state.endpoint_ejected(&echo(), "us-east", ([127, 0, 0, 1], *port).into())
            })
            .count();
        assert!(ejected >= 1, "consecutive 5xx eject an endpoint");
    }

    /// A snapshot routing echo over endpoints 1 and 2 of us-east, under `backend`.
    fn with_policy(
        backend: mesh_core::policy::backend_policy::BackendPolicySpec,
    ) -> Arc<mesh_core::api::SidecarSnapshot> {
        let mut snap = snapshot(vec![locality(
            "us-east",
            vec![endpoint("us-east", 1), endpoint("us-east", 2)],
        )]);
        snap.policies.insert(
            echo(),
            mesh_core::policy::service_policy::ServicePolicy {
                backend: Some(backend),
                ..Default::default()
            },
        );
        Arc::new(snap)
    }

    #[tokio::test(start_paused = true)]
    async fn the_snapshot_policy_hashes_requests_on_their_header() {
        use mesh_core::policy::backend_policy::{
            BackendPolicySpec, ConsistentHashSpec, LoadBalancerSpec,
        };
        let snap = with_policy(BackendPolicySpec {
            load_balancer: LoadBalancerSpec::ConsistentHash(ConsistentHashSpec {
                header: Some("x-user".into()),
                ..ConsistentHashSpec::default()
            }),
            ..BackendPolicySpec::default()
        });
        let picked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let svc = tower::Layer::layer(
            &layer(state()),
            answering(200, Duration::from_millis(1), picked.clone()),
        );
        let mut served = HashSet::new();
        for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
            let mut ports = HashSet::new();
            for _ in 0..5 {
                let mut req = request(vec![], &snap);
                req.headers_mut().insert("x-user", user.parse().unwrap());
                let rsp = svc.clone().oneshot(req).await.unwrap();
                ports.insert(rsp.extensions().get::<ServedBy>().unwrap().0.addr.port());
            }
            assert_eq!(ports.len(), 1, "{user} always lands on one endpoint");
            served.extend(ports);
        }
        assert_eq!(served, HashSet::from([1, 2]), "users spread over both");
    }

    #[tokio::test(start_paused = true)]
    async fn every_endpoint_at_its_limit_fails_fast_with_the_limit_and_no_retry() {
        use mesh_core::policy::backend_policy::{BackendPolicySpec, LimitsSpec};
        use mesh_core::retry_budget::RetryBudgetConfig;

        use crate::metrics::Metrics;
        use crate::outbound::retry::{self, RetryBudgets, Unanswered};

        let snap = with_policy(BackendPolicySpec {
            limits: LimitsSpec {
                max_requests_per_endpoint: Some(1),
                ..LimitsSpec::default()
            },
            ..BackendPolicySpec::default()
        });
        let picked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let balance = tower::Layer::layer(
            &layer(state()),
            answering(200, Duration::from_secs(10), picked.clone()),
        );
        let budgets = Arc::new(RetryBudgets::new(RetryBudgetConfig::default()));
        let svc = tower::Layer::layer(&retry::layer(budgets, Metrics::unregistered()), balance);
        let get = || {
            let mut req = Request::new(Full::new(Bytes::new()));
            req.extensions_mut().insert(Resolved {
                dest: Destination {
                    service: echo(),
                    cluster: None,
                },
                snapshot: snap.clone(),
            });
            req
        };
        // Two slow requests take both endpoints' only slot.
        let slow: Vec<_> = (0..2)
            .map(|_| tokio::spawn(svc.clone().oneshot(get())))
            .collect();
        while picked.lock().unwrap().len() < 2 {
            tokio::task::yield_now().await;
        }
        let started = tokio::time::Instant::now();
        let Err(Unanswered { error, tried }) = svc.clone().oneshot(get()).await else {
            panic!("a third request found a free endpoint");
        };
        assert_eq!(started.elapsed(), Duration::ZERO, "answered at once");
        assert!(tried.is_empty());
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.label(), "max-requests-per-endpoint");
        assert!(
            error.to_string().contains("maxRequestsPerEndpoint"),
            "{error}"
        );
        assert_eq!(picked.lock().unwrap().len(), 2, "nothing else was sent");
        // Once they finish, the endpoints take requests again.
        for task in slow {
            assert!(task.await.unwrap().is_ok());
        }
        assert!(svc.oneshot(get()).await.is_ok());
    }

    #[tokio::test]
    async fn a_missing_route_has_no_endpoint() {
        let snap = Arc::new(snapshot(vec![]));
        let mut snap_without = (*snap).clone();
        snap_without.services.clear();
        let picked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let svc = tower::Layer::layer(
            &layer(state()),
            answering(200, Duration::ZERO, picked.clone()),
        );
        let err = svc
            .oneshot(request(vec![], &Arc::new(snap_without)))
            .await
            .unwrap_err();
        assert!(matches!(err, BalanceError::NoEndpoint));
        assert!(picked.lock().unwrap().is_empty());
    }
}
