//! The running controller's shared core: the state behind one lock, the `watch` channel its
//! view is published on, the CA and the metrics. API handlers mutate through
//! [`Controller::update`], which recomputes and publishes in the same critical section, so
//! versions are published in order.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

use crate::ca_service::CaService;
use crate::metrics::Metrics;
use crate::state::FederationState;
use crate::view::PublishedView;

/// The controller shared by its listeners and its ticker.
#[derive(Debug)]
pub(crate) struct Controller {
    state: Mutex<FederationState>,
    views: watch::Sender<Arc<PublishedView>>,
    ca: CaService,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
}

impl Controller {
    /// Wraps `state`, publishing its current view.
    pub(crate) fn new(
        mut state: FederationState,
        ca: CaService,
        metrics: Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let now = Instant::now();
        state.recompute(now);
        let (views, _) = watch::channel(state.view());
        let controller = Self {
            state: Mutex::new(state),
            views,
            ca,
            metrics,
            shutdown,
        };
        {
            let state = controller.lock();
            controller.refresh_metrics(&state, now);
        }
        Arc::new(controller)
    }

    fn lock(&self) -> MutexGuard<'_, FederationState> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than stopping the whole control plane would.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the state, then recomputes and publishes the view if it changed.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut FederationState, Instant) -> R) -> R {
        let now = Instant::now();
        let mut state = self.lock();
        let result = f(&mut state, now);
        if let Some(view) = state.recompute(now) {
            tracing::debug!(
                version = view.version,
                exports = view.exports.version,
                "view changed"
            );
            self.views.send_replace(view);
        }
        self.refresh_metrics(&state, now);
        result
    }

    /// Reads the state.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&FederationState, Instant) -> R) -> R {
        let now = Instant::now();
        f(&self.lock(), now)
    }

    /// Expires what ran out and republishes (the 500 ms tick).
    pub(crate) fn tick(&self) {
        let expired = self.update(|state, now| state.tick(now));
        for id in &expired.workloads {
            tracing::info!(workload = %id, "registration expired (no heartbeat)");
        }
        for peer in &expired.peers {
            tracing::warn!(%peer, "peer catalog withdrawn: its link stayed down for the whole lease");
        }
    }

    /// A receiver of the published view.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<PublishedView>> {
        self.views.subscribe()
    }

    /// A receiver that flips to `true` when the controller shuts down.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// The CA service.
    pub(crate) fn ca(&self) -> &CaService {
        &self.ca
    }

    /// The metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn refresh_metrics(&self, state: &FederationState, now: Instant) {
        let view = state.view();
        let m = &self.metrics;
        m.registered_workloads
            .set(i64::try_from(state.workloads(now)).unwrap_or(i64::MAX));
        m.services
            .set(i64::try_from(view.services.len()).unwrap_or(i64::MAX));
        m.exported_services
            .set(i64::try_from(view.exports.services.len()).unwrap_or(i64::MAX));
        m.view_version
            .set(i64::try_from(view.version).unwrap_or(i64::MAX));
        m.set_peers(&state.peer_gauges(now));
        let failover: Vec<(String, bool)> = view
            .services
            .iter()
            .map(|(k, d)| (k.to_string(), d.failover_active))
            .collect();
        m.set_failover(&failover);
    }
}
