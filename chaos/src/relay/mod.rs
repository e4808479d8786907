//! The userspace UDP impairment relay placed on the QUIC path between two gateways (this
//! machine's kernel has no `netem`). A gateway is linked with the relay's address instead of its
//! peer's; the relay forwards each datagram to the peer and each answer back, delaying,
//! dropping, holding back and duplicating them as the seeded schedule of that direction says.
//!
//! It only moves datagrams: it never reads QUIC, so the gateways' mTLS is untouched.

mod schedule;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

pub use schedule::{Decision, ImpairmentSchedule, release_times};

use crate::scenario::Impairment;

/// Largest datagram relayed (QUIC never sends more than the path MTU; this is the UDP limit).
const MAX_DATAGRAM: usize = 65_535;
/// Most client addresses one relay serves; a gateway dials from one socket, so a handful of
/// reconnects fit easily, and a flood cannot exhaust sockets.
const MAX_SESSIONS: usize = 64;

/// Errors starting a relay.
#[derive(Debug, thiserror::Error)]
#[error("impairment relay to {target}: cannot bind {bind}: {source}")]
pub struct RelayError {
    /// Where it tried to listen.
    pub bind: SocketAddr,
    /// Where it would forward.
    pub target: SocketAddr,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// Counters of one direction.
#[derive(Debug, Default)]
struct DirectionCounters {
    received: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
}

/// What one direction of a relay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DirectionStats {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams dropped.
    pub dropped: u64,
    /// Datagrams sent twice.
    pub duplicated: u64,
    /// Datagrams held back to be overtaken.
    pub reordered: u64,
}

impl DirectionCounters {
    fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            received: self.received.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
        }
    }

    fn count(&self, d: &Decision) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if d.dropped() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if d.sends.len() > 1 {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
        }
        if d.reordered {
            self.reordered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Both directions of a relay: towards the target and back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RelayStats {
    /// Client to target.
    pub forward: DirectionStats,
    /// Target to client.
    pub backward: DirectionStats,
}

/// One direction's schedule and the release time of its last in-order datagram.
struct Lane {
    schedule: ImpairmentSchedule,
    last_release: Option<tokio::time::Instant>,
}

impl Lane {
    fn new(impairment: Impairment, stream: u64) -> Self {
        Self {
            schedule: ImpairmentSchedule::new(impairment, stream),
            last_release: None,
        }
    }
}

struct Shared {
    forward: Mutex<Lane>,
    backward: Mutex<Lane>,
    fwd: DirectionCounters,
    bwd: DirectionCounters,
}

impl Shared {
    /// Decides a datagram's fate: the instants its copies leave (none = dropped), or `None`
    /// when the lane is clear and it goes at once.
    fn decide(&self, forward: bool) -> Option<Vec<tokio::time::Instant>> {
        let (lane, counters) = if forward {
            (&self.forward, &self.fwd)
        } else {
            (&self.backward, &self.bwd)
        };
        let mut lane = lane.lock().unwrap_or_else(|p| p.into_inner());
        let d = lane.schedule.decide();
        counters.count(&d);
        if lane.schedule.is_clear() {
            return None;
        }
        let now = tokio::time::Instant::now();
        let mut last = lane.last_release.map(|i| i.into_std());
        let times = release_times(&d, now.into_std(), &mut last);
        lane.last_release = last.map(tokio::time::Instant::from_std);
        Some(
            times
                .into_iter()
                .map(tokio::time::Instant::from_std)
                .collect(),
        )
    }
}

/// A running relay; dropping it stops it.
pub struct UdpRelay {
    local: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl UdpRelay {
    /// Listens on `bind` (port 0 for any) and forwards to `target`, unimpaired until
    /// [`impair`](Self::impair) is called.
    pub async fn start(bind: SocketAddr, target: SocketAddr) -> Result<Self, RelayError> {
        let err = |source| RelayError {
            bind,
            target,
            source,
        };
        let front = UdpSocket::bind(bind).await.map_err(err)?;
        let local = front.local_addr().map_err(err)?;
        let shared = Arc::new(Shared {
            forward: Mutex::new(Lane::new(Impairment::default(), 0)),
            backward: Mutex::new(Lane::new(Impairment::default(), 1)),
            fwd: DirectionCounters::default(),
            bwd: DirectionCounters::default(),
        });
        let task = tokio::spawn(front_loop(Arc::new(front), bind, target, shared.clone()));
        Ok(Self {
            local,
            target,
            shared,
            task,
        })
    }

    /// The address gateways are linked with instead of the target.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The gateway datagrams are forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Impairs both directions (each with its own random stream of the same seed).
    pub fn impair(&self, impairment: Impairment) {
        for (lane, stream) in [(&self.shared.forward, 0), (&self.shared.backward, 1)] {
            *lane.lock().unwrap_or_else(|p| p.into_inner()) = Lane::new(impairment, stream);
        }
    }

    /// Forwards untouched again.
    pub fn clear(&self) {
        self.impair(Impairment::default());
    }

    /// Counters so far.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            forward: self.shared.fwd.snapshot(),
            backward: self.shared.bwd.snapshot(),
        }
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `buf` to `dest`: at once when the lane is clear (keeps order, no timer), else each
/// copy at its release instant from a timer task.
async fn dispatch(
    sock: &Arc<UdpSocket>,
    dest: SocketAddr,
    buf: &[u8],
    plan: Option<Vec<tokio::time::Instant>>,
) {
    let Some(times) = plan else {
        let _ = sock.send_to(buf, dest).await;
        return;
    };
    for at in times {
        let (sock, data) = (sock.clone(), buf.to_vec());
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let _ = sock.send_to(&data, dest).await;
        });
    }
}

async fn front_loop(
    front: Arc<UdpSocket>,
    bind: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
) {
    let mut sessions: HashMap<SocketAddr, (Arc<UdpSocket>, JoinHandle<()>)> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match front.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors surface as receive errors on Linux; they concern one datagram.
                tracing::debug!(error = %e, "relay receive failed");
                continue;
            }
        };
        if !sessions.contains_key(&client) {
            if sessions.len() >= MAX_SESSIONS {
                tracing::warn!(%client, "relay has too many sessions; datagram dropped");
                continue;
            }
            let up_bind = SocketAddr::new(bind.ip(), 0);
            let upstream = match UdpSocket::bind(up_bind).await {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    tracing::warn!(error = %e, "relay cannot open an upstream socket");
                    continue;
                }
            };
            let task = tokio::spawn(backward_loop(
                upstream.clone(),
                front.clone(),
                client,
                target,
                shared.clone(),
            ));
            sessions.insert(client, (upstream, task));
        }
        if let Some((upstream, _)) = sessions.get(&client) {
            let decision = shared.decide(true);
            dispatch(upstream, target, &buf[..n], decision).await;
        }
    }
}

async fn backward_loop(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match upstream.recv_from(&mut buf).await {
            Ok((n, from)) if from == target => {
                let decision = shared.decide(false);
                dispatch(&front, client, &buf[..n], decision).await;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "relay upstream receive failed"),
        }
    }
}

#[cfg(test)]
mod tests;
