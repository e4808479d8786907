//! The inbound authorization layer: the `AuthorizationPolicy`s that target the service this
//! sidecar serves or its namespace, and the namespace's default (`ServicePolicy::authorization`
//! and `authorization_default`), judged per request by
//! [`mesh_core::policy::authorization::decide`] on the caller's SPIFFE ID (the
//! [`PeerIdentity`] fact from the mTLS handshake; none for a caller without one), the method,
//! the path without the query, and the port of the app the request is delivered to.
//!
//! - The policies are read from the latest snapshot on each request, so a new policy applies
//!   without a restart; the served service is added to the sidecar's interest set when the
//!   layer is built, so that the controller sends its policy.
//! - Denied: 403 (`InboundError::Unauthorized`, `x-mesh-error: unauthorized`, a body naming
//!   the DENY policy, the policy setting the namespace's default, or the ALLOW policies none
//!   of which matched; a gRPC call gets `grpc-status: 7` instead, see `errors`); the app is not
//!   called.
//! - AUDIT policies that match are logged and counted, and change nothing.
//! - Every judged request is counted in
//!   `mesh_sidecar_authorization_total{service,policy,decision}` (`policy` is the deciding
//!   policy's `<namespace>/<name>`, `-` when none did; services without policies nor default
//!   are not judged, so not counted).
//! - An opaque connection (a CONNECT another sidecar's capture sent, or any mesh client's) is
//!   judged without method nor path and fails closed, as Istio judges TCP: an ALLOW `to`
//!   naming methods or paths never admits it, a DENY rule ignores those fields, so a tunnel
//!   cannot carry to the app the requests a DENY refuses. A denied one is answered 403 before
//!   any byte reaches the app, so the caller's sidecar closes the captured connection. An upgrade (an extended CONNECT,
//!   see `upgrade`) is the HTTP `GET` it stands for, on its path.

use std::sync::Arc;

use http::{Method, Request, Response};
use mesh_core::http::BoxBody;
use mesh_core::identity::default_trust_domain;
use mesh_core::names::ServiceKey;
use mesh_core::policy::authorization::{
    AuthorizationAction, AuthorizationRequest, AuthorizationRules, Decision, HttpRequestLine,
    decide,
};
use tower::ServiceExt;

use super::errors::{InboundError, InboundNext};
use crate::facts::PeerIdentity;
use crate::stack::{Concern, ConcernLayer};
use crate::state::SidecarState;

/// The metric label of a decision no single policy made.
const NO_POLICY: &str = "-";

/// The inbound authorization layer of `service`, whose app listens on `app_port`, served by
/// the sidecar of `state`; asks the controller for `service` so that its policies are in the
/// snapshots.
pub fn layer(
    state: Arc<SidecarState>,
    service: ServiceKey,
    app_port: u16,
) -> ConcernLayer<Authorization> {
    state.ask_for([service.clone()]);
    ConcernLayer(Authorization {
        label: Arc::from(service.to_string()),
        service: Arc::new(service),
        trust_domain: Arc::from(default_trust_domain(state.cluster())),
        app_port,
        state,
    })
}

/// Applies the served service's authorization policies.
#[derive(Debug, Clone)]
pub struct Authorization {
    state: Arc<SidecarState>,
    service: Arc<ServiceKey>,
    label: Arc<str>,
    trust_domain: Arc<str>,
    app_port: u16,
}

impl<S, B> Concern<Request<B>, S> for Authorization
where
    S: InboundNext<B>,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = InboundError;

    async fn handle(self, req: Request<B>, next: S) -> Result<Response<BoxBody>, InboundError> {
        let snapshot = self.state.snapshot();
        let service_policy = snapshot
            .as_ref()
            .and_then(|s| s.policies.get(&*self.service));
        let policies = service_policy
            .map(|p| p.authorization.as_slice())
            .unwrap_or_default();
        let default = service_policy.and_then(|p| p.authorization_default.as_ref());
        if policies.is_empty() && default.is_none() {
            return next.oneshot(req).await;
        }
        let caller = req.extensions().get::<PeerIdentity>();
        let upgrade = req.extensions().get::<hyper::ext::Protocol>().is_some();
        let http = match (req.method(), upgrade) {
            (&Method::CONNECT, false) => None,
            (&Method::CONNECT, true) => Some(HttpRequestLine {
                method: Method::GET.as_str(),
                path: req.uri().path(),
            }),
            (method, _) => Some(HttpRequestLine {
                method: method.as_str(),
                path: req.uri().path(),
            }),
        };
        let decision = decide(
            policies,
            default,
            &AuthorizationRequest {
                caller: caller.map(|c| &*c.id),
                http,
                port: self.app_port,
                own_trust_domain: &self.trust_domain,
            },
        );
        let who = caller.map_or("(no identity)", |c| &*c.uri);
        let (method, path) = http.map_or(("CONNECT", "(opaque)"), |h| (h.method, h.path));
        let metrics = self.state.metrics();
        for audit in &decision.audit {
            tracing::info!(
                service = %self.service, policy = %audit, caller = who, method, path,
                allowed = decision.allowed, "authorization audit"
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
            service = %self.service, caller = who, method, path, %reason,
            "authorization denied"
        );
        Err(InboundError::Unauthorized(reason))
    }
}

