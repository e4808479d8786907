//! The controller subscription: streams `SidecarSnapshot`s for the services asked for into the
//! `SidecarState`, and re-opens the stream whenever the interest set grows. If the controller is
//! unreachable the state keeps its last snapshot (static stability) while this retries with
//! jittered backoff.

use std::sync::Arc;
use std::time::Duration;

use mesh_core::api::{PATH_DISCOVERY, SidecarSnapshot};
use mesh_core::control_client::ControlClient;
use rand::Rng;

use crate::state::SidecarState;

/// First retry delay after the controller went away.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay: a returning controller is picked up within 2 s.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Exponential backoff with jitter (each delay drawn from the upper half of the current step),
/// so sidecars that lost the same controller do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { step: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The next delay; the step doubles up to the maximum.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let delay = self
            .step
            .mul_f64(rng.random_range(0.5..=1.0))
            .max(BACKOFF_MIN);
        self.step = (self.step * 2).min(BACKOFF_MAX);
        delay
    }

    /// Back to the first step (after a success).
    pub fn reset(&mut self) {
        self.step = BACKOFF_MIN;
    }
}

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
            let delay = backoff.next_delay(&mut rand::rng());
            // A new service asked for while waiting cannot speed up an absent controller, but
            // a request waiting on it gets its answer sooner if the controller is back.
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = interest.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn backoff_grows_with_jitter_to_the_cap_and_resets() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut backoff = Backoff::default();
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay(&mut rng)).collect();
        assert_eq!(delays[0], BACKOFF_MIN, "the first step is the floor");
        assert!(
            delays[1] >= Duration::from_millis(100) && delays[1] <= Duration::from_millis(200),
            "{delays:?}"
        );
        for d in &delays {
            assert!(*d <= BACKOFF_MAX, "{delays:?}");
        }
        assert!(
            delays[7] >= BACKOFF_MAX / 2,
            "capped step is 2 s, drawn from its upper half: {delays:?}"
        );
        backoff.reset();
        assert_eq!(backoff.next_delay(&mut rng), BACKOFF_MIN);
    }
}
