//! The rate-limit layer of routes: the `RateLimitPolicy` of the request's route rule, enforced
//! by the calling sidecar (Linkerd's local rate limit, on the client side). The caller is this
//! sidecar's own identity, so a rule's `identity` and `overrides` buckets limit what this
//! workload sends; the `total` bucket is shared by every request this sidecar sends on the rule.
//!
//! - A limiter lives as long as its rule's spec: one per rule (route and index), rebuilt with
//!   full buckets when the spec changes, dropped when a newer snapshot no longer has the rule
//!   with a limit. A route on several services shares its rule's limiter among them: the
//!   limit is the rule's.
//! - Over the limit: 429 at once (`ProxyError::RateLimited`: `Retry-After`, `RateLimit`,
//!   `RateLimit-Policy`, `x-mesh-error: rate-limited`), counted in
//!   `mesh_sidecar_rate_limited_total{direction="outbound",service,mode="enforce"}`. In shadow
//!   mode the request is counted (`mode="shadow"`) and sent.
//! - Within the limit, the answer carries the `RateLimit` fields too, beside any the upstream
//!   sent (the draft forbids an intermediary removing them).
//!
//! The inbound layer (`inbound::rate_limit`) uses the helpers at the end of this module.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use http::{HeaderMap, Request, Response};
use mesh_core::api::SidecarSnapshot;
use mesh_core::http::BoxBody;
use mesh_core::policy::rate_limit::{
    Decision, RateLimitError, RateLimitSpec, RateLimiter, Verdict, insert_fields,
};
use mesh_core::policy::service_policy::RuleOrigin;
use tower::{Service, ServiceExt};

use super::errors::ProxyError;
use crate::facts::{MatchedRule, Resolved};
use crate::metrics::Metrics;
use crate::stack::{Concern, ConcernLayer};
use crate::state::SidecarState;

/// The route rate-limit layer of the sidecar of `state`, whose identity is the caller.
pub fn layer(state: &Arc<SidecarState>) -> ConcernLayer<RouteRateLimit> {
    ConcernLayer(RouteRateLimit {
        caller: Arc::from(state.identity().id().uri()),
        metrics: state.metrics().clone(),
        limiters: Arc::new(RouteLimiters::default()),
    })
}

/// Applies each request's route rate limit.
#[derive(Debug, Clone)]
pub struct RouteRateLimit {
    caller: Arc<str>,
    metrics: Metrics,
    limiters: Arc<RouteLimiters>,
}

/// The limiter of every rule with a limit, by route then rule index.
#[derive(Debug, Default)]
struct RouteLimiters(Mutex<Limiters>);

#[derive(Debug, Default)]
struct Limiters {
    /// The newest snapshot pruned against (`epoch`, `version`).
    pruned: (u64, u64),
    by_route: HashMap<String, BTreeMap<usize, Arc<RateLimiter>>>,
}

impl RouteLimiters {
    /// The limiter of the rule `origin` with `spec`, as of `snapshot`.
    fn get(
        &self,
        origin: &RuleOrigin,
        spec: &RateLimitSpec,
        snapshot: &SidecarSnapshot,
    ) -> Result<Arc<RateLimiter>, RateLimitError> {
        let mut limiters = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = (snapshot.epoch, snapshot.version);
        // Only a newer snapshot prunes: a request still carrying an older one must not drop
        // (and so refill) the limiter of a rule the newer one has.
        if seen > limiters.pruned {
            limiters.pruned = seen;
            limiters.by_route.retain(|route, rules| {
                rules.retain(|index, _| limited(snapshot, route, *index));
                !rules.is_empty()
            });
        }
        let slot = limiters
            .by_route
            .get_mut(&origin.route)
            .and_then(|rules| rules.get_mut(&origin.index));
        if let Some(slot) = slot {
            return current(slot, spec);
        }
        let limiter = Arc::new(RateLimiter::new(spec.clone())?);
        limiters
            .by_route
            .entry(origin.route.clone())
            .or_default()
            .insert(origin.index, limiter.clone());
        Ok(limiter)
    }
}

/// Whether rule `index` of `route` has a rate limit in `snapshot`.
fn limited(snapshot: &SidecarSnapshot, route: &str, index: usize) -> bool {
    snapshot.policies.values().any(|policy| {
        policy
            .rules
            .iter()
            .any(|r| r.origin.route == route && r.origin.index == index && r.rate_limit.is_some())
    })
}

