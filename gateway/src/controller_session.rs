//! The gateway's session with its cluster controller's replicas ([`crate::controller_set`]):
//! bootstrap of the identity from any one replica, the `GatewaySnapshot` stream (followed from
//! one replica, moved to another with backoff when it breaks, the last snapshot kept
//! meanwhile), the `GatewayReport` to every replica every second and on every link change, and
//! delivery of peers' catalogs to every replica.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use mesh_core::api::{GatewaySnapshot, PATH_FEDERATION, PATH_GATEWAY_REPORT, PATH_GATEWAY_STREAM};
use mesh_core::bootstrap::JoinCredentials;
use mesh_core::catalog::CatalogMessage;
use mesh_core::control_client::{ControlClient, ControlError};
use mesh_core::host_port::{HostPort, HostPorts};
use mesh_core::identity::{RotatingIdentity, SpiffeId, TrustBundle, default_trust_domain};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

use crate::catalog_sink::{CatalogSink, Delivery, DeliveryError, DeliveryFuture};
use crate::controller_set::{ControllerSet, ResolveControllers, resolve_all};
use crate::error::GatewayError;
use crate::gateway_core::LinkBoard;
use mesh_core::backoff::Backoff;

/// How often the gateway reports to its controller (besides every link change): the
/// controller declares the gateway gone after a few missed reports.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between attempts to reach the controller.
const MAX_CONTROLLER_BACKOFF: Duration = Duration::from_secs(5);

/// Obtains the gateway certificate from any one replica of `controller` (the shared bootstrap
/// and its give-up rule, [`mesh_core::bootstrap`]): the addresses `resolver` finds, or the name
/// itself when it finds none (then the connect resolves it, and retries follow the rule).
pub(crate) async fn bootstrap(
    controller: &HostPorts,
    resolver: &dyn ResolveControllers,
    cluster: &str,
    credentials: &JoinCredentials,
) -> Result<(Arc<ControlClient>, RotatingIdentity, TrustBundle), GatewayError> {
    let id = SpiffeId::gateway(&default_trust_domain(cluster));
    let replicas: Vec<HostPort> = match resolve_all(resolver, controller).await {
        Ok(addrs) if !addrs.is_empty() => addrs.into_iter().map(HostPort::from).collect(),
        Ok(_) | Err(_) => controller.as_slice().to_vec(),
    };
    Ok(mesh_core::bootstrap::bootstrap_any(&replicas, cluster, credentials, &id).await?)
}

/// Follows one replica's snapshot stream forever, publishing each snapshot into `tx`; when the
/// stream breaks, moves to the next replica.
pub(crate) async fn follow_snapshots(
    set: Arc<ControllerSet>,
    cluster: String,
    tx: watch::Sender<Option<GatewaySnapshot>>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), MAX_CONTROLLER_BACKOFF);
    let mut failures = 0u32;
    let mut followed: Option<SocketAddr> = None;
    loop {
        let Some((addr, client)) = set.stream_candidate(followed) else {
            failures += 1;
            if failures == 1 || failures.is_multiple_of(10) {
                tracing::warn!(
                    failures,
                    "no controller replica known yet; last snapshot kept"
                );
            }
            tokio::time::sleep(backoff.next_random()).await;
            continue;
        };
        followed = Some(addr);
        let opened = client.stream::<GatewaySnapshot>(PATH_GATEWAY_STREAM).await;
        set.record(addr, &client, &opened);
        match opened {
            Ok(mut stream) => loop {
                match stream.next().await {
                    Ok(Some(snapshot)) => {
                        if snapshot.cluster != cluster {
                            tracing::error!(replica = %addr, snapshot_cluster = %snapshot.cluster, "controller sent a snapshot of another cluster; ignored");
                            continue;
                        }
                        if failures > 0 {
                            tracing::info!(replica = %addr, "snapshot stream from the controller restored");
                        }
                        failures = 0;
                        backoff.reset();
                        // A root rotation: verify the controller with the new roots.
                        client.trust_roots(std::slice::from_ref(&snapshot.trust_bundle));
                        tx.send_replace(Some(snapshot));
                    }
                    Ok(None) => {
                        failures += 1;
                        tracing::warn!(replica = %addr, "controller closed the snapshot stream; following another replica, last snapshot kept");
                        break;
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(replica = %addr, error = %e, "snapshot stream broke; following another replica, last snapshot kept");
                        break;
                    }
                }
            },
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(replica = %addr, error = %e, failures, "cannot subscribe to the controller's snapshots; last snapshot kept");
                }
            }
        }
        tokio::time::sleep(backoff.next_random()).await;
    }
}

