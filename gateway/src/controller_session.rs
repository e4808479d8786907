//! The gateway's session with its cluster controller: bootstrap of the identity, the
//! `GatewaySnapshot` stream (resubscribed with backoff, the last snapshot kept meanwhile), the
//! `GatewayReport` every second and on every link change, and delivery of peers' catalogs.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use mesh_core::api::{GatewaySnapshot, PATH_FEDERATION, PATH_GATEWAY_REPORT, PATH_GATEWAY_STREAM};
use mesh_core::bootstrap::JoinCredentials;
use mesh_core::catalog::CatalogMessage;
use mesh_core::control_client::ControlError;

use mesh_core::control_client::ControlClient;
use mesh_core::identity::{SpiffeId, TrustBundle, WorkloadIdentity, default_trust_domain};
use tokio::sync::watch;

use crate::catalog_sink::{CatalogSink, Delivery, DeliveryError, DeliveryFuture};
use crate::error::GatewayError;
use crate::gateway_core::LinkBoard;
use mesh_core::backoff::Backoff;

/// How often the gateway reports to its controller (besides every link change): the
/// controller declares the gateway gone after a few missed reports.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between attempts to reach the controller.
const MAX_CONTROLLER_BACKOFF: Duration = Duration::from_secs(5);

/// Obtains the gateway certificate (the shared bootstrap and its give-up rule,
/// [`mesh_core::bootstrap`]).
pub(crate) async fn bootstrap(
    controller: &mesh_core::host_port::HostPort,
    cluster: &str,
    credentials: &JoinCredentials,
) -> Result<(Arc<ControlClient>, WorkloadIdentity, TrustBundle), GatewayError> {
    let id = SpiffeId::gateway(&default_trust_domain(cluster));
    Ok(mesh_core::bootstrap::bootstrap(controller, cluster, credentials, &id).await?)
}

/// Follows the controller's snapshot stream forever, publishing each snapshot into `tx`.
pub(crate) async fn follow_snapshots(
    client: Arc<ControlClient>,
    cluster: String,
    tx: watch::Sender<Option<GatewaySnapshot>>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), MAX_CONTROLLER_BACKOFF);
    let mut failures = 0u32;
    loop {
        match client.stream::<GatewaySnapshot>(PATH_GATEWAY_STREAM).await {
            Ok(mut stream) => loop {
                match stream.next().await {
                    Ok(Some(snapshot)) => {
                        if snapshot.cluster != cluster {
                            tracing::error!(snapshot_cluster = %snapshot.cluster, "controller sent a snapshot of another cluster; ignored");
                            continue;
                        }
                        if failures > 0 {
                            tracing::info!("snapshot stream from the controller restored");
                        }
                        failures = 0;
                        backoff.reset();
                        tx.send_replace(Some(snapshot));
                    }
                    Ok(None) => {
                        failures += 1;
                        tracing::warn!(
                            "controller closed the snapshot stream; resubscribing, last snapshot kept"
                        );
                        break;
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "snapshot stream broke; resubscribing, last snapshot kept");
                        break;
                    }
                }
            },
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(error = %e, failures, "cannot subscribe to the controller's snapshots; last snapshot kept");
                }
            }
        }
        tokio::time::sleep(backoff.next_random()).await;
    }
}

/// Sends the gateway report every [`REPORT_INTERVAL`] and at once on every link change.
pub(crate) async fn report_loop(client: Arc<ControlClient>, board: LinkBoard) {
    let mut changes = board.changes();
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut changes_open = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = changes.changed(), if changes_open => {
                // When the core is gone only the periodic report runs.
                changes_open = changed.is_ok();
            }
        }
        let report = board.report();
        match client
            .send_json(Method::PUT, PATH_GATEWAY_REPORT, Some(&report))
            .await
        {
            Ok(_) => {
                if failing {
                    tracing::info!("reporting to the controller again");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "gateway report not delivered; will keep trying");
                }
                failing = true;
            }
        }
    }
}

/// Delivers peers' catalog messages to the controller's federation endpoint.
pub(crate) struct FederationSink {
    /// The controller client.
    pub client: Arc<ControlClient>,
}

impl CatalogSink for FederationSink {
    fn deliver<'a>(&'a self, peer: &'a str, msg: &'a CatalogMessage) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let path = format!("{PATH_FEDERATION}{peer}");
            match self.client.send_json(Method::POST, &path, Some(msg)).await {
                Ok(_) => Ok(Delivery::Applied),
                Err(ControlError::Status { status, .. }) if status == StatusCode::CONFLICT => {
                    Ok(Delivery::NeedSnapshot)
                }
                Err(e) => Err(DeliveryError(e.to_string())),
            }
        })
    }
}