impl<S, B> Concern<Request<B>, S> for RouteRateLimit
where
    S: Service<Request<B>, Response = Response<BoxBody>, Error = ProxyError> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = ProxyError;

    async fn handle(self, req: Request<B>, next: S) -> Result<Response<BoxBody>, ProxyError> {
        let Some(MatchedRule(rule)) = req.extensions().get::<MatchedRule>().cloned() else {
            // No route (implicit routing): no route limit either.
            return next.oneshot(req).await;
        };
        let Some(spec) = &rule.rule.rate_limit else {
            return next.oneshot(req).await;
        };
        let Some(resolved) = req.extensions().get::<Resolved>() else {
            return Err(ProxyError::Misassembled("Resolved"));
        };
        let service = resolved.dest.service.clone();
        let origin = &rule.rule.origin;
        let limiter = self
            .limiters
            .get(origin, spec, &resolved.snapshot)
            .map_err(|e| ProxyError::PolicyInvalid {
                service: service.clone(),
                reason: format!("{origin}: rateLimit.{e}"),
            })?;
        let decision = limiter.check(Some(&self.caller), crate::state::now());
        if let Some(mode) = over_limit(&decision) {
            self.metrics
                .count_rate_limited("outbound", &service.to_string(), mode);
        }
        if !decision.is_allowed() {
            return Err(ProxyError::RateLimited {
                service,
                rule: origin.to_string(),
                decision: Box::new(decision),
            });
        }
        let mut rsp = next.oneshot(req).await?;
        add_fields(&decision, rsp.headers_mut());
        Ok(rsp)
    }
}

/// The limiter in `slot` if it was built from `spec`, else a new one put there: buckets live
/// as long as their spec, and a changed spec starts with full ones.
pub(crate) fn current(
    slot: &mut Arc<RateLimiter>,
    spec: &RateLimitSpec,
) -> Result<Arc<RateLimiter>, RateLimitError> {
    if slot.spec() != spec {
        *slot = Arc::new(RateLimiter::new(spec.clone())?);
    }
    Ok(slot.clone())
}

/// The `mode` label of a decision over a limit (`enforce` or `shadow`); `None` within it.
pub(crate) fn over_limit(decision: &Decision) -> Option<&'static str> {
    match decision.verdict {
        Verdict::Allowed => None,
        Verdict::Rejected => Some("enforce"),
        Verdict::WouldReject => Some("shadow"),
    }
}

