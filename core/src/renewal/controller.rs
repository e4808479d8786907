//! Renewal through the controller's CA path (sidecars, gateways): a CSR authenticated by the
//! certificate the component presents now. When that cannot work (the certificate expired while
//! the controller was away, so no new connection would be accepted; or it chains to a root the
//! controller no longer trusts), the component asks again the way it bootstrapped, with the
//! join token read afresh from its file (in Kubernetes mode a projected ServiceAccount token
//! that the kubelet keeps rotating).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use super::task::{IssueFuture, Issuer};
use crate::bootstrap::JoinCredentials;
use crate::control_client::ControlClient;
use crate::identity::{RotatingIdentity, WorkloadIdentity};

/// Where the join credentials are, for renewing the way bootstrap did.
#[derive(Debug, Clone)]
pub struct TokenFallback {
    /// The own cluster.
    pub cluster: String,
    /// The cluster's root certificate.
    pub ca_file: PathBuf,
    /// The join token (or ServiceAccount token).
    pub token_file: PathBuf,
}

/// Renews from the controller `client` talks to (any of its replicas).
pub struct ControllerIssuer {
    client: Arc<ControlClient>,
    fallback: Option<TokenFallback>,
}

impl ControllerIssuer {
    /// Renews through `client`, falling back to the join credentials of `fallback` when given.
    pub fn new(client: Arc<ControlClient>, fallback: Option<TokenFallback>) -> Self {
        Self { client, fallback }
    }

    async fn with_token(
        &self,
        fallback: &TokenFallback,
        current: &RotatingIdentity,
    ) -> Result<WorkloadIdentity, String> {
        let credentials = JoinCredentials::read(&fallback.ca_file, &fallback.token_file)
            .map_err(|e| e.to_string())?;
        let id = current.id();
        let mut errors = Vec::new();
        for addr in self.client.replicas() {
            match ControlClient::request_certificate(
                addr.clone(),
                &fallback.cluster,
                &credentials.ca_pem,
                &credentials.token,
                &id,
            )
            .await
            {
                Ok((identity, _)) => return Ok(identity),
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(errors.join("; "))
    }
}

impl Issuer for ControllerIssuer {
    fn issue<'a>(&'a self, current: &'a RotatingIdentity) -> IssueFuture<'a> {
        Box::pin(async move {
            let expired = current.validity().expired(SystemTime::now());
            let with_cert = if expired {
                Err("the current certificate has expired, so it cannot authenticate".to_string())
            } else {
                self.client
                    .renew(&current.id())
                    .await
                    .map_err(|e| e.to_string())
            };
            let cert_error = match with_cert {
                Ok(identity) => return Ok(identity),
                Err(e) => e,
            };
            let Some(fallback) = &self.fallback else {
                return Err(cert_error);
            };
            match self.with_token(fallback, current).await {
                Ok(identity) => {
                    tracing::info!(identity = %current.id(), reason = %cert_error, "certificate renewed with the join token");
                    Ok(identity)
                }
                Err(token_error) => Err(format!(
                    "{cert_error} (and with the join token: {token_error})"
                )),
            }
        })
    }
}
