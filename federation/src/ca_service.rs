//! The cluster CA as a service: loads the CA and join token from the state directory, issues the
//! controller's own serving certificate, and signs CSRs of sidecars and the gateway that present
//! the join token.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::api::{CsrRequest, CsrResponse};
use mesh_core::identity::{
    CaError, ClusterCa, SpiffeId, TrustBundle, WorkloadIdentity, default_trust_domain,
};
use mesh_core::names::check_label;

use crate::error::{ApiError, FederationError};
use crate::kubernetes::token_review::{ReviewError, ServiceAccountRef, TokenReviewer};

/// File of the join token inside the state directory.
pub(crate) const JOIN_TOKEN_FILE: &str = "join-token";

/// Why a CSR was refused, as a metrics label and an API error.
#[derive(Debug)]
pub(crate) struct CsrRefusal {
    /// Short label for `mesh_controller_csrs_refused_total{reason}`.
    pub reason: &'static str,
    /// The answer.
    pub error: ApiError,
}

/// How workloads in Kubernetes prove who they are: a ServiceAccount token, reviewed by the
/// API server; the identity signed is the token's ServiceAccount's.
#[derive(Debug, Clone)]
pub(crate) struct KubernetesAuth {
    /// Checks tokens.
    pub reviewer: Arc<dyn TokenReviewer>,
    /// The gateway's ServiceAccount: its tokens get the gateway identity.
    pub gateway: ServiceAccountRef,
}

/// The CA, the join token and the signing policy.
pub(crate) struct CaService {
    ca: ClusterCa,
    cluster: String,
    token: String,
    cert_ttl: Duration,
    kubernetes: Option<KubernetesAuth>,
}

