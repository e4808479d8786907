//! The inbound rate-limit layer: the `RateLimitPolicy` that targets the service this sidecar
//! serves (`ServicePolicy::inbound_rate_limit`), enforced per server as Linkerd's
//! `HTTPLocalRateLimitPolicy` is: a `total` bucket for every caller, one bucket per caller
//! identity (the peer's SPIFFE ID from the mTLS handshake, the [`PeerIdentity`] fact; callers
//! without one share a bucket) and `overrides` for named identities.
//!
//! - The limit is read from the latest snapshot on each request, so a new policy applies
//!   without a restart; the limiter lives as long as the spec is unchanged and is rebuilt with
//!   full buckets when it changes. For the controller to send the policy at all, the layer
//!   adds the served service to the sidecar's interest set when built.
//! - Over the limit: 429 (`InboundError::RateLimited`: `Retry-After`, `RateLimit`,
//!   `RateLimit-Policy`, `x-mesh-error: rate-limited`), counted in
//!   `mesh_sidecar_rate_limited_total{direction="inbound",service,mode="enforce"}`; the app is
//!   not called. In shadow mode the request is counted (`mode="shadow"`) and served.
//! - Within the limit, the app's answer carries the `RateLimit` fields too, beside its own.

use std::sync::{Arc, Mutex, PoisonError};

use http::{Request, Response};
use mesh_core::http::BoxBody;
use mesh_core::names::ServiceKey;
use mesh_core::policy::rate_limit::{RateLimitError, RateLimitSpec, RateLimiter};
use tower::ServiceExt;

use super::errors::{InboundError, InboundNext};
use crate::facts::PeerIdentity;
use crate::outbound::rate_limit::{add_fields, current, over_limit};
use crate::stack::{Concern, ConcernLayer};
use crate::state::SidecarState;

/// The inbound rate-limit layer of `service`, served by the sidecar of `state`; asks the
/// controller for `service` so that its policy is in the snapshots.
pub fn layer(state: Arc<SidecarState>, service: ServiceKey) -> ConcernLayer<ServerRateLimit> {
    state.ask_for([service.clone()]);
    ConcernLayer(ServerRateLimit {
        label: Arc::from(service.to_string()),
        service: Arc::new(service),
        state,
        limiter: Arc::new(Mutex::new(None)),
    })
}

/// Applies the served service's inbound rate limit.
#[derive(Debug, Clone)]
pub struct ServerRateLimit {
    state: Arc<SidecarState>,
    service: Arc<ServiceKey>,
    label: Arc<str>,
    /// The limiter of the spec in force, `None` while there is none.
    limiter: Arc<Mutex<Option<Arc<RateLimiter>>>>,
}

impl ServerRateLimit {
    /// The limiter for `spec`, the one in use while the spec is unchanged.
    fn limiter(&self, spec: &RateLimitSpec) -> Result<Arc<RateLimiter>, RateLimitError> {
        let mut slot = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *slot {
            Some(limiter) => current(limiter, spec),
            None => {
                let limiter = Arc::new(RateLimiter::new(spec.clone())?);
                *slot = Some(limiter.clone());
                Ok(limiter)
            }
        }
    }
}

