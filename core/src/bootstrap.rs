//! The first certificate of a sidecar, a gateway or a benchmark client: read the cluster's root
//! and join token from their files, then ask the controller to sign a CSR, with one rule for
//! when to give up (shared by every component so they all fail the same way).
//!
//! The rule: a controller that cannot be reached is retried with the shared [`Backoff`] for
//! [`BOOTSTRAP_PATIENCE`], because `mesh up` starts the controller first but it may still be
//! binding or restarting; any other failure (a refused token, a bad root, a malformed answer) is
//! final at once, since asking again cannot change the answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::control_client::{ControlClient, ControlError};
use crate::identity::{RotatingIdentity, SpiffeId, TrustBundle};

/// How long an unreachable controller is retried: as long as the launcher waits for a
/// component's ready file, so a component gives up no later than its supervisor would.
pub const BOOTSTRAP_PATIENCE: Duration = Duration::from_secs(30);

/// Why bootstrap failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The root certificate or the join token could not be read.
    #[error("reading the {what} {}: {source}", path.display())]
    ReadFile {
        /// What the file holds.
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The controller stayed unreachable for the whole patience.
    #[error("controller unreachable for {patience:?}, giving up: {last}")]
    Unreachable {
        /// How long it was retried.
        patience: Duration,
        /// The last failure.
        #[source]
        last: ControlError,
    },
    /// The controller answered and refused, or the material is unusable: final.
    #[error(transparent)]
    Refused(ControlError),
    /// No controller address was given to ask.
    #[error("no controller address to ask for a certificate")]
    NoController,
}

/// What a component needs to ask for its first certificate.
#[derive(Debug, Clone)]
pub struct JoinCredentials {
    /// The cluster's root certificate (PEM): the controller's serving certificate chains to it.
    pub ca_pem: String,
    /// The cluster's join token.
    pub token: String,
}

impl JoinCredentials {
    /// Reads the root certificate and the join token from their files.
    pub fn read(ca_file: &Path, token_file: &Path) -> Result<Self, BootstrapError> {
        let read = |what, path: &Path| {
            std::fs::read_to_string(path).map_err(|source| BootstrapError::ReadFile {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(Self {
            ca_pem: read("CA certificate", ca_file)?,
            token: read("join token", token_file)?,
        })
    }
}

/// Obtains a certificate for `id` from `cluster`'s controller at `controller`, retrying an
/// unreachable controller for [`BOOTSTRAP_PATIENCE`] (see the module doc for the rule).
pub async fn bootstrap(
    controller: &crate::host_port::HostPort,
    cluster: &str,
    credentials: &JoinCredentials,
    id: &SpiffeId,
) -> Result<(Arc<ControlClient>, RotatingIdentity, TrustBundle), BootstrapError> {
    bootstrap_any(std::slice::from_ref(controller), cluster, credentials, id).await
}

/// [`bootstrap`] from any one of several replicas of the controller (they share the cluster's
/// CA, so any one signs): each attempt asks them in order until one answers, and the patience
/// runs while none can be reached. The client returned talks to the replica that signed.
pub async fn bootstrap_any(
    replicas: &[crate::host_port::HostPort],
    cluster: &str,
    credentials: &JoinCredentials,
    id: &SpiffeId,
) -> Result<(Arc<ControlClient>, RotatingIdentity, TrustBundle), BootstrapError> {
    let deadline = Instant::now() + BOOTSTRAP_PATIENCE;
    let mut backoff = Backoff::default();
    let mut attempts = 0u32;
    let shown = replicas
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    loop {
        let mut last = None;
        for controller in replicas {
            let attempt = ControlClient::bootstrap(
                controller.clone(),
                cluster,
                &credentials.ca_pem,
                &credentials.token,
                id,
            )
            .await;
            match attempt {
                Ok(done) => {
                    tracing::info!(%id, %controller, "identity issued");
                    return Ok(done);
                }
                Err(e @ ControlError::Connect { .. }) => last = Some(e),
                Err(e) => return Err(BootstrapError::Refused(e)),
            }
        }
        let Some(e) = last else {
            return Err(BootstrapError::NoController);
        };
        let delay = backoff.next_random();
        if Instant::now() + delay >= deadline {
            return Err(BootstrapError::Unreachable {
                patience: BOOTSTRAP_PATIENCE,
                last: e,
            });
        }
        attempts += 1;
        if attempts == 1 || attempts.is_multiple_of(10) {
            tracing::info!(controller = %shown, error = %e, attempts, "controller not reachable yet, retrying bootstrap");
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_what_and_where() {
        let dir = std::env::temp_dir().join(format!("mesh-bootstrap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, "pem").unwrap();
        let err = JoinCredentials::read(&ca, &dir.join("join-token")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("join token") && msg.contains("join-token"),
            "{msg}"
        );
        std::fs::write(dir.join("join-token"), "secret\n").unwrap();
        let creds = JoinCredentials::read(&ca, &dir.join("join-token")).unwrap();
        assert_eq!(
            (creds.ca_pem.as_str(), creds.token.as_str()),
            ("pem", "secret\n")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn every_replica_unreachable_is_retried_for_the_patience_and_none_is_refused() {
        let free = |_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            crate::host_port::HostPort::from(l.local_addr().unwrap())
        };
        let replicas: Vec<_> = (0..2).map(free).collect();
        let ca = crate::identity::ClusterCa::generate("us-east.mesh").unwrap();
        let creds = JoinCredentials {
            ca_pem: ca.cert_pem().to_string(),
            token: "t".into(),
        };
        let id = SpiffeId::gateway(&crate::identity::default_trust_domain("us-east"));
        let err = bootstrap_any(&replicas, "us-east", &creds, &id)
            .await
            .unwrap_err();
        assert!(matches!(err, BootstrapError::Unreachable { .. }), "{err}");
        let err = bootstrap_any(&[], "us-east", &creds, &id)
            .await
            .unwrap_err();
        assert!(matches!(err, BootstrapError::NoController), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_controller_is_retried_for_the_patience_then_given_up() {
        // A bound but never accepting port would hang the TLS handshake until the connect
        // timeout; a port nobody listens on is refused at once.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let ca = crate::identity::ClusterCa::generate("us-east.mesh").unwrap();
        let creds = JoinCredentials {
            ca_pem: ca.cert_pem().to_string(),
            token: "t".into(),
        };
        let id = SpiffeId::gateway(&crate::identity::default_trust_domain("us-east"));
        let started = Instant::now();
        let err = bootstrap(&addr.into(), "us-east", &creds, &id)
            .await
            .unwrap_err();
        assert!(matches!(err, BootstrapError::Unreachable { .. }), "{err}");
        let waited = started.elapsed();
        assert!(
            waited <= BOOTSTRAP_PATIENCE && waited >= BOOTSTRAP_PATIENCE - Duration::from_secs(2),
            "gave up after {waited:?}"
        );
    }
}
