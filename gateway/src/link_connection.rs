//! Driving one established connection to a peer: the own control stream, every stream the peer
//! opens, confirmation, and the end of the connection.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::Connection;
use tokio::sync::Semaphore;

use crate::ack_watch::{AckWatch, silence_limit};
use crate::control_stream;
use crate::link_context::LinkContext;
use crate::peer_link::{PeerLink, Role};
use crate::quic_endpoint::{codes, describe, handshake_failure_label};
use crate::stream_dispatch;

/// How long a new connection may stay unconfirmed (no control stream from the peer) before it
/// is dropped: the peer opens its control stream right after its handshake, so only a peer
/// that refused us, or a broken one, takes longer.
pub(crate) const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the peer's acknowledgements are checked: a tenth of a second adds at most that to
/// the detection of a broken path.
const ACK_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Why driving a connection stopped.
pub(crate) enum Ended {
    /// The connection closed, or was given up.
    Closed(String),
    /// A newer connection from the peer replaces this one.
    Replaced(Connection),
    /// The peer's configuration changed (address, trust bundle): reconnect.
    ConfigChanged,
}

/// Runs `conn` until it closes or `interrupt` resolves; returns why it ended and whether it had
/// been confirmed up.
pub(crate) async fn drive(
    ctx: &Arc<LinkContext>,
    link: &Arc<PeerLink>,
    conn: Connection,
    interrupt: impl Future<Output = Ended>,
) -> (Ended, bool) {
    let id = conn.stable_id();
    if let Some(msg) = ctx.expired_certificate() {
        // Refused before either side confirms it: the peer sees why, and no link flaps up.
        conn.close(codes::CERT_EXPIRED, msg.as_bytes());
        link.record_failure(&msg);
        return (Ended::Closed(msg), false);
    }
    link.set_connecting(conn.clone());
    tracing::debug!(peer = %link.cluster, remote = %conn.remote_address(), "connection established; waiting for the peer's control stream");
    let sender = tokio::spawn(control_stream::run_sender(
        ctx.clone(),
        link.cluster.clone(),
        conn.clone(),
    ));
    let confirm = tokio::time::sleep(CONFIRM_TIMEOUT);
    tokio::pin!(confirm, interrupt);
    // The guard below is only evaluated when the loop turns, but confirmation happens in the
    // stream handler's task: the timer can fire on a link confirmed meanwhile, so it re-checks.
    let mut confirm_armed = true;
    let mut ack_watch = AckWatch::default();
    let mut ack_check = tokio::time::interval(ACK_CHECK_INTERVAL);
    ack_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let control_slots = Arc::new(Semaphore::new(control_stream::MAX_CONTROL_STREAMS));
    let ended = loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let slots = control_slots.clone();
                    tokio::spawn(stream_dispatch::handle(ctx.clone(), link.clone(), id, slots, send, recv));
                }
                Err(e) => {
                    if link.role == Role::Dial && !link.is_confirmed(id) {
                        // It died before the peer confirmed it: the link was never made, most
                        // often because the peer refused our certificate after our handshake.
                        let reason = handshake_failure_label(&e);
                        ctx.metrics.handshake_failure(reason);
                        tracing::warn!(peer = %link.cluster, remote = %conn.remote_address(), reason, error = %describe(&e), "link not established");
                    }
                    break Ended::Closed(describe(&e));
                }
            },
            _ = &mut confirm, if confirm_armed => {
                confirm_armed = false;
                if link.is_confirmed(id) {
                    continue;
                }
                let msg = format!("the peer did not open its control stream within {CONFIRM_TIMEOUT:?}");
                conn.close(codes::UNCONFIRMED, msg.as_bytes());
                break Ended::Closed(msg);
            }
            _ = ack_check.tick() => {
                if let Some(msg) = ctx.expired_certificate() {
                    tracing::warn!(peer = %link.cluster, remote = %conn.remote_address(), "{msg}; closing the link");
                    conn.close(codes::CERT_EXPIRED, msg.as_bytes());
                    break Ended::Closed(msg);
                }
                let limit = silence_limit(ctx.idle_timeout, conn.rtt());
                let (sent, acks) = ack_counters(&conn);
                if let Some(silence) = ack_watch.check(sent, acks, limit, Instant::now()) {
                    let msg = format!(
                        "the peer acknowledged nothing sent to it for {} ms: packets to it are lost or it is frozen",
                        silence.as_millis()
                    );
                    tracing::warn!(peer = %link.cluster, remote = %conn.remote_address(), "{msg}; closing the link");
                    conn.close(codes::UNRESPONSIVE, msg.as_bytes());
                    break Ended::Closed(msg);
                }
            }
            ended = &mut interrupt => {
                match &ended {
                    Ended::Replaced(_) => conn.close(codes::REPLACED, b"replaced by a newer connection"),
                    Ended::ConfigChanged => conn.close(codes::CLOSED, b"link configuration changed"),
                    Ended::Closed(reason) => conn.close(codes::CLOSED, reason.as_bytes()),
                }
                break ended;
            }
        }
    };
    sender.abort();
    let reason = match &ended {
        Ended::Closed(reason) => reason.clone(),
        Ended::Replaced(_) => "replaced by a newer connection from the peer".into(),
        Ended::ConfigChanged => "the link configuration changed; reconnecting".into(),
    };
    let was_up = link.set_down(ctx, id, &reason);
    (ended, was_up)
}

/// Ack-eliciting frames sent (the kinds a link sends) and ACK frames received so far.
fn ack_counters(conn: &Connection) -> (u64, u64) {
    let stats = conn.stats();
    let tx = stats.frame_tx;
    let sent = tx.ping
        + tx.stream
        + tx.reset_stream
        + tx.stop_sending
        + tx.max_data
        + tx.max_stream_data
        + tx.max_streams_bidi
        + tx.crypto
        + tx.datagram;
    (sent, stats.frame_rx.acks)
}