/// Keeps one report loop ([`report_to`]) running per replica of the set: started when a
/// replica joins, stopped when it leaves. Dropping this future stops them all.
pub(crate) async fn report_loops(set: Arc<ControllerSet>, board: LinkBoard) {
    let mut members = set.members();
    let mut loops = JoinSet::new();
    let mut running: std::collections::BTreeMap<SocketAddr, AbortHandle> = Default::default();
    loop {
        let replicas = set.replicas();
        running.retain(|addr, handle| {
            let keep = replicas.iter().any(|(a, _)| a == addr);
            if !keep {
                handle.abort();
            }
            keep
        });
        for (addr, client) in replicas {
            running.entry(addr).or_insert_with(|| {
                loops.spawn(report_to(set.clone(), addr, client, board.clone()))
            });
        }
        // Reap finished (aborted) loops so the set does not grow.
        while loops.try_join_next().is_some() {}
        if members.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Sends the gateway report to the replica at `addr` every [`REPORT_INTERVAL`] and at once on
/// every link change.
async fn report_to(
    set: Arc<ControllerSet>,
    addr: SocketAddr,
    client: Arc<ControlClient>,
    board: LinkBoard,
) {
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
        let sent = client
            .send_json(Method::PUT, PATH_GATEWAY_REPORT, Some(&report))
            .await;
        set.record(addr, &client, &sent);
        match sent {
            Ok(_) => {
                if failing {
                    tracing::info!(replica = %addr, "reporting to the controller replica again");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(replica = %addr, error = %e, "gateway report not delivered to a controller replica; will keep trying");
                }
                failing = true;
            }
        }
    }
}

/// What one replica made of a delivered catalog message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplicaAnswer {
    /// Applied.
    Applied,
    /// 409: it cannot apply it and needs a snapshot.
    Conflict,
    /// Reached, but refused otherwise (e.g. 403 while it does not know the link yet).
    Refused(String),
    /// Not reached.
    Unreached(String),
}

/// The result of delivering one message to the replicas that were tried:
/// - [`Delivery::NeedSnapshot`] when any answered 409 (a snapshot is idempotent for the
///   others);
/// - else an error when any refused it (as with one controller, it is retried; the replicas
///   that applied it answer a repeated delta with 409, which turns into a snapshot);
/// - else [`Delivery::Applied`] when any applied it, so every reachable one did (those not
///   reached catch up when they are back, see [`crate::controller_set`]);
/// - else an error: no replica could be reached (or none is known).
pub(crate) fn merge_answers(
    answers: &[(SocketAddr, ReplicaAnswer)],
) -> Result<Delivery, DeliveryError> {
    if answers.iter().any(|(_, a)| *a == ReplicaAnswer::Conflict) {
        return Ok(Delivery::NeedSnapshot);
    }
    if let Some((addr, ReplicaAnswer::Refused(why))) = answers
        .iter()
        .find(|(_, a)| matches!(a, ReplicaAnswer::Refused(_)))
    {
        return Err(DeliveryError(format!("controller replica {addr}: {why}")));
    }
    if answers.iter().any(|(_, a)| *a == ReplicaAnswer::Applied) {
        return Ok(Delivery::Applied);
    }
    let reasons: Vec<String> = answers
        .iter()
        .map(|(addr, a)| match a {
            ReplicaAnswer::Unreached(why) => why.clone(),
            other => format!("{addr}: {other:?}"),
        })
        .collect();
    if reasons.is_empty() {
        return Err(DeliveryError("no controller replica known".into()));
    }
    Err(DeliveryError(format!(
        "no controller replica reached: {}",
        reasons.join("; ")
    )))
}