impl std::fmt::Debug for CaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaService")
            .field("cluster", &self.cluster)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl CaService {
    /// Loads `ca.crt`, `ca.key` and `join-token` from `state_dir`; errors name the file and
    /// what to run.
    pub(crate) fn load(
        state_dir: &Path,
        cluster: &str,
        cert_ttl: Duration,
    ) -> Result<Self, FederationError> {
        let hint = ca_hint(state_dir, cluster);
        let trust_domain = default_trust_domain(cluster);
        let ca = ClusterCa::load(state_dir, &trust_domain).map_err(|e| {
            let (path, reason) = match &e {
                CaError::Io { path, source } => (path.clone(), source.to_string()),
                // Parse errors already name the file inside the directory.
                other => (state_dir.to_path_buf(), other.to_string()),
            };
            FederationError::StateFile {
                path,
                reason,
                hint: hint.clone(),
            }
        })?;
        let token_path = state_dir.join(JOIN_TOKEN_FILE);
        let token = std::fs::read_to_string(&token_path)
            .map_err(|e| FederationError::StateFile {
                path: token_path.clone(),
                reason: e.to_string(),
                hint: hint.clone(),
            })?
            .trim()
            .to_string();
        if token.is_empty() {
            return Err(FederationError::StateFile {
                path: token_path,
                reason: "the join token file is empty".into(),
                hint,
            });
        }
        Ok(Self::new(ca, cluster, token, cert_ttl))
    }

    /// A service over an already loaded CA.
    pub(crate) fn new(ca: ClusterCa, cluster: &str, token: String, cert_ttl: Duration) -> Self {
        Self {
            ca,
            cluster: cluster.to_string(),
            token,
            cert_ttl,
            kubernetes: None,
        }
    }

    /// Also accepts ServiceAccount tokens (Kubernetes mode).
    pub(crate) fn with_kubernetes_auth(mut self, auth: KubernetesAuth) -> Self {
        self.kubernetes = Some(auth);
        self
    }

    /// The cluster's trust bundle.
    pub(crate) fn bundle(&self) -> TrustBundle {
        TrustBundle {
            trust_domain: self.ca.trust_domain().to_string(),
            cluster: self.cluster.clone(),
            ca_pem: self.ca.cert_pem().to_string(),
        }
    }

    /// The trust domain.
    pub(crate) fn trust_domain(&self) -> &str {
        self.ca.trust_domain()
    }

    /// Issues the controller's own serving certificate.
    pub(crate) fn controller_identity(&self) -> Result<WorkloadIdentity, CaError> {
        self.ca
            .issue(&SpiffeId::controller(self.ca.trust_domain()), self.cert_ttl)
    }

    /// Issues the certificate of the controller's admission webhook: the controller's identity
    /// plus the host names and addresses the API server calls it by.
    pub(crate) fn issue_serving(
        &self,
        dns_names: &[String],
        ips: &[std::net::IpAddr],
        validity: Duration,
    ) -> Result<WorkloadIdentity, CaError> {
        self.ca.issue_serving(
            &SpiffeId::controller(self.ca.trust_domain()),
            dns_names,
            ips,
            validity,
        )
    }

    /// Checks the `authorization` header and signs the request: the join token lets the
    /// request name any workload or the gateway of this trust domain; a ServiceAccount token
    /// (Kubernetes mode) only the identity of its own ServiceAccount.
    pub(crate) async fn sign(
        &self,
        authorization: Option<&str>,
        request: &CsrRequest,
    ) -> Result<(SpiffeId, CsrResponse), CsrRefusal> {
        let refuse = |msg: String| CsrRefusal {
            reason: "token",
            error: ApiError::Unauthorized(msg),
        };
        let presented = bearer(authorization).ok_or_else(|| {
            refuse(match self.kubernetes {
                Some(_) => "certificate requests need `authorization: Bearer <token>`: the pod's \
                            projected ServiceAccount token (audience `mesh`), or the cluster's \
                            join token"
                    .into(),
                None => "certificate requests need `authorization: Bearer <join token>` (the \
                         cluster's join-token file)"
                    .into(),
            })
        })?;
        if constant_time_eq(presented.as_bytes(), self.token.as_bytes()) {
            return self.sign_as(request, authorise_path);
        }
        let Some(kubernetes) = &self.kubernetes else {
            return Err(refuse(format!(
                "the join token does not match cluster {}'s; pass the join-token file of this \
                 cluster's state directory",
                self.cluster
            )));
        };
        let account = kubernetes
            .reviewer
            .review(presented)
            .await
            .map_err(|e| match e {
                ReviewError::Unavailable(_) => CsrRefusal {
                    reason: "review_unavailable",
                    error: ApiError::Unavailable(e.to_string()),
                },
                other => refuse(other.to_string()),
            })?;
        let trust_domain = self.ca.trust_domain();
        let allowed = if account == kubernetes.gateway {
            SpiffeId::gateway(trust_domain)
        } else {
            SpiffeId::workload(trust_domain, &account.namespace, &account.name)
        };
        self.sign_as(request, |id| {
            if *id == allowed {
                Ok(())
            } else {
                Err(format!(
                    "the token is ServiceAccount {account}'s, whose identity is {allowed}; it \
                     cannot be issued {id}"
                ))
            }
        })
    }

    fn sign_as(
        &self,
        request: &CsrRequest,
        authorise: impl FnOnce(&SpiffeId) -> Result<(), String>,
    ) -> Result<(SpiffeId, CsrResponse), CsrRefusal> {
        let (id, cert_chain_pem) = self
            .ca
            .sign_csr(&request.csr_pem, self.cert_ttl, authorise)
            .map_err(|e| match e {
                CaError::Refused(_) => CsrRefusal {
                    reason: "policy",
                    error: ApiError::Forbidden(e.to_string()),
                },
                other => CsrRefusal {
                    reason: "malformed",
                    error: ApiError::BadRequest(other.to_string()),
                },
            })?;
        Ok((
            id,
            CsrResponse {
                cert_chain_pem,
                trust_bundle: self.bundle(),
            },
        ))
    }
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty()).then_some(token)
}

/// What to run to create the state directory's CA material. `mesh ca` writes into
/// `<state-dir>/<cluster>/`, so the parent is named when the directory is the cluster's own.
fn ca_hint(state_dir: &Path, cluster: &str) -> String {
    let root = state_dir
        .parent()
        .filter(|_| state_dir.file_name().is_some_and(|n| n == cluster));
    match root {
        Some(root) => format!(
            "run `mesh ca --cluster {cluster} --state-dir {}` (or `mesh up`) to create the \
             cluster's CA and join token",
            if root.as_os_str().is_empty() {
                Path::new(".")
            } else {
                root
            }
            .display()
        ),
        None => format!(
            "run `mesh ca --cluster {cluster}` (or `mesh up`) and point --state-dir at the \
             directory it creates for the cluster (it holds ca.crt, ca.key and join-token); \
             {} is not one",
            state_dir.display()
        ),
    }
}