/// Why a request is refused, naming the policy: the DENY policy that matched, the one setting
/// the namespace's default, or the ALLOW policies of which none did.
fn refusal(decision: &Decision, policies: &[AuthorizationRules]) -> String {
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
    use mesh_core::policy::authorization::{
        AuthorizationDefault, AuthorizationPolicy, AuthorizationRules, NamespaceDefault,
    };
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
        publish_with(state, version, policies, None);
    }

    /// As [`publish`], with the namespace's default.
    fn publish_with(
        state: &SidecarState,
        version: u64,
        policies: Vec<AuthorizationRules>,
        default: Option<AuthorizationDefault>,
    ) {
        let mut s = snapshot(vec![]);
        s.version = version;
        s.policies.insert(
            echo(),
            ServicePolicy {
                authorization: policies,
                authorization_default: default.map(|default| NamespaceDefault {
                    policy: "demo/defaults".into(),
                    default,
                }),
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
        crate::test_state::inbound_harness(|state| layer(state, echo(), 8080))
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
    async fn an_opaque_stream_is_judged_on_its_caller_and_port_only() {
        let (state, svc, calls, exported) = guarded();
        let by_path = policy(
            "by-path",
            r#""rules": [{"to": [{"operation": {"methods": ["CONNECT"], "paths": ["*"]}}]}]"#,
        );
        let by_port = policy(
            "frontend-tcp",
            &format!(
                r#""rules": [{{"from": [{{"source": {{"principals": ["{FRONTEND}"]}}}}], "to": [{{"operation": {{"ports": [8080]}}}}]}}]"#
            ),
        );
        publish(&state, 1, vec![by_path, by_port]);
        let connect = |caller| from(Some(caller), Method::CONNECT, "echo.demo:5432");
        let e = svc.clone().oneshot(connect(BATCH)).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "unauthorized: no ALLOW policy of the service matches (demo/by-path, demo/frontend-tcp)"
        );
        assert!(svc.clone().oneshot(connect(FRONTEND)).await.is_ok());
        // An HTTP request is matched by the path rule.
        assert!(svc.clone().oneshot(get(Some(BATCH), "/")).await.is_err());
        let mut upgrade = from(Some(BATCH), Method::CONNECT, "/chat");
        upgrade
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        assert!(
            svc.clone().oneshot(upgrade).await.is_err(),
            "an upgrade is a GET"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(exported().contains(
            "mesh_sidecar_authorization_total{service=\"echo.demo\",policy=\"demo/frontend-tcp\",decision=\"allow\"} 1"
        ));
        // A port the rule does not name.
        let other_port = crate::test_state::inbound_harness(|state| layer(state, echo(), 9090));
        publish(
            &other_port.0,
            1,
            vec![policy(
                "frontend-tcp",
                &format!(
                    r#""rules": [{{"from": [{{"source": {{"principals": ["{FRONTEND}"]}}}}], "to": [{{"operation": {{"ports": [8080]}}}}]}}]"#
                ),
            )],
        );
        assert!(
            other_port
                .1
                .clone()
                .oneshot(connect(FRONTEND))
                .await
                .is_err()
        );
        // A DENY written for HTTP paths refuses every tunnel: one could carry those requests.
        publish(&other_port.0, 2, vec![no_admin()]);
        let e = other_port
            .1
            .clone()
            .oneshot(connect(FRONTEND))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unauthorized: denied by DENY policy demo/no-admin"
        );
        assert!(
            other_port
                .1
                .oneshot(get(Some(FRONTEND), "/api"))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_namespace_default_applies_without_allow_policies() {
        let (state, svc, calls, exported) = guarded();
        publish_with(&state, 1, vec![], Some(AuthorizationDefault::SameCluster));
        let east = "spiffe://us-east.mesh/ns/demo/sa/client";
        assert!(svc.clone().oneshot(get(Some(east), "/")).await.is_ok());
        let e = svc
            .clone()
            .oneshot(get(Some(FRONTEND), "/"))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("namespace default sameCluster of demo/defaults"),
            "{e}"
        );
        publish_with(
            &state,
            2,
            vec![allow_frontend()],
            Some(AuthorizationDefault::Deny),
        );
        assert!(svc.clone().oneshot(get(Some(FRONTEND), "/")).await.is_ok());
        assert!(svc.clone().oneshot(get(Some(east), "/")).await.is_err());
        publish_with(&state, 3, vec![], Some(AuthorizationDefault::Deny));
        assert!(svc.clone().oneshot(get(Some(FRONTEND), "/")).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let out = exported();
        for line in [
            "mesh_sidecar_authorization_total{service=\"echo.demo\",policy=\"demo/defaults\",decision=\"allow\"} 1",
            "mesh_sidecar_authorization_total{service=\"echo.demo\",policy=\"demo/defaults\",decision=\"deny\"} 2",
        ] {
            assert!(out.contains(line), "{line} in\n{out}");
        }
    }
}
