//! The link to one peer cluster: its state (up or down, the connection, the last error) and the
//! task that keeps one QUIC connection to the peer alive.
//!
//! Exactly one side dials: the cluster whose name sorts lower. The dialer reconnects with
//! jittered exponential backoff; the acceptor waits for connections the accept loop hands over
//! (a newer one replaces the current one, since the peer only redials when it lost the old).
//! A connection counts as up once the peer's control stream arrived: that proves the peer
//! accepted our certificate too (a QUIC client finishes its handshake before the server has
//! verified the client certificate).

use std::sync::{Arc, Mutex, MutexGuard};

use mesh_core::api::{PeerLinkConfig, PeerLinkStatus};
use mesh_core::identity::TrustBundle;
use quinn::Connection;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::link_connection::{Ended, drive};
use crate::link_context::LinkContext;
use crate::link_dial::dial;
use crate::metrics::PeerLabels;
use crate::quic_endpoint::codes;
use mesh_core::backoff::Backoff;

/// Which side of the pair opens the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// We dial the peer.
    Dial,
    /// The peer dials us.
    Accept,
}

impl Role {
    /// The cluster whose name sorts lower dials: both sides agree without talking.
    pub(crate) fn for_pair(own: &str, peer: &str) -> Role {
        if own < peer { Role::Dial } else { Role::Accept }
    }
}

#[derive(Default)]
struct LinkState {
    conn: Option<Connection>,
    confirmed: bool,
    last_error: Option<String>,
}

/// One peer's link.
pub(crate) struct PeerLink {
    /// The peer cluster.
    pub cluster: String,
    /// Which side dials.
    pub role: Role,
    config: watch::Sender<PeerLinkConfig>,
    handover: mpsc::Sender<Connection>,
    state: Mutex<LinkState>,
}

impl PeerLink {
    /// Creates the link and starts its task.
    pub(crate) fn start(
        ctx: Arc<LinkContext>,
        config: PeerLinkConfig,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let role = Role::for_pair(&ctx.cluster, &config.cluster);
        let (config_tx, config_rx) = watch::channel(config.clone());
        // A few slots: a peer redials at most every ~100 ms, and the newest connection wins.
        let (handover_tx, handover_rx) = mpsc::channel(4);
        let link = Arc::new(Self {
            cluster: config.cluster,
            role,
            config: config_tx,
            handover: handover_tx,
            state: Mutex::new(LinkState::default()),
        });
        ctx.metrics
            .link_up
            .get_or_create(&PeerLabels {
                peer: link.cluster.clone(),
            })
            .set(0);
        let task = match role {
            Role::Dial => tokio::spawn(run_dialer(ctx, link.clone(), config_rx)),
            Role::Accept => tokio::spawn(run_acceptor(ctx, link.clone(), handover_rx, config_rx)),
        };
        (link, task)
    }

