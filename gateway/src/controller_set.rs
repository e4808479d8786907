//! Every replica of the cluster's controller, as the gateway reaches them.
//!
//! The controller runs as several replicas (two in Kubernetes), and each must hold the full
//! state to serve sidecars: the peers' catalogs and the link reports reach a controller only
//! through the gateway. So `--controller host:port` names the *set* of replicas: every address
//! the host resolves to (an IP address is a set of one; in Kubernetes a headless Service
//! resolves to every ready controller pod), resolved again every few seconds
//! ([`crate::replica_table`]). Each replica gets its own [`ControlClient`], derived from the one
//! bootstrap ([`ControlClient::with_addr`]).
//!
//! - Gateway reports go to every replica, each on its own loop so that a hung replica does not
//!   delay the others' reports ([`crate::controller_session::report_loops`]).
//! - Peers' catalog messages go to every replica that is not known to be unreachable
//!   ([`crate::controller_session::FederationSink`]).
//! - The snapshot stream follows one replica and moves to the next when it breaks
//!   ([`crate::controller_session::follow_snapshots`]); the replicas compute the same
//!   snapshots from the same inputs.
//!
//! **A replica that missed something catches up by asking the peers.** A replica seen for the
//! first time, one that was unreachable, and one reached over a new connection (it may have
//! restarted) lacks peers' catalogs or holds old ones. When a call reaches such a replica, the
//! set bumps [`ControllerSet::resyncs`]: every control-stream receiver then sends its peer a
//! resync request, the peer answers with a snapshot of its current catalog, and that snapshot
//! is delivered to every replica like any message (a snapshot replaces what a replica holds,
//! so the others are unaffected). This reuses the one mechanism that already repairs a
//! replica that misses a delta (it answers 409, the receiver asks for a snapshot), rather than
//! keeping a second copy of every peer's catalog in the gateway to replay. A peer whose link
//! is down at that moment cannot be asked; it sends a snapshot first thing when its link comes
//! back, and until then the replicas that held its catalog keep it under its lease while the
//! one that came back has none.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use mesh_core::control_client::{ControlClient, ControlError};
use mesh_core::host_port::{HostPort, HostPorts};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::ControllerMetrics;
use crate::replica_table::{Outcome, ReplicaTable};

/// The future [`ResolveControllers::resolve`] returns.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Turns `--controller` into the addresses of the controller's replicas.
pub trait ResolveControllers: Send + Sync + 'static {
    /// Every address `target` stands for now, with its port.
    fn resolve<'a>(&'a self, target: &'a HostPort) -> ResolveFuture<'a>;
}

/// Resolves with the system's resolver ([`HostPort::resolve`]): DNS, `/etc/hosts`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl ResolveControllers for SystemResolver {
    fn resolve<'a>(&'a self, target: &'a HostPort) -> ResolveFuture<'a> {
        Box::pin(target.resolve())
    }
}

/// Every address the entries of `targets` stand for now (each resolved with `resolver`), sorted
/// and without duplicates; an error only when no entry resolves.
pub(crate) async fn resolve_all(
    resolver: &dyn ResolveControllers,
    targets: &HostPorts,
) -> io::Result<Vec<SocketAddr>> {
    let mut results = Vec::new();
    for target in targets.iter() {
        results.push(resolver.resolve(target).await);
    }
    HostPorts::union(results)
}

/// The controller's replicas and the client of each.
pub(crate) struct ControllerSet {
    target: HostPorts,
    resolver: Arc<dyn ResolveControllers>,
    /// The bootstrapped client, from which each replica's client is derived.
    template: Arc<ControlClient>,
    table: Mutex<ReplicaTable<Arc<ControlClient>>>,
    /// Bumped when a replica must catch up: receivers ask their peers for snapshots.
    resyncs: watch::Sender<u64>,
    /// Bumped when replicas join or leave.
    members: watch::Sender<u64>,
    metrics: ControllerMetrics,
}

impl ControllerSet {
    /// The set of `target`'s replicas, resolved with `resolver`; clients are derived from
    /// `template`. Empty until [`ControllerSet::refresh`].
    pub(crate) fn new(
        target: HostPorts,
        resolver: Arc<dyn ResolveControllers>,
        template: Arc<ControlClient>,
        metrics: ControllerMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            target,
            resolver,
            template,
            table: Mutex::new(ReplicaTable::new(Instant::now())),
            resyncs: watch::channel(0).0,
            members: watch::channel(0).0,
            metrics,
        })
    }

    fn table(&self) -> MutexGuard<'_, ReplicaTable<Arc<ControlClient>>> {
        // Nothing panics while holding the lock; a poisoned table is still consistent.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves `--controller` now and updates the set.
    pub(crate) async fn refresh(&self) {
        let result = resolve_all(&*self.resolver, &self.target)
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::warn!(controller = %self.target, error = %e, "cannot resolve the controller's replicas; keeping the ones known");
        }
        let change = {
            let mut table = self.table();
            let change = table.resolved(result, Instant::now(), |addr| {
                self.template.with_addr(addr.into())
            });
            self.metrics.set(table.counts());
            change
        };
        if !change.is_empty() {
            tracing::info!(controller = %self.target, added = ?change.added, removed = ?change.removed, "controller replicas changed");
            self.members.send_modify(|n| *n += 1);
        }
    }

    /// Resolves `--controller` again whenever due, forever.
    pub(crate) async fn follow_resolution(self: Arc<Self>) {
        loop {
            let due = self.table().next_resolve();
            tokio::time::sleep_until(due).await;
            self.refresh().await;
        }
    }

    /// Every replica with its client.
    pub(crate) fn replicas(&self) -> Vec<(SocketAddr, Arc<ControlClient>)> {
        self.table().all()
    }

    /// The replicas a catalog message goes to (see [`ReplicaTable::delivery_targets`]).
    pub(crate) fn delivery_targets(&self) -> Vec<(SocketAddr, Arc<ControlClient>)> {
        self.table().delivery_targets()
    }

    /// The replica to follow the snapshot stream of after `after`.
    pub(crate) fn stream_candidate(
        &self,
        after: Option<SocketAddr>,
    ) -> Option<(SocketAddr, Arc<ControlClient>)> {
        self.table().stream_candidate(after)
    }

    /// Records how a call to the replica at `addr` went: an answer of any kind reached it, a
    /// connect failure or timeout did not. Asks the peers for snapshots when it reached a
    /// replica that must catch up.
    pub(crate) fn record<T>(
        &self,
        addr: SocketAddr,
        client: &ControlClient,
        result: &Result<T, ControlError>,
    ) {
        let outcome = match result {
            Err(ControlError::Connect { .. }) => Outcome::Unreached,
            Ok(_) | Err(_) => Outcome::Reached {
                connections: client.connections(),
            },
        };
        let catch_up = {
            let mut table = self.table();
            let catch_up = table.record(addr, outcome);
            self.metrics.set(table.counts());
            catch_up
        };
        if catch_up {
            tracing::info!(replica = %addr, "controller replica reached for the first time or again; asking every linked peer for a fresh snapshot");
            self.resyncs.send_modify(|n| *n += 1);
        }
    }

    /// Changes when a replica must catch up on the peers' catalogs.
    pub(crate) fn resyncs(&self) -> watch::Receiver<u64> {
        self.resyncs.subscribe()
    }

    /// Changes when replicas join or leave the set.
    pub(crate) fn members(&self) -> watch::Receiver<u64> {
        self.members.subscribe()
    }
}