/// Which identities a join token may obtain: workloads and the gateway, never the controller.
fn authorise_path(id: &SpiffeId) -> Result<(), String> {
    if id.path == "gateway" {
        return Ok(());
    }
    if id.path == "controller" {
        return Err(format!(
            "{id} is the controller's own identity and is never issued"
        ));
    }
    match id.path.split('/').collect::<Vec<_>>().as_slice() {
        ["ns", ns, "sa", sa] if check_label(ns).is_ok() && check_label(sa).is_ok() => Ok(()),
        _ => Err(format!(
            "{id} is neither a workload (spiffe://<td>/ns/<namespace>/sa/<account>) nor the \
             gateway (spiffe://<td>/gateway)"
        )),
    }
}

/// Compares secrets in time that depends only on their lengths, so the token cannot be guessed
/// byte by byte from response times.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use mesh_core::identity::WorkloadCsr;

    use super::*;

    fn service() -> CaService {
        let ca = ClusterCa::generate("us-east.mesh").unwrap();
        CaService::new(ca, "us-east", "s3cret".into(), Duration::from_secs(3600))
    }

    fn csr(id: &SpiffeId) -> CsrRequest {
        CsrRequest {
            csr_pem: WorkloadCsr::generate(id).unwrap().csr_pem,
        }
    }

    #[tokio::test]
    async fn signs_workloads_and_the_gateway_with_the_token() {
        let svc = service();
        let id = SpiffeId::workload("us-east.mesh", "demo", "echo");
        let (signed, rsp) = svc.sign(Some("Bearer s3cret"), &csr(&id)).await.unwrap();
        assert_eq!(signed, id);
        assert_eq!(rsp.trust_bundle.cluster, "us-east");
        assert!(rsp.cert_chain_pem.contains("BEGIN CERTIFICATE"));
        let gw = SpiffeId::gateway("us-east.mesh");
        assert!(svc.sign(Some("Bearer s3cret"), &csr(&gw)).await.is_ok());
    }

    #[tokio::test]
    async fn refuses_bad_tokens_the_controller_identity_and_odd_paths() {
        let svc = service();
        let id = SpiffeId::workload("us-east.mesh", "demo", "echo");
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("s3cret"),
            Some("Bearer s3cre"),
        ] {
            let err = svc.sign(auth, &csr(&id)).await.unwrap_err();
            assert_eq!(err.reason, "token", "{auth:?}");
            assert_eq!(err.error.status(), http::StatusCode::UNAUTHORIZED);
        }
        let ctl = SpiffeId::controller("us-east.mesh");
        let err = svc
            .sign(Some("Bearer s3cret"), &csr(&ctl))
            .await
            .unwrap_err();
        assert_eq!(err.error.status(), http::StatusCode::FORBIDDEN);
        assert!(
            err.error.to_string().contains("never issued"),
            "{}",
            err.error
        );
        let odd: SpiffeId = "spiffe://us-east.mesh/admin".parse().unwrap();
        assert_eq!(
            svc.sign(Some("Bearer s3cret"), &csr(&odd))
                .await
                .unwrap_err()
                .reason,
            "policy"
        );
        let foreign = SpiffeId::gateway("eu-central.mesh");
        assert_eq!(
            svc.sign(Some("Bearer s3cret"), &csr(&foreign))
                .await
                .unwrap_err()
                .reason,
            "policy"
        );
        let garbage = CsrRequest {
            csr_pem: "not a csr".into(),
        };
        assert_eq!(
            svc.sign(Some("Bearer s3cret"), &garbage)
                .await
                .unwrap_err()
                .reason,
            "malformed"
        );
    }

    #[derive(Debug)]
    struct FixedReviewer(Result<ServiceAccountRef, ReviewError>);

    impl TokenReviewer for FixedReviewer {
        fn review<'a>(
            &'a self,
            _token: &'a str,
        ) -> crate::kubernetes::token_review::ReviewFuture<'a> {
            let answer = self.0.clone();
            Box::pin(async move { answer })
        }
    }

    fn kubernetes_service(answer: Result<ServiceAccountRef, ReviewError>) -> CaService {
        service().with_kubernetes_auth(KubernetesAuth {
            reviewer: Arc::new(FixedReviewer(answer)),
            gateway: ServiceAccountRef {
                namespace: "mesh-system".into(),
                name: "mesh-gateway".into(),
            },
        })
    }

    fn account(namespace: &str, name: &str) -> ServiceAccountRef {
        ServiceAccountRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[tokio::test]
    async fn a_service_account_token_gets_exactly_its_own_identity() {
        let svc = kubernetes_service(Ok(account("demo", "echo")));
        let echo = SpiffeId::workload("us-east.mesh", "demo", "echo");
        let (signed, _) = svc
            .sign(Some("Bearer sa-token"), &csr(&echo))
            .await
            .unwrap();
        assert_eq!(signed, echo);
        for other in [
            SpiffeId::workload("us-east.mesh", "demo", "admin"),
            SpiffeId::workload("us-east.mesh", "prod", "echo"),
            SpiffeId::gateway("us-east.mesh"),
        ] {
            let err = svc
                .sign(Some("Bearer sa-token"), &csr(&other))
                .await
                .unwrap_err();
            assert_eq!(err.reason, "policy", "{other}");
            assert!(
                err.error.to_string().contains("ServiceAccount demo/echo"),
                "{}",
                err.error
            );
        }
        let gateway = kubernetes_service(Ok(account("mesh-system", "mesh-gateway")));
        let gw = SpiffeId::gateway("us-east.mesh");
        assert_eq!(
            gateway.sign(Some("Bearer t"), &csr(&gw)).await.unwrap().0,
            gw
        );
        // The join token still works for workloads outside Kubernetes.
        assert!(svc.sign(Some("Bearer s3cret"), &csr(&gw)).await.is_ok());
    }

    #[tokio::test]
    async fn rejected_and_unreviewable_tokens_are_refused_with_the_reason() {
        let id = SpiffeId::workload("us-east.mesh", "demo", "echo");
        let rejected = kubernetes_service(Err(ReviewError::Rejected("token expired".into())));
        let err = rejected
            .sign(Some("Bearer t"), &csr(&id))
            .await
            .unwrap_err();
        assert_eq!(err.error.status(), http::StatusCode::UNAUTHORIZED);
        assert!(
            err.error.to_string().contains("token expired"),
            "{}",
            err.error
        );
        let down = kubernetes_service(Err(ReviewError::Unavailable("connection refused".into())));
        let err = down.sign(Some("Bearer t"), &csr(&id)).await.unwrap_err();
        assert_eq!(err.error.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn missing_state_files_name_the_path_and_the_fix() {
        let dir = std::env::temp_dir().join(format!("mesh-fed-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let err = CaService::load(&dir, "us-east", Duration::from_secs(60)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ca.crt") && msg.contains("mesh ca"), "{msg}");
        ClusterCa::generate("us-east.mesh")
            .unwrap()
            .write_to(&dir)
            .unwrap();
        let err = CaService::load(&dir, "us-east", Duration::from_secs(60)).unwrap_err();
        assert!(err.to_string().contains(JOIN_TOKEN_FILE), "{err}");
        std::fs::write(dir.join(JOIN_TOKEN_FILE), "tok\n").unwrap();
        let svc = CaService::load(&dir, "us-east", Duration::from_secs(60)).unwrap();
        assert!(
            svc.sign(Some("Bearer tok"), &csr(&SpiffeId::gateway("us-east.mesh")))
                .await
                .is_ok()
        );
        std::fs::write(dir.join("ca.key"), "garbage").unwrap();
        let err = CaService::load(&dir, "us-east", Duration::from_secs(60)).unwrap_err();
        assert!(err.to_string().contains("mesh ca"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_hint_names_the_command_that_creates_the_files() {
        let hint = ca_hint(Path::new("/srv/mesh/us-east"), "us-east");
        assert!(
            hint.contains("mesh ca --cluster us-east --state-dir /srv/mesh"),
            "{hint}"
        );
        let hint = ca_hint(Path::new("us-east"), "us-east");
        assert!(hint.contains("--state-dir ."), "{hint}");
        let hint = ca_hint(Path::new("/tmp/elsewhere"), "us-east");
        assert!(hint.contains("/tmp/elsewhere is not one"), "{hint}");
    }

    #[test]
    fn constant_time_eq_compares_whole_secrets() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
