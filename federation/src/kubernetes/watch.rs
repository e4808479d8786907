//! The controller's view of its API server: one reflector per kind it reads, each a watch that
//! relists after an error and swaps its store only once the new list is complete, so a restarted
//! watch never shows an empty set; and the API server's health as those watches see it.
//!
//! When the API server is unreachable the stores keep their last content (static stability):
//! the controller goes on serving it and says so in `/readyz` detail and
//! `mesh_controller_kubernetes_api_up`.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

/// How the watches see the API server.
#[derive(Debug, Default)]
pub(crate) struct ApiHealth {
    inner: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    /// Kinds whose watch failed last, with the error and since when.
    failing: std::collections::BTreeMap<&'static str, (Instant, String)>,
}

impl ApiHealth {
    fn ok(&self, kind: &'static str) {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if state.failing.remove(kind).is_some() {
            tracing::info!(kind, "Kubernetes watch restored; resynced");
        }
    }

    fn failed(&self, kind: &'static str, error: String) {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !state.failing.contains_key(kind) {
            tracing::warn!(kind, %error, "Kubernetes watch failed; serving the last state and retrying");
        }
        let since = state
            .failing
            .get(kind)
            .map_or_else(Instant::now, |(t, _)| *t);
        state.failing.insert(kind, (since, error));
    }

    /// `None` when every watch works; otherwise what fails and for how long.
    pub(crate) fn problem(&self, now: Instant) -> Option<String> {
        let state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (kind, (since, error)) = state.failing.iter().min_by_key(|(_, (t, _))| *t)?;
        Some(format!(
            "Kubernetes API unreachable for {:?} (watch of {kind}: {error}); serving the last known state",
            Duration::from_secs(now.saturating_duration_since(*since).as_secs())
        ))
    }
}

/// How a failed watch is retried: the mesh's one reconnect backoff, capped at a few seconds
/// (kube's default grows to 30 s, which would delay the resync after an API server outage by as
/// much).
#[derive(Debug)]
struct WatchBackoff(mesh_core::backoff::Backoff);

impl Default for WatchBackoff {
    fn default() -> Self {
        Self(mesh_core::backoff::Backoff::new(
            Duration::from_millis(200),
            Duration::from_secs(3),
        ))
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.0.next_random())
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.0.reset();
    }
}

/// Starts a reflector of every `K` that `api` lists; `changed` is notified after every change.
/// Returns its store (ready once the first list is complete) and the task.
pub(crate) fn reflect<K>(
    kind: &'static str,
    api: Api<K>,
    config: watcher::Config,
    health: Arc<ApiHealth>,
    changed: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let task = tokio::spawn(async move {
        let stream = watcher(api, config)
            .backoff(WatchBackoff::default())
            .reflect(writer);
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(_)) => {
                        health.ok(kind);
                        changed.notify_one();
                    }
                    Some(Err(e)) => health.failed(kind, e.to_string()),
                    None => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    });
    (store, task)
}