impl<S, B> Concern<Request<B>, S> for ServerRateLimit
where
    S: InboundNext<B>,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = InboundError;

    async fn handle(self, req: Request<B>, next: S) -> Result<Response<BoxBody>, InboundError> {
        let snapshot = self.state.snapshot();
        let spec = snapshot
            .as_ref()
            .and_then(|s| s.policies.get(&*self.service))
            .and_then(|p| p.inbound_rate_limit.as_ref());
        let Some(spec) = spec else {
            // No limit (any more): forget the buckets, a later limit starts full.
            self.limiter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            return next.oneshot(req).await;
        };
        let limiter = self
            .limiter(spec)
            .map_err(|e| InboundError::PolicyInvalid(format!("inboundRateLimit.{e}")))?;
        let caller = req.extensions().get::<PeerIdentity>().map(|p| &*p.uri);
        let decision = limiter.check(caller, crate::state::now());
        if let Some(mode) = over_limit(&decision) {
            self.state
                .metrics()
                .count_rate_limited("inbound", &self.label, mode);
        }
        if !decision.is_allowed() {
            return Err(InboundError::RateLimited(Box::new(decision)));
        }
        let mut rsp = next.oneshot(req).await?;
        add_fields(&decision, rsp.headers_mut());
        Ok(rsp)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use http::StatusCode;
    use http::header::RETRY_AFTER;
    use mesh_core::api::HEADER_MESH_ERROR;

    use mesh_core::identity::SpiffeId;
    use mesh_core::policy::rate_limit::{
        RATELIMIT, RATELIMIT_POLICY, Rate, RateLimitMode, RateLimitOverride,
    };
    use mesh_core::policy::service_policy::ServicePolicy;

    use super::*;

    use crate::test_state::{echo, snapshot};

    const VIP: &str = "spiffe://eu-central.mesh/ns/demo/sa/vip";

    fn spec(identity_rps: u32, mode: RateLimitMode) -> RateLimitSpec {
        RateLimitSpec {
            total: None,
            identity: Some(Rate::per_second(identity_rps)),
            overrides: vec![RateLimitOverride {
                requests_per_second: 3,
                burst: None,
                identities: vec![VIP.into()],
            }],
            mode,
        }
    }

    /// Puts a snapshot of `version` whose `echo.demo` has `limit` into `state`.
    fn publish(state: &SidecarState, version: u64, limit: Option<RateLimitSpec>) {
        let mut s = snapshot(vec![]);
        s.version = version;
        s.policies.insert(
            echo(),
            ServicePolicy {
                inbound_rate_limit: limit,
                ..Default::default()
            },
        );
        state.apply_snapshot(s);
    }

    fn from(caller: Option<&str>) -> Request<()> {
        let mut req = Request::new(());
        if let Some(id) = caller {
            let id: SpiffeId = id.parse().unwrap();
            req.extensions_mut().insert(PeerIdentity::new(id));
        }
        req
    }

    type Harness = crate::test_state::InboundHarness;

    /// The layer of `echo.demo` in a test sidecar over an app that counts its calls.
    fn limited() -> Harness {
        crate::test_state::inbound_harness(|state| layer(state, echo()))
    }

    #[tokio::test(start_paused = true)]
    async fn the_served_service_is_asked_for_so_its_policy_arrives() {
        let (state, svc, calls, _) = limited();
        assert!(state.interest().contains(&echo()));
        // No snapshot, or no limit in it: everything is served.
        assert!(svc.clone().oneshot(from(None)).await.is_ok());
        publish(&state, 1, None);
        for _ in 0..3 {
            assert!(svc.clone().oneshot(from(None)).await.is_ok());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn each_caller_identity_has_its_bucket_and_overrides_their_own_rate() {
        let (state, svc, calls, exported) = limited();
        publish(&state, 1, Some(spec(1, RateLimitMode::Enforce)));
        let a = "spiffe://us-east.mesh/ns/demo/sa/a";
        let rsp = svc.clone().oneshot(from(Some(a))).await.unwrap();
        assert_eq!(rsp.headers()[RATELIMIT], "\"identity\";r=0;t=1");
        assert_eq!(rsp.headers()[RATELIMIT_POLICY], "\"identity\";q=1;w=1");
        let err = svc.clone().oneshot(from(Some(a))).await.unwrap_err();
        assert!(matches!(err, InboundError::RateLimited(_)), "{err}");
        assert_eq!(err.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.label(), "rate-limited");
        // Another caller, the anonymous callers and the override are not charged for `a`.
        assert!(svc.clone().oneshot(from(Some(VIP))).await.is_ok());
        assert!(svc.clone().oneshot(from(None)).await.is_ok());
        let served = [
            svc.clone().oneshot(from(Some(VIP))).await.is_ok(),
            svc.clone().oneshot(from(Some(VIP))).await.is_ok(),
            svc.clone().oneshot(from(Some(VIP))).await.is_ok(),
        ];
        assert_eq!(served, [true, true, false], "the override's rate is 3");
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert!(
            exported().contains(
                "mesh_sidecar_rate_limited_total{direction=\"inbound\",service=\"echo.demo\",mode=\"enforce\"} 2"
            ),
            "{}",
            exported()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejection_is_answered_with_the_fields_by_the_errors_layer() {
        let (state, svc, _, _) = limited();
        publish(&state, 1, Some(spec(1, RateLimitMode::Enforce)));
        let svc = tower::Layer::layer(
            &crate::inbound::errors::layer(echo(), "us-east".into()),
            svc,
        );
        assert!(svc.clone().oneshot(from(None)).await.is_ok());
        let rsp = svc.oneshot(from(None)).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(rsp.headers()[HEADER_MESH_ERROR], "rate-limited");
        assert_eq!(rsp.headers()[RETRY_AFTER], "1");
        assert_eq!(rsp.headers()[RATELIMIT], "\"identity\";r=0;t=1");
    }

    #[tokio::test(start_paused = true)]
    async fn shadow_mode_serves_everything_and_a_new_spec_starts_full() {
        let (state, svc, calls, exported) = limited();
        publish(&state, 1, Some(spec(1, RateLimitMode::Shadow)));
        for _ in 0..3 {
            let rsp = svc.clone().oneshot(from(None)).await.unwrap();
            assert!(rsp.headers().get(RATELIMIT).is_none());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(exported().contains("mode=\"shadow\"} 2"), "{}", exported());
        // The same spec in a newer snapshot keeps the buckets; a changed one starts full.
        publish(&state, 2, Some(spec(1, RateLimitMode::Enforce)));
        assert!(svc.clone().oneshot(from(None)).await.is_ok());
        assert!(svc.clone().oneshot(from(None)).await.is_err());
        publish(&state, 3, Some(spec(1, RateLimitMode::Enforce)));
        assert!(
            svc.clone().oneshot(from(None)).await.is_err(),
            "unchanged spec"
        );
        publish(&state, 4, Some(spec(2, RateLimitMode::Enforce)));
        assert!(svc.oneshot(from(None)).await.is_ok(), "changed spec");
    }
}