    fn state(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a new configuration from the controller (address or trust bundle changes).
    pub(crate) fn update_config(&self, config: PeerLinkConfig) {
        self.config.send_if_modified(|c| {
            if *c == config {
                return false;
            }
            *c = config;
            true
        });
    }

    /// Hands an accepted, identified connection from this peer to the link task.
    pub(crate) fn hand_over(&self, conn: Connection) {
        if let Err(e) = self.handover.try_send(conn) {
            let conn = match e {
                mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
            };
            conn.close(
                codes::REPLACED,
                b"too many connections from this peer at once",
            );
        }
    }

    /// The connection tunnels may use: established and confirmed.
    pub(crate) fn connection(&self) -> Option<Connection> {
        let st = self.state();
        if !st.confirmed {
            return None;
        }
        st.conn.clone().filter(|c| c.close_reason().is_none())
    }

    /// The link's state for the controller and `mesh status`.
    pub(crate) fn status(&self) -> PeerLinkStatus {
        let last_error = self.state().last_error.clone();
        let conn = self.connection();
        PeerLinkStatus {
            cluster: self.cluster.clone(),
            up: conn.is_some(),
            rtt_seconds: conn.as_ref().map(|c| c.rtt().as_secs_f64()),
            loss: conn.as_ref().map(loss_ratio).unwrap_or(0.0),
            last_error,
        }
    }

    pub(crate) fn set_connecting(&self, conn: Connection) {
        let mut st = self.state();
        st.conn = Some(conn);
        st.confirmed = false;
    }

    /// Marks the connection `conn_id` up (the peer's control stream arrived).
    pub(crate) fn confirm(&self, ctx: &LinkContext, conn_id: usize) {
        let remote = {
            let mut st = self.state();
            match &st.conn {
                Some(c) if c.stable_id() == conn_id && !st.confirmed => {
                    let remote = c.remote_address();
                    st.confirmed = true;
                    st.last_error = None;
                    remote
                }
                _ => return,
            }
        };
        ctx.metrics
            .link_up
            .get_or_create(&PeerLabels {
                peer: self.cluster.clone(),
            })
            .set(1);
        tracing::info!(peer = %self.cluster, %remote, role = ?self.role, "link up");
        ctx.notify_change();
    }

    /// Whether connection `conn_id` is the confirmed one.
    pub(crate) fn is_confirmed(&self, conn_id: usize) -> bool {
        let st = self.state();
        st.confirmed && st.conn.as_ref().is_some_and(|c| c.stable_id() == conn_id)
    }

    /// Records that connection `conn_id` ended; returns whether it had been up.
    pub(crate) fn set_down(&self, ctx: &LinkContext, conn_id: usize, reason: &str) -> bool {
        let was_up = {
            let mut st = self.state();
            if st.conn.as_ref().is_none_or(|c| c.stable_id() != conn_id) {
                return false;
            }
            let was_up = st.confirmed;
            st.conn = None;
            st.confirmed = false;
            st.last_error = Some(reason.to_string());
            was_up
        };
        if was_up {
            ctx.metrics
                .link_up
                .get_or_create(&PeerLabels {
                    peer: self.cluster.clone(),
                })
                .set(0);
            tracing::warn!(peer = %self.cluster, reason, "link down");
            ctx.notify_change();
        }
        was_up
    }

    /// Records a failed attempt; returns whether the error differs from the last one (worth a
    /// warning rather than a debug line).
    pub(crate) fn record_failure(&self, message: &str) -> bool {
        let mut st = self.state();
        let changed = st.last_error.as_deref() != Some(message);
        st.last_error = Some(message.to_string());
        changed
    }

    /// Closes the current connection (the peer was unlinked).
    pub(crate) fn close(&self, reason: &str) {
        let conn = {
            let mut st = self.state();
            st.confirmed = false;
            st.conn.take()
        };
        if let Some(c) = conn {
            c.close(codes::CLOSED, reason.as_bytes());
        }
    }
}

/// Lost over sent packets of a connection.
fn loss_ratio(conn: &Connection) -> f64 {
    let path = conn.stats().path;
    if path.sent_packets == 0 {
        return 0.0;
    }
    (path.lost_packets as f64 / path.sent_packets as f64).clamp(0.0, 1.0)
}

/// Resolves when the configuration changes in a way that needs a new connection: the peer's
/// trust bundle replaced (not a root rotation step, which keeps a root of the bundle before
/// it: the connection stays), or (for the dialer) the address to dial.
async fn relevant_change(
    config: &mut watch::Receiver<PeerLinkConfig>,
    current: &PeerLinkConfig,
    role: Role,
) {
    let mut trusted = current.trust_bundle.clone();
    loop {
        if config.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        let new = config.borrow_and_update();
        let addr_changed = role == Role::Dial && new.gateway_addr != current.gateway_addr;
        if addr_changed {
            return;
        }
        if new.trust_bundle != trusted {
            if !rotation_step(&trusted, &new.trust_bundle) {
                return;
            }
            trusted = new.trust_bundle.clone();
        }
    }
}

/// Whether `new` is a root rotation step from `old`: the same trust domain, sharing a root.
fn rotation_step(old: &TrustBundle, new: &TrustBundle) -> bool {
    use mesh_core::identity::rotation::bundle_fingerprints;
    let (Ok(a), Ok(b)) = (
        bundle_fingerprints(&old.ca_pem),
        bundle_fingerprints(&new.ca_pem),
    ) else {
        return false;
    };
    old.trust_domain == new.trust_domain && a.iter().any(|f| b.contains(f))
}

async fn run_dialer(
    ctx: Arc<LinkContext>,
    link: Arc<PeerLink>,
    mut config: watch::Receiver<PeerLinkConfig>,
) {
    let mut backoff = Backoff::default();
    loop {
        let cfg = config.borrow_and_update().clone();
        match dial(&ctx, &cfg).await {
            Ok(conn) => {
                let (ended, was_up) = drive(&ctx, &link, conn, async {
                    relevant_change(&mut config, &cfg, Role::Dial).await;
                    Ended::ConfigChanged
                })
                .await;
                if was_up {
                    backoff.reset();
                }
                if matches!(ended, Ended::ConfigChanged) {
                    continue;
                }
            }
            Err(failure) => {
                if failure.handshake {
                    ctx.metrics.handshake_failure(failure.label);
                }
                if link.record_failure(&failure.message) {
                    tracing::warn!(peer = %link.cluster, addr = %cfg.gateway_addr, reason = failure.label, error = %failure.message, "cannot link with the peer gateway; retrying");
                } else {
                    tracing::debug!(peer = %link.cluster, reason = failure.label, "dial failed again");
                }
            }
        }
        let delay = backoff.next_random();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = relevant_change(&mut config, &cfg, Role::Dial) => {}
        }
    }
}

