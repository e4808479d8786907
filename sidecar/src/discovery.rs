//! The controller subscription: streams `SidecarSnapshot`s for the services asked for into the
//! `SidecarState`, and re-opens the stream whenever the interest set grows. If the controller is
//! unreachable the state keeps its last snapshot (static stability) while this retries with
//! jittered backoff.

use std::sync::Arc;

use mesh_core::api::{PATH_DISCOVERY, SidecarSnapshot};
use mesh_core::backoff::Backoff;
use mesh_core::control_client::ControlClient;

use crate::state::SidecarState;

/// Why a stream ended.
enum StreamEnd {
    /// The interest set changed: re-open at once with the new set.
    InterestChanged,
    /// The controller closed the stream or it broke: retry after a delay.
    Lost,
}

/// Runs the subscription until the future is dropped.
pub async fn run(state: Arc<SidecarState>, client: Arc<ControlClient>) {
    let mut interest = state.watch_interest();
    let mut backoff = Backoff::default();
    let metrics = state.metrics().clone();
    loop {
        let services: Vec<String> = interest
            .borrow_and_update()
            .iter()
            .map(ToString::to_string)
            .collect();
        let path = format!("{PATH_DISCOVERY}?services={}", services.join(","));
        let end = match client.stream::<SidecarSnapshot>(&path).await {
            Err(e) => {
                tracing::warn!(controller = %client.addr(), error = %e, "discovery stream not open; serving the last snapshot");
                StreamEnd::Lost
            }
            Ok(mut stream) => {
                metrics.discovery_connected.set(1);
                tracing::info!(controller = %client.addr(), services = %services.join(","), "discovery stream open");
                let end = loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Ok(Some(snapshot)) => {
                                backoff.reset();
                                // A root rotation: verify the controller with the new roots.
                                client.trust_roots(&snapshot.trust_bundles);
                                state.apply_snapshot(snapshot);
                            }
                            Ok(None) => {
                                tracing::warn!(controller = %client.addr(), "controller closed the discovery stream");
                                break StreamEnd::Lost;
                            }
                            Err(e) => {
                                tracing::warn!(controller = %client.addr(), error = %e, "discovery stream broke; serving the last snapshot");
                                break StreamEnd::Lost;
                            }
                        },
                        changed = interest.changed() => {
                            if changed.is_err() {
                                // The state is gone: nothing left to feed.
                                return;
                            }
                            break StreamEnd::InterestChanged;
                        }
                    }
                };
                metrics.discovery_connected.set(0);
                end
            }
        };
        if let StreamEnd::Lost = end {
            let delay = backoff.next_random();
            // A new service asked for while waiting cannot speed up an absent controller, but
            // a request waiting on it gets its answer sooner if the controller is back.
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = interest.changed() => {}
            }
        }
    }
}
