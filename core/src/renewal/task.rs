//! The renewal loop: sleep until the scheduled time, ask the issuer for a new certificate, swap
//! it in; on failure retry with backoff, keeping the old certificate until it expires.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::schedule::{JITTER_SHARE, RenewAt, draw_jitter, renewal_time, retry_backoff};

/// Longest spread of renewals asked for at once (see [`crate::identity::RotatingIdentity::request_renewal`]).
const REQUESTED_SPREAD: Duration = Duration::from_secs(2);
use super::status::RenewalStatus;
use crate::identity::{RotatingIdentity, WorkloadIdentity};

/// A certificate being issued, or why it could not be.
pub type IssueFuture<'a> =
    Pin<Box<dyn Future<Output = Result<WorkloadIdentity, String>> + Send + 'a>>;

/// Where renewed certificates come from: the controller's CA path for sidecars and gateways
/// ([`super::ControllerIssuer`]), the in-process CA for the controller itself.
pub trait Issuer: Send + Sync + 'static {
    /// A new certificate for the identity `current` holds.
    fn issue<'a>(&'a self, current: &'a RotatingIdentity) -> IssueFuture<'a>;
}

/// Renews one identity for the life of the component.
pub struct Renewer {
    identity: RotatingIdentity,
    issuer: Arc<dyn Issuer>,
    share: RenewAt,
    status: RenewalStatus,
}

impl Renewer {
    /// Renews `identity` from `issuer` at `share` of each certificate's lifetime, reporting to
    /// `status`.
    pub fn new(
        identity: RotatingIdentity,
        issuer: Arc<dyn Issuer>,
        share: RenewAt,
        status: RenewalStatus,
    ) -> Self {
        Self {
            identity,
            issuer,
            share,
            status,
        }
    }

    /// One attempt: issue and swap in. On failure the old certificate stays, the error is
    /// recorded and logged, and returned.
    pub async fn attempt(&self) -> Result<(), String> {
        let result = match self.issuer.issue(&self.identity).await {
            Ok(identity) => self
                .identity
                .replace(identity)
                .map_err(|e| format!("the new certificate is unusable: {e}")),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                let validity = self.identity.validity();
                let lifetime = validity
                    .not_after
                    .duration_since(validity.received)
                    .unwrap_or_default();
                tracing::info!(identity = %self.identity.id(), lifetime_secs = lifetime.as_secs(), "certificate renewed");
                self.status.succeeded();
                Ok(())
            }
            Err(e) => {
                let line = self.status.failed(&e, SystemTime::now());
                tracing::warn!(identity = %self.identity.id(), "{line}; retrying");
                Err(e)
            }
        }
    }

    /// Renews forever (the component aborts the task when it stops).
    pub async fn run(self) {
        let mut rng = StdRng::from_rng(&mut rand::rng());
        loop {
            let validity = self.identity.validity();
            let at = renewal_time(validity, self.share, draw_jitter(&mut rng));
            let wait = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tracing::debug!(identity = %self.identity.id(), in_secs = wait.as_secs(), "next certificate renewal scheduled");
            let lifetime = validity
                .not_after
                .duration_since(validity.received)
                .unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.identity.renewal_requested() => {
                    // A root rotation switched the signing root: renew now, spread over a
                    // moment so a whole cluster does not ask at once.
                    let spread = lifetime.mul_f64(JITTER_SHARE).min(REQUESTED_SPREAD);
                    let delay = spread.mul_f64(rand::Rng::random_range(&mut rng, 0.0..1.0));
                    tracing::info!(identity = %self.identity.id(), "renewing now: the cluster's signing root changed");
                    tokio::time::sleep(delay).await;
                }
            }
            let mut backoff = retry_backoff(lifetime);
            while self.attempt().await.is_err() {
                tokio::time::sleep(backoff.next_delay(&mut rng)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::admin::Readiness;
    use crate::identity::{ClusterCa, SpiffeId};

    /// Fails the first `failures` times, then issues `validity`-long certificates.
    struct Scripted {
        ca: ClusterCa,
        failures: Mutex<u32>,
        validity: Duration,
    }

    impl Issuer for Scripted {
        fn issue<'a>(&'a self, current: &'a RotatingIdentity) -> IssueFuture<'a> {
            Box::pin(async move {
                let mut left = self.failures.lock().unwrap();
                if *left > 0 {
                    *left -= 1;
                    return Err("controller at 127.0.0.1:9: connection refused".into());
                }
                self.ca
                    .issue(&current.id(), self.validity)
                    .map_err(|e| e.to_string())
            })
        }
    }

    #[tokio::test]
    async fn a_failed_attempt_keeps_the_old_certificate_and_a_later_one_swaps() {
        let ca = ClusterCa::generate("us-east.mesh").unwrap();
        let id = SpiffeId::workload("us-east.mesh", "demo", "echo");
        let first = ca.issue(&id, Duration::from_secs(60)).unwrap();
        let identity = RotatingIdentity::new(first.clone()).unwrap();
        let readiness = Readiness::default();
        readiness.set(true);
        let status =
            RenewalStatus::register(&mut Registry::default(), &identity, Some(readiness.clone()));
        let issuer = Arc::new(Scripted {
            ca,
            failures: Mutex::new(1),
            validity: Duration::from_secs(120),
        });
        let renewer = Renewer::new(identity.clone(), issuer, RenewAt::default(), status.clone());
        let err = renewer.attempt().await.unwrap_err();
        assert!(err.contains("connection refused"), "{err}");
        assert_eq!(
            identity.current().chain,
            first.chain,
            "the old certificate stays"
        );
        assert!(readiness.get());
        assert!(readiness.detail().unwrap().contains("renewal failing"));
        renewer.attempt().await.unwrap();
        assert_ne!(identity.current().chain, first.chain);
        assert_eq!(identity.generation(), 1);
        assert_eq!(
            (status.renewals("success"), status.renewals("failure")),
            (1, 1)
        );
        assert_eq!(readiness.detail(), None);
    }

    #[tokio::test]
    async fn the_loop_renews_short_certificates_again_and_again() {
        let ca = ClusterCa::generate("us-east.mesh").unwrap();
        let id = SpiffeId::gateway("us-east.mesh");
        let identity =
            RotatingIdentity::new(ca.issue(&id, Duration::from_secs(3)).unwrap()).unwrap();
        let status = RenewalStatus::register(&mut Registry::default(), &identity, None);
        let issuer = Arc::new(Scripted {
            ca,
            failures: Mutex::new(2),
            validity: Duration::from_secs(3),
        });
        let renewer = Renewer::new(
            identity.clone(),
            issuer,
            RenewAt::new(0.3).unwrap(),
            status.clone(),
        );
        let task = tokio::spawn(renewer.run());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while identity.generation() < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} renewals",
                identity.generation()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.abort();
        assert_eq!(status.renewals("failure"), 2, "the failures were retried");
        assert!(status.renewals("success") >= 3);
        assert!(!identity.validity().expired(SystemTime::now()));
    }
}
