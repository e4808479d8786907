//! Reports this sidecar's circuit breakers to the controller: the full state at once after any
//! transition, and again every 5 s so the controller's view expires only when the sidecar is
//! gone.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use mesh_core::api::PATH_BREAKER_REPORTS;
use mesh_core::control_client::ControlClient;

use crate::state::{SidecarState, now};

/// Re-send period of the full report.
const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Sends reports until the future is dropped.
pub async fn run(state: Arc<SidecarState>, client: Arc<ControlClient>, reporter: String) {
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.breaker_changed() => {}
        }
        let report = state.breaker_report(&reporter, now());
        if report.breakers.is_empty() {
            // No traffic yet: nothing to say, and no empty reports from idle sidecars.
            continue;
        }
        match client
            .send_json(Method::PUT, PATH_BREAKER_REPORTS, Some(&report))
            .await
        {
            Ok(_) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(controller = %client.addr(), error = %e, "breaker report failed; retrying");
                }
                failing = true;
            }
        }
    }
}