/// Delivers peers' catalog messages to the federation endpoint of every replica.
pub(crate) struct FederationSink {
    /// The controller's replicas.
    pub set: Arc<ControllerSet>,
}

impl CatalogSink for FederationSink {
    fn deliver<'a>(&'a self, peer: &'a str, msg: &'a CatalogMessage) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let path = format!("{PATH_FEDERATION}{peer}");
            let sends = self
                .set
                .delivery_targets()
                .into_iter()
                .map(|(addr, client)| {
                    let path = &path;
                    async move {
                        let sent = client.send_json(Method::POST, path, Some(msg)).await;
                        self.set.record(addr, &client, &sent);
                        let answer = match sent {
                            Ok(_) => ReplicaAnswer::Applied,
                            Err(ControlError::Status { status, .. })
                                if status == StatusCode::CONFLICT =>
                            {
                                ReplicaAnswer::Conflict
                            }
                            Err(e @ ControlError::Connect { .. }) => {
                                ReplicaAnswer::Unreached(e.to_string())
                            }
                            Err(e) => ReplicaAnswer::Refused(e.to_string()),
                        };
                        (addr, answer)
                    }
                });
            let answers = futures::future::join_all(sends).await;
            for (addr, answer) in &answers {
                if answers.len() > 1 && !matches!(answer, ReplicaAnswer::Applied) {
                    tracing::debug!(%peer, replica = %addr, ?answer, kind = msg.kind_label(), "a controller replica did not apply a catalog message");
                }
            }
            merge_answers(&answers)
        })
    }

    fn resyncs(&self) -> Option<watch::Receiver<u64>> {
        Some(self.set.resyncs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 15012))
    }

    fn merge(answers: &[ReplicaAnswer]) -> Result<Delivery, String> {
        let answers: Vec<_> = answers
            .iter()
            .enumerate()
            .map(|(i, a)| (at(u8::try_from(i).unwrap() + 1), a.clone()))
            .collect();
        merge_answers(&answers).map_err(|e| e.0)
    }

    #[test]
    fn applied_only_when_every_reached_replica_applied_it() {
        use ReplicaAnswer::*;
        assert_eq!(merge(&[Applied, Applied]), Ok(Delivery::Applied));
        assert_eq!(
            merge(&[Applied, Unreached("refused".into())]),
            Ok(Delivery::Applied),
            "the unreached one catches up when it is back"
        );
        assert_eq!(merge(&[Applied]), Ok(Delivery::Applied));
    }

    #[test]
    fn any_conflict_asks_for_a_snapshot() {
        use ReplicaAnswer::*;
        assert_eq!(merge(&[Applied, Conflict]), Ok(Delivery::NeedSnapshot));
        assert_eq!(
            merge(&[Conflict, Unreached("down".into())]),
            Ok(Delivery::NeedSnapshot)
        );
        assert_eq!(
            merge(&[Refused("403".into()), Conflict]),
            Ok(Delivery::NeedSnapshot)
        );
    }

    #[test]
    fn an_error_when_a_replica_refused_or_none_was_reached() {
        use ReplicaAnswer::*;
        let err = merge(&[Applied, Refused("403 not linked".into())]).unwrap_err();
        assert!(
            err.contains("10.0.0.2") && err.contains("not linked"),
            "{err}"
        );
        let err = merge(&[Unreached("a down".into()), Unreached("b down".into())]).unwrap_err();
        assert!(
            err.contains("no controller replica reached") && err.contains("a down; b down"),
            "{err}"
        );
        let err = merge(&[]).unwrap_err();
        assert!(err.contains("no controller replica known"), "{err}");
    }
}
