//! The inbound authorization layer: the `AuthorizationPolicy`s that target the service this
//! sidecar serves (`ServicePolicy::authorization`), judged per request by
//! [`mesh_core::policy::authorization::decide`] on the caller's SPIFFE ID (the
//! [`PeerIdentity`] fact from the mTLS handshake; none for a caller without one), the method
//! and the path without the query.
//!
//! - The policies are read from the latest snapshot on each request, so a new policy applies
//!   without a restart; the served service is added to the sidecar's interest set when the
//!   layer is built, so that the controller sends its policy.
//! - Denied: 403 (`InboundError::Unauthorized`, `x-mesh-error: unauthorized`, a body naming
//!   the DENY policy, or the ALLOW policies none of which matched); the app is not called.
//! - AUDIT policies that match are logged and counted, and change nothing.
//! - Every judged request is counted in
//!   `mesh_sidecar_authorization_total{service,policy,decision}` (services without policies
//!   are not judged, so not counted).
//! - An opaque stream (a CONNECT another sidecar's capture sent) reaches this layer as a
//!   request like any other: it is judged as `CONNECT` on `/` (its authority-form target has
//!   no path), so `to` rules on paths other than `/` or `*` never admit it.

use std::sync::Arc;

use http::{Request, Response};
use mesh_core::http::BoxBody;
use mesh_core::names::ServiceKey;
use mesh_core::policy::authorization::{
    AuthorizationAction, AuthorizationRequest, Decision, decide,
};
use tower::{Service, ServiceExt};

use super::errors::InboundError;
use crate::facts::PeerIdentity;
use crate::stack::{Concern, ConcernLayer};
use crate::state::SidecarState;

/// The metric label of a decision no single policy made.
const NO_POLICY: &str = "-";

/// The inbound authorization layer of `service`, served by the sidecar of `state`; asks the
/// controller for `service` so that its policies are in the snapshots.
pub fn layer(state: Arc<SidecarState>, service: ServiceKey) -> ConcernLayer<Authorization> {
    state.ask_for([service.clone()]);
    ConcernLayer(Authorization {
        label: Arc::from(service.to_string()),
        service: Arc::new(service),
        state,
    })
}

/// Applies the served service's authorization policies.
#[derive(Debug, Clone)]
pub struct Authorization {
    state: Arc<SidecarState>,
    service: Arc<ServiceKey>,
    label: Arc<str>,
}

impl<S, B> Concern<Request<B>, S> for Authorization
where
    S: Service<Request<B>, Response = Response<BoxBody>, Error = InboundError> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = InboundError;

    async fn handle(self, req: Request<B>, next: S) -> Result<Response<BoxBody>, InboundError> {
        let snapshot = self.state.snapshot();
        let policies = snapshot
            .as_ref()
            .and_then(|s| s.policies.get(&*self.service))
            .map(|p| p.authorization.as_slice())
            .unwrap_or_default();
        if policies.is_empty() {
            return next.oneshot(req).await;
        }
        let caller = req.extensions().get::<PeerIdentity>();
        // An authority-form target (CONNECT) has no path: it is judged on `/`.
        let path = match req.uri().path() {
            "" => "/",
            path => path,
        };
        let decision = decide(
            policies,
            &AuthorizationRequest {
                caller: caller.map(|c| &*c.id),
                method: req.method().as_str(),
                path,
            },
        );
        let who = caller.map_or("(no identity)", |c| &*c.uri);
        let metrics = self.state.metrics();
        for audit in &decision.audit {
            tracing::info!(
                service = %self.service, policy = %audit, caller = who,
                method = %req.method(), path, allowed = decision.allowed,
                "authorization audit"
            );
            metrics.count_authorization(&self.label, audit, "audit");
        }
        let policy = decision.policy.as_deref().unwrap_or(NO_POLICY);
        if decision.allowed {
            metrics.count_authorization(&self.label, policy, "allow");
            return next.oneshot(req).await;
        }
        metrics.count_authorization(&self.label, policy, "deny");
        let reason = refusal(&decision, policies);
        tracing::debug!(
            service = %self.service, caller = who, method = %req.method(), path, %reason,
            "authorization denied"
        );
        Err(InboundError::Unauthorized(reason))
    }
}

