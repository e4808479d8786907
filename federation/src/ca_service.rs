//! The cluster CA as a service: loads the CA and join token from the state directory, issues the
//! controller's own serving certificate, and signs CSRs of sidecars and the gateway that present
//! the join token (bootstrap) or their current certificate (renewal: exactly the caller's own
//! identity). CSRs are rate limited per identity and per token ([`CallerRate`]), so a looping
//! client cannot make the CA sign without end.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_core::api::{CsrRequest, CsrResponse};
use mesh_core::identity::{
    CaError, ClusterCa, SpiffeId, TrustBundle, WorkloadIdentity, default_trust_domain,
};
use mesh_core::names::check_label;

use crate::ca_rotation::signer::SigningCa;
use crate::caller_rate::CallerRate;
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

/// CSRs per identity (renewals, ServiceAccount tokens): per second, then burst. Several
/// replicas of a workload share one identity; at the shortest lifetimes they renew every few
/// seconds each.
const CSR_PER_IDENTITY: (u32, u32) = (2, 20);
/// CSRs with the join token, shared by every component bootstrapping in the cluster.
const CSR_PER_JOIN_TOKEN: (u32, u32) = (50, 200);
/// Most identities with a bucket at once.
const CSR_MAX_IDENTITIES: usize = 10_000;

/// Token buckets of CSRs.
#[derive(Debug)]
struct CsrLimits {
    per_identity: CallerRate<String>,
    join_token: CallerRate<()>,
}

impl Default for CsrLimits {
    fn default() -> Self {
        Self {
            per_identity: CallerRate::new(
                CSR_PER_IDENTITY.0,
                CSR_PER_IDENTITY.1,
                CSR_MAX_IDENTITIES,
            ),
            join_token: CallerRate::new(CSR_PER_JOIN_TOKEN.0, CSR_PER_JOIN_TOKEN.1, 1),
        }
    }
}

fn rate_limited(whose: &str, (rate, burst): (u32, u32), retry_after: Duration) -> CsrRefusal {
    CsrRefusal {
        reason: "rate_limited",
        error: ApiError::TooManyRequests {
            message: format!(
                "certificate requests {whose} are over the limit of {rate} per second (burst \
                 {burst})"
            ),
            retry_after,
        },
    }
}

/// The CA, the join token and the signing policy.
pub(crate) struct CaService {
    ca: SigningCa,
    cluster: String,
    token: String,
    cert_ttl: Duration,
    kubernetes: Option<KubernetesAuth>,
    limits: Mutex<CsrLimits>,
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
            ca: SigningCa::new(ca, cluster),
            cluster: cluster.to_string(),
            token,
            cert_ttl,
            kubernetes: None,
            limits: Mutex::default(),
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
            ca_pem: self.ca.trusted_pem(),
        }
    }

    /// The signing CA (swapped by root rotation steps) and its ledger.
    pub(crate) fn signer(&self) -> &SigningCa {
        &self.ca
    }

    /// The trust domain.
    pub(crate) fn trust_domain(&self) -> &str {
        self.ca.trust_domain()
    }

    /// How long the certificates it issues live (`--cert-ttl`).
    pub(crate) fn cert_ttl(&self) -> Duration {
        self.cert_ttl
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

    /// Signs a CSR. With `authorization: Bearer <token>`: the join token lets the request name
    /// any workload or the gateway of this trust domain; a ServiceAccount token (Kubernetes
    /// mode) only the identity of its own ServiceAccount. Without a token, the client
    /// certificate `caller` authenticates a renewal of exactly the caller's own identity.
    pub(crate) async fn sign(
        &self,
        authorization: Option<&str>,
        caller: Option<&SpiffeId>,
        request: &CsrRequest,
    ) -> Result<(SpiffeId, CsrResponse), CsrRefusal> {
        self.sign_at(authorization, caller, request, Instant::now())
            .await
    }

    /// [`sign`](Self::sign) at `now` (for the rate limits).
    pub(crate) async fn sign_at(
        &self,
        authorization: Option<&str>,
        caller: Option<&SpiffeId>,
        request: &CsrRequest,
        now: Instant,
    ) -> Result<(SpiffeId, CsrResponse), CsrRefusal> {
        let refuse = |msg: String| CsrRefusal {
            reason: "token",
            error: ApiError::Unauthorized(msg),
        };
        let presented = match (bearer(authorization), caller) {
            (Some(token), _) => token,
            (None, Some(caller)) => return self.renew(caller, request, now),
            (None, None) => {
                return Err(refuse(match self.kubernetes {
                    Some(_) => "certificate requests need `authorization: Bearer <token>`: the \
                                pod's projected ServiceAccount token (audience `mesh`), or the \
                                cluster's join token; or, to renew, the current certificate as \
                                client certificate"
                        .into(),
                    None => "certificate requests need `authorization: Bearer <join token>` (the \
                             cluster's join-token file), or, to renew, the current certificate as \
                             client certificate"
                        .into(),
                }));
            }
        };
        if constant_time_eq(presented.as_bytes(), self.token.as_bytes()) {
            self.limits()
                .join_token
                .check((), now)
                .map_err(|wait| rate_limited("with the join token", CSR_PER_JOIN_TOKEN, wait))?;
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
        self.limit_identity(&allowed, now)?;
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

    /// A renewal authenticated by the client certificate of `caller`: only its own identity,
    /// in this trust domain, never the controller's.
    fn renew(
        &self,
        caller: &SpiffeId,
        request: &CsrRequest,
        now: Instant,
    ) -> Result<(SpiffeId, CsrResponse), CsrRefusal> {
        let forbid = |msg: String| CsrRefusal {
            reason: "policy",
            error: ApiError::Forbidden(format!("certificate request refused: {msg}")),
        };
        if caller.trust_domain != self.ca.trust_domain() {
            return Err(forbid(format!(
                "the client certificate is {caller}, of another trust domain; this controller \
                 renews certificates of {} only",
                self.ca.trust_domain()
            )));
        }
        if caller.path == "controller" {
            return Err(forbid(format!(
                "{caller} is the controller's own identity and is never issued"
            )));
        }
        self.limit_identity(caller, now)?;
        self.sign_as(request, |id| {
            if id == caller {
                Ok(())
            } else {
                Err(format!(
                    "the client certificate is {caller}'s; a renewal may only ask for that \
                     identity, not {id}"
                ))
            }
        })
    }

    fn limits(&self) -> std::sync::MutexGuard<'_, CsrLimits> {
        self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn limit_identity(&self, id: &SpiffeId, now: Instant) -> Result<(), CsrRefusal> {
        self.limits()
            .per_identity
            .check(id.to_string(), now)
            .map_err(|wait| rate_limited(&format!("of {id}"), CSR_PER_IDENTITY, wait))
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
mod tests;
