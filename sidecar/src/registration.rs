//! Registration of the served workload with the controller: a TCP health check of the app every
//! 500 ms, a `WorkloadRegistration` PUT every second as heartbeat and at once when the app's
//! health changes, and a DELETE on clean shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use mesh_core::admin::Readiness;
use mesh_core::api::{PATH_WORKLOADS, WorkloadRegistration};
use mesh_core::control_client::ControlClient;
use tokio::sync::watch;

/// How often the app is checked: a dead app is out of rotation within about a second.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// Heartbeat period; the controller expires registrations that miss several.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Bound on the deregistration at shutdown: a stopping sidecar must not hang on a dead
/// controller (the registration then expires by itself).
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the app accepts a TCP connection within the interval.
pub async fn app_answers(app: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(HEALTH_INTERVAL, tokio::net::TcpStream::connect(app)).await,
        Ok(Ok(_))
    )
}

/// Checks the app every 500 ms, publishing its health into `health` and `readiness`.
pub async fn check_app(app: SocketAddr, health: watch::Sender<bool>, readiness: Readiness) {
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let healthy = app_answers(app).await;
        readiness.set(healthy);
        health.send_if_modified(|h| {
            let changed = *h != healthy;
            if changed {
                tracing::info!(%app, healthy, "app health changed");
            }
            *h = healthy;
            changed
        });
    }
}

/// Sends the registration every second and whenever the app's health changes.
pub async fn heartbeat(
    client: Arc<ControlClient>,
    mut registration: WorkloadRegistration,
    mut health: watch::Receiver<bool>,
) {
    let path = format!("{PATH_WORKLOADS}{}", registration.id);
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = health.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        registration.healthy = *health.borrow_and_update();
        match client
            .send_json(Method::PUT, &path, Some(&registration))
            .await
        {
            Ok(_) => {
                if failing {
                    tracing::info!(controller = %client.addr(), "registration renewed");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(controller = %client.addr(), error = %e, "registration heartbeat failed; retrying every second");
                }
                failing = true;
            }
        }
    }
}

/// Removes the registration (clean shutdown), within a short bound.
pub async fn deregister(client: &ControlClient, id: &str) {
    let path = format!("{PATH_WORKLOADS}{id}");
    let call = client.send_json::<()>(Method::DELETE, &path, None);
    match tokio::time::timeout(DEREGISTER_TIMEOUT, call).await {
        Ok(Ok(_)) => tracing::info!(id, "deregistered"),
        Ok(Err(e)) => {
            tracing::warn!(id, error = %e, "deregistration failed; the registration will expire")
        }
        Err(_) => tracing::warn!(id, "deregistration timed out; the registration will expire"),
    }
}