/// Why a request is refused, naming the policy: the DENY policy that matched, or the ALLOW
/// policies of which none did.
fn refusal(
    decision: &Decision,
    policies: &[mesh_core::policy::authorization::AuthorizationRules],
) -> String {
    if decision.policy.is_some() {
        return decision.reason();
    }
    let allow: Vec<&str> = policies
        .iter()
        .filter(|p| p.action == AuthorizationAction::Allow)
        .map(|p| p.name.as_str())
        .collect();
    format!(
        "no ALLOW policy of the service matches ({})",
        allow.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use http::{Method, StatusCode};
    use mesh_core::api::HEADER_MESH_ERROR;

    use mesh_core::identity::SpiffeId;
    use mesh_core::policy::authorization::{AuthorizationPolicy, AuthorizationRules};
    use mesh_core::policy::service_policy::ServicePolicy;

    use super::*;

    use crate::test_state::{echo, snapshot};

    const FRONTEND: &str = "spiffe://eu-central.mesh/ns/web/sa/frontend";
    const BATCH: &str = "spiffe://eu-central.mesh/ns/web/sa/batch";

    /// The policy `demo/<name>` with the spec fields `json` (beside `targetRef`), checked.
    fn policy(name: &str, json: &str) -> AuthorizationRules {
        let p: AuthorizationPolicy = serde_json::from_str(&format!(
            r#"{{"targetRef": {{"group": "", "kind": "Service", "name": "echo"}}, {json}}}"#
        ))
        .unwrap();
        p.validate().unwrap();
        AuthorizationRules::of(format!("demo/{name}"), &p)
    }

    fn allow_frontend() -> AuthorizationRules {
        policy(
            "frontend",
            &format!(r#""rules": [{{"from": [{{"source": {{"principals": ["{FRONTEND}"]}}}}]}}]"#),
        )
    }

    fn no_admin() -> AuthorizationRules {
        policy(
            "no-admin",
            r#""action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]"#,
        )
    }

    /// Puts a snapshot of `version` whose `echo.demo` has `policies` into `state`.
    fn publish(state: &SidecarState, version: u64, policies: Vec<AuthorizationRules>) {
        let mut s = snapshot(vec![]);
        s.version = version;
        s.policies.insert(
            echo(),
            ServicePolicy {
                authorization: policies,
                ..Default::default()
            },
        );
        state.apply_snapshot(s);
    }

    fn from(caller: Option<&str>, method: Method, uri: &str) -> Request<()> {
        let mut req = Request::builder().method(method).uri(uri).body(()).unwrap();
        if let Some(id) = caller {
            let id: SpiffeId = id.parse().unwrap();
            req.extensions_mut().insert(PeerIdentity::new(id));
        }
        req
    }

    fn get(caller: Option<&str>, path: &str) -> Request<()> {
        from(caller, Method::GET, path)
    }

    type Harness = crate::test_state::InboundHarness;

    /// The layer of `echo.demo` in a test sidecar over an app that counts its calls.
    fn guarded() -> Harness {
        crate::test_state::inbound_harness(|state| layer(state, echo()))
    }

    #[tokio::test]
    async fn without_policies_everything_is_served_and_nothing_counted() {
        let (state, svc, calls, exported) = guarded();
        assert!(state.interest().contains(&echo()));
        assert!(svc.clone().oneshot(get(None, "/")).await.is_ok());
        publish(&state, 1, vec![]);
        assert!(
            svc.clone()
                .oneshot(get(Some(BATCH), "/admin/x"))
                .await
                .is_ok()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(!exported().contains("mesh_sidecar_authorization_total{"));
    }

    #[tokio::test]
    async fn only_allowed_callers_reach_the_app_and_deny_comes_first() {
        let (state, svc, calls, exported) = guarded();
        publish(&state, 1, vec![allow_frontend(), no_admin()]);
        assert!(
            svc.clone()
                .oneshot(get(Some(FRONTEND), "/api?x=1"))
                .await
                .is_ok()
        );
        let batch = svc
            .clone()
            .oneshot(get(Some(BATCH), "/api"))
            .await
            .unwrap_err();
        assert!(matches!(batch, InboundError::Unauthorized(_)), "{batch}");
        assert_eq!(batch.status(), StatusCode::FORBIDDEN);
        assert_eq!(batch.label(), "unauthorized");
        assert_eq!(
            batch.to_string(),
            "unauthorized: no ALLOW policy of the service matches (demo/frontend)"
        );
        let anonymous = svc.clone().oneshot(get(None, "/api")).await.unwrap_err();
        assert!(matches!(anonymous, InboundError::Unauthorized(_)));
        let admin = svc
            .clone()
            .oneshot(get(Some(FRONTEND), "/admin/users"))
            .await
            .unwrap_err();
        assert_eq!(
            admin.to_string(),
            "unauthorized: denied by DENY policy demo/no-admin"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let out = exported();
        for line in [
            "mesh_sidecar_authorization_total{service=\"echo.demo\",policy=\"demo/frontend\",decision=\"allow\"} 1",
            "mesh_sidecar_authorization_total{service=\"echo.demo\",policy=\"-\",decision=\"deny\"} 2",
            "mesh_sidecar_authorization_total{service=\"echo.demo\",policy=\"demo/no-admin\",decision=\"deny\"} 1",
        ] {
            assert!(out.contains(line), "{line} in\n{out}");
        }
    }

    #[tokio::test]
    async fn a_denial_is_answered_403_with_the_policy_by_the_errors_layer() {
        let (state, svc, _, _) = guarded();
        publish(&state, 1, vec![no_admin()]);
        let svc = tower::Layer::layer(
            &crate::inbound::errors::layer(echo(), "us-east".into()),
            svc,
        );
        let rsp = svc.oneshot(get(None, "/admin/x")).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
        assert_eq!(rsp.headers()[HEADER_MESH_ERROR], "unauthorized");
        let body = http_body_util::BodyExt::collect(rsp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("demo/no-admin"), "{body}");
    }

    #[tokio::test]
    async fn audit_policies_only_count_and_new_policies_apply_without_restart() {
        let (state, svc, calls, exported) = guarded();
        let audit = policy(
            "watch",
            r#""action": "AUDIT", "rules": [{"from": [{"source": {"namespaces": ["web"]}}]}]"#,
        );
        publish(&state, 1, vec![audit.clone()]);
        assert!(svc.clone().oneshot(get(Some(BATCH), "/")).await.is_ok());
        assert!(exported().contains(
            "mesh_sidecar_authorization_total{service=\"echo.demo\",policy=\"demo/watch\",decision=\"audit\"} 1"
        ));
        publish(&state, 2, vec![audit, allow_frontend()]);
        assert!(svc.clone().oneshot(get(Some(BATCH), "/")).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_opaque_stream_is_judged_as_connect_on_the_root() {
        let (state, svc, calls, _) = guarded();
        let no_tcp = policy(
            "no-tcp",
            r#""action": "DENY", "rules": [{"to": [{"operation": {"methods": ["CONNECT"], "paths": ["/"]}}]}]"#,
        );
        publish(&state, 1, vec![no_tcp]);
        let connect = from(Some(FRONTEND), Method::CONNECT, "echo.demo:5432");
        assert_eq!(connect.uri().path(), "");
        let e = svc.clone().oneshot(connect).await.unwrap_err();
        assert!(e.to_string().contains("demo/no-tcp"), "{e}");
        assert!(svc.clone().oneshot(get(Some(FRONTEND), "/")).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