/// Adds the `RateLimit` fields of an allowed request's decision to its answer, after any the
/// answer has: both fields are lists, so the client sees every limit it is under.
pub(crate) fn add_fields(decision: &Decision, headers: &mut HeaderMap) {
    let mut ours = HeaderMap::new();
    insert_fields(decision, &mut ours);
    for (name, value) in &ours {
        headers.append(name, value.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http::header::RETRY_AFTER;
    use http::{HeaderValue, StatusCode};
    use mesh_core::api::HEADER_MESH_ERROR;
    use mesh_core::http::text;
    use mesh_core::names::Destination;
    use mesh_core::policy::rate_limit::{
        RATELIMIT, RATELIMIT_POLICY, Rate, RateLimitMode, RateLimitOverride,
    };
    use mesh_core::policy::router::CompiledRule;
    use mesh_core::policy::service_policy::{RouteRule, ServicePolicy};
    use prometheus_client::registry::Registry;
    use tower::Layer;

    use super::*;
    use crate::test_state::{echo, snapshot, state_with};

    fn spec(rps: u32, burst: u32) -> RateLimitSpec {
        RateLimitSpec {
            total: Some(Rate {
                requests_per_second: rps,
                burst: Some(burst),
            }),
            identity: None,
            overrides: vec![],
            mode: RateLimitMode::Enforce,
        }
    }

    fn rule(limit: Option<RateLimitSpec>) -> RouteRule {
        RouteRule {
            rate_limit: limit,
            ..RouteRule::to_service(
                RuleOrigin {
                    route: "demo/split".into(),
                    created: 0,
                    index: 1,
                    name: None,
                },
                echo(),
            )
        }
    }

    /// A snapshot of `version` whose `echo.demo` policy is `rule`.
    fn snapshot_with(version: u64, rule: RouteRule) -> SidecarSnapshot {
        let mut s = snapshot(vec![]);
        s.version = version;
        s.policies.insert(
            echo(),
            ServicePolicy {
                rules: vec![rule],
                ..Default::default()
            },
        );
        s
    }

    /// A request that matched rule 1 of `demo/split` with `limit`, under snapshot version 1.
    fn request(limit: Option<RateLimitSpec>) -> Request<()> {
        let rule = rule(limit);
        let mut req = Request::new(());
        req.extensions_mut().insert(Resolved {
            dest: Destination {
                service: echo(),
                cluster: None,
            },
            snapshot: Arc::new(snapshot_with(1, rule.clone())),
        });
        req.extensions_mut().insert(MatchedRule(Arc::new(
            CompiledRule::new(rule, "demo").unwrap(),
        )));
        req
    }

    /// The layer of a test sidecar (`spiffe://us-east.mesh/ns/demo/sa/client`) over an app that
    /// counts its calls and answers with its own `RateLimit` field, and the metrics' text.
    fn limited() -> (
        impl Service<Request<()>, Response = Response<BoxBody>, Error = ProxyError> + Clone,
        Arc<AtomicUsize>,
        impl Fn() -> String,
    ) {
        let mut registry = Registry::default();
        let state = state_with(Duration::from_secs(1), Metrics::new(&mut registry));
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let app = tower::service_fn(move |_: Request<()>| {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut rsp = text(StatusCode::OK, "app");
            rsp.headers_mut()
                .insert(RATELIMIT, HeaderValue::from_static("\"app\";r=9;t=1"));
            async { Ok::<_, ProxyError>(rsp) }
        });
        let exported = move || {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out
        };
        (layer(&state).layer(app), calls, exported)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_with_the_fields_then_429_until_a_token_is_back() {
        let (svc, calls, exported) = limited();
        for remaining in [1, 0] {
            let rsp = svc
                .clone()
                .oneshot(request(Some(spec(1, 2))))
                .await
                .unwrap();
            let fields: Vec<_> = rsp.headers().get_all(RATELIMIT).iter().collect();
            let ours = format!("\"total\";r={remaining};t={}", 2 - remaining);
            assert_eq!(
                fields,
                ["\"app\";r=9;t=1", ours.as_str()],
                "the app's is kept"
            );
            assert_eq!(rsp.headers()[RATELIMIT_POLICY], "\"total\";q=2;w=2");
        }
        let err = svc
            .clone()
            .oneshot(request(Some(spec(1, 2))))
            .await
            .unwrap_err();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the refused request is not sent"
        );
        let rsp = err.response();
        assert_eq!(rsp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(rsp.headers()[HEADER_MESH_ERROR], "rate-limited");
        assert_eq!(rsp.headers()[RETRY_AFTER], "1");
        assert_eq!(rsp.headers()[RATELIMIT], "\"total\";r=0;t=2");
        assert!(err.to_string().contains("demo/split/rules[1]"), "{err}");
        assert!(
            exported().contains(
                "mesh_sidecar_rate_limited_total{direction=\"outbound\",service=\"echo.demo\",mode=\"enforce\"} 1"
            ),
            "{}",
            exported()
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let rsp = svc.oneshot(request(Some(spec(1, 2)))).await.unwrap();
        assert_eq!(
            rsp.status(),
            StatusCode::OK,
            "a token is back after a second"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shadow_mode_counts_and_sends_everything_without_fields() {
        let (svc, calls, exported) = limited();
        let shadow = RateLimitSpec {
            mode: RateLimitMode::Shadow,
            ..spec(1, 1)
        };
        for _ in 0..3 {
            let rsp = svc
                .clone()
                .oneshot(request(Some(shadow.clone())))
                .await
                .unwrap();
            assert_eq!(
                rsp.headers().get_all(RATELIMIT).iter().count(),
                1,
                "the app's only"
            );
            assert!(rsp.headers().get(RATELIMIT_POLICY).is_none());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(exported().contains("mode=\"shadow\"} 2"), "{}", exported());
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiter_lives_as_long_as_its_spec() {
        let (svc, _, _) = limited();
        assert!(svc.clone().oneshot(request(Some(spec(1, 1)))).await.is_ok());
        assert!(
            svc.clone()
                .oneshot(request(Some(spec(1, 1))))
                .await
                .is_err()
        );
        // A changed spec is a new limiter with a full bucket.
        assert!(svc.clone().oneshot(request(Some(spec(2, 1)))).await.is_ok());
        assert!(
            svc.clone()
                .oneshot(request(Some(spec(2, 1))))
                .await
                .is_err()
        );
        // Requests without a limit are not counted against it.
        assert!(svc.oneshot(request(None)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_caller_is_this_sidecars_identity() {
        let (svc, _, _) = limited();
        let mut own = spec(100, 100);
        own.overrides.push(RateLimitOverride {
            requests_per_second: 1,
            burst: None,
            identities: vec!["spiffe://us-east.mesh/ns/demo/sa/client".into()],
        });
        assert!(
            svc.clone()
                .oneshot(request(Some(own.clone())))
                .await
                .is_ok()
        );
        let err = svc.oneshot(request(Some(own))).await.unwrap_err();
        let ProxyError::RateLimited { decision, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(
            decision.limit.unwrap().kind.as_str(),
            "override",
            "our own override applied"
        );
    }

    #[test]
    fn a_newer_snapshot_without_the_rule_drops_its_limiter() {
        let limiters = RouteLimiters::default();
        let with = rule(Some(spec(1, 1)));
        let origin = with.origin.clone();
        let now = std::time::Instant::now();
        let first = limiters
            .get(&origin, &spec(1, 1), &snapshot_with(1, with.clone()))
            .unwrap();
        assert!(first.check(None, now).is_allowed());
        // An older snapshot prunes nothing.
        let again = limiters
            .get(&origin, &spec(1, 1), &snapshot_with(0, rule(None)))
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        limiters
            .get(&origin, &spec(1, 1), &snapshot_with(2, with.clone()))
            .unwrap();
        let mut without = snapshot_with(3, rule(None));
        without.policies.clear();
        let other = RuleOrigin {
            index: 0,
            ..origin.clone()
        };
        limiters.get(&other, &spec(5, 5), &without).unwrap();
        let rebuilt = limiters.get(&origin, &spec(1, 1), &without).unwrap();
        assert!(!Arc::ptr_eq(&first, &rebuilt), "pruned, then built anew");
        assert!(rebuilt.check(None, now).is_allowed(), "with a full bucket");
    }
}