async fn run_acceptor(
    ctx: Arc<LinkContext>,
    link: Arc<PeerLink>,
    mut handover: mpsc::Receiver<Connection>,
    mut config: watch::Receiver<PeerLinkConfig>,
) {
    let mut next: Option<Connection> = None;
    loop {
        let conn = match next.take() {
            Some(c) => c,
            None => match handover.recv().await {
                Some(c) => c,
                None => return,
            },
        };
        let cfg = config.borrow_and_update().clone();
        let (ended, _) = drive(&ctx, &link, conn, async {
            tokio::select! {
                newer = handover.recv() => match newer {
                    Some(c) => Ended::Replaced(c),
                    None => Ended::Closed("link removed".into()),
                },
                _ = relevant_change(&mut config, &cfg, Role::Accept) => Ended::ConfigChanged,
            }
        })
        .await;
        if let Ended::Replaced(c) = ended {
            next = Some(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::identity::ClusterCa;

    use super::*;

    fn bundle(roots: &[&ClusterCa]) -> TrustBundle {
        TrustBundle {
            trust_domain: "eu-central.mesh".into(),
            cluster: "eu-central".into(),
            ca_pem: roots.iter().map(|r| r.cert_pem()).collect(),
        }
    }

    #[test]
    fn a_root_rotation_step_keeps_the_link_a_replaced_root_does_not() {
        let old = ClusterCa::generate("eu-central.mesh").unwrap();
        let new = ClusterCa::generate("eu-central.mesh").unwrap();
        let (one, both, next) = (bundle(&[&old]), bundle(&[&old, &new]), bundle(&[&new]));
        assert!(rotation_step(&one, &both), "add");
        assert!(rotation_step(&both, &next), "retire");
        assert!(!rotation_step(&one, &next), "a root replaced outright");
        let mut other_domain = both.clone();
        other_domain.trust_domain = "ap-south.mesh".into();
        assert!(!rotation_step(&one, &other_domain));
        let mut garbage = both.clone();
        garbage.ca_pem = "garbage".into();
        assert!(!rotation_step(&one, &garbage));
    }
}
