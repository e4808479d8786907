//! Catalog sync over QUIC control streams, both directions.
//!
//! Each side opens one control stream per connection and owns it as **sender**: it writes its
//! cluster's export catalog (a snapshot, then a delta on every change) and answers resync
//! requests read from the same stream with a snapshot. The stream the peer opened is handled as
//! **receiver**: every message goes to the own controller's replicas; a 409 there is answered
//! with a resync request, and so is a replica that must catch up (it appeared, came back or was
//! reconnected: see [`crate::controller_set`]). While no replica is reachable the receiver keeps
//! only the latest state (see [`crate::pending_catalog`]).

use std::sync::Arc;
use std::time::Duration;

use mesh_core::catalog::{CatalogMessage, ExportCatalog};
use mesh_core::wire::StreamHeader;
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::mpsc;

use crate::catalog_frame::{FrameError, read_frame, write_frame};
use crate::catalog_sink::Delivery;
use crate::link_context::LinkContext;
use crate::pending_catalog::fold;
use crate::quic_endpoint::codes;
use mesh_core::backoff::Backoff;

/// Control streams a peer may have open at once on one connection: the one in use, and the one
/// its sender reopens before this side has seen the old one end. Each may hold a catalog frame
/// being read (up to `catalog_frame::MAX_FRAME_LEN`), so more would let a peer make the gateway
/// buffer without bound.
pub(crate) const MAX_CONTROL_STREAMS: usize = 2;

/// Messages read ahead of delivery; more means the controller is slow, and the reader then
/// simply stops reading (QUIC flow control pushes back on the peer).
const RECEIVE_QUEUE: usize = 16;

/// Why a control stream ended.
#[derive(Debug, thiserror::Error)]
enum ControlStreamError {
    #[error("opening the control stream: {0}")]
    Open(#[from] quinn::ConnectionError),
    #[error("encoding the control header: {0}")]
    Header(#[from] mesh_core::wire::HeaderError),
    #[error("writing the control header: {0}")]
    Write(#[from] quinn::WriteError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("peer sent a {0} on our control stream; only resync requests flow this way")]
    Unexpected(&'static str),
}

/// Runs the sending side for one connection: opens the control stream and keeps it going,
/// reopening it (after a backoff) if it breaks while the connection lives.
pub(crate) async fn run_sender(ctx: Arc<LinkContext>, peer: String, conn: Connection) {
    let mut backoff = Backoff::default();
    loop {
        match send_catalog(&ctx, &peer, &conn).await {
            Ok(()) => tracing::debug!(%peer, "peer finished its side of our control stream"),
            Err(e) => {
                if conn.close_reason().is_some() {
                    return;
                }
                tracing::warn!(%peer, error = %e, "control stream to the peer failed; reopening");
            }
        }
        if conn.close_reason().is_some() {
            return;
        }
        tokio::time::sleep(backoff.next_random()).await;
    }
}

async fn send_catalog(
    ctx: &LinkContext,
    peer: &str,
    conn: &Connection,
) -> Result<(), ControlStreamError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&StreamHeader::control(&ctx.cluster).encode()?)
        .await?;
    let mut exports = ctx.exports.clone();
    let mut sent: Arc<ExportCatalog> = exports.borrow_and_update().clone();
    send_message(ctx, peer, &mut send, snapshot(&sent)).await?;

    let (resync_tx, mut resync_rx) = mpsc::channel::<()>(1);
    // The reader lives in its own future, so a frame is never half-read when a change wakes the
    // writer.
    let reader = async move {
        loop {
            match read_frame(&mut recv).await? {
                Some(CatalogMessage::ResyncRequest) => {
                    ctx.metrics
                        .catalog_message(peer, "received", "resync_request");
                    let _ = resync_tx.try_send(());
                }
                // A kind added by a later release: nothing this release must act on.
                Some(CatalogMessage::Unknown) => {
                    ctx.metrics.catalog_message(peer, "received", "unknown");
                    tracing::debug!(%peer, "ignored a catalog message of a later release");
                }
                Some(other) => return Err(ControlStreamError::Unexpected(other.kind_label())),
                None => {
                    // The peer will not ask for resyncs any more; keep sending deltas.
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    let writer = async {
        let mut exports_open = true;
        loop {
            tokio::select! {
                changed = exports.changed(), if exports_open => {
                    if changed.is_err() {
                        exports_open = false;
                        continue;
                    }
                    let current = exports.borrow_and_update().clone();
                    if *current != *sent {
                        let delta = CatalogMessage::Delta { delta: sent.diff(&current) };
                        send_message(ctx, peer, &mut send, delta).await?;
                        sent = current;
                    }
                }
                Some(()) = resync_rx.recv() => {
                    let current = exports.borrow_and_update().clone();
                    tracing::info!(%peer, version = current.version, "peer asked for a catalog resync");
                    send_message(ctx, peer, &mut send, snapshot(&current)).await?;
                    sent = current;
                }
                // The gateway is shutting down (no more exports) and the peer stopped asking.
                else => std::future::pending::<()>().await,
            }
        }
    };
    tokio::select! {
        r = reader => r,
        r = writer => r,
    }
}

fn snapshot(catalog: &ExportCatalog) -> CatalogMessage {
    CatalogMessage::Snapshot {
        catalog: catalog.clone(),
    }
}

async fn send_message(
    ctx: &LinkContext,
    peer: &str,
    send: &mut SendStream,
    msg: CatalogMessage,
) -> Result<(), ControlStreamError> {
    write_frame(send, &msg).await?;
    ctx.metrics.catalog_message(peer, "sent", msg.kind_label());
    tracing::debug!(%peer, kind = msg.kind_label(), "catalog message sent");
    Ok(())
}

/// Runs the receiving side of the control stream `peer` opened: reads its catalog messages and
/// hands them to the controller.
pub(crate) async fn run_receiver(
    ctx: Arc<LinkContext>,
    peer: String,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let (tx, rx) = mpsc::channel::<CatalogMessage>(RECEIVE_QUEUE);
    let (ctx_ref, peer_ref, recv_ref) = (&ctx, &peer, &mut recv);
    // Owns `tx`: when reading ends, the deliverer finishes what it holds and stops.
    let reader = async move {
        loop {
            match read_frame(recv_ref).await {
                Ok(Some(CatalogMessage::ResyncRequest)) => {
                    tracing::warn!(peer = %peer_ref, "peer sent a resync request on its own control stream; ignored");
                }
                // A kind added by a later release: counted, not delivered, since the controller
                // holds nothing for it (see `CatalogMessage::Unknown`).
                Ok(Some(CatalogMessage::Unknown)) => {
                    ctx_ref
                        .metrics
                        .catalog_message(peer_ref, "received", "unknown");
                    tracing::debug!(peer = %peer_ref, "ignored a catalog message of a later release");
                }
                Ok(Some(msg)) => {
                    ctx_ref
                        .metrics
                        .catalog_message(peer_ref, "received", msg.kind_label());
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(FrameError::Io(e)) => {
                    tracing::debug!(peer = %peer_ref, error = %e, "peer's control stream ended");
                    return;
                }
                Err(e) => {
                    tracing::warn!(peer = %peer_ref, error = %e, "closing the peer's control stream");
                    let _ = recv_ref.stop(codes::STREAM_REFUSED);
                    return;
                }
            }
        }
    };
    let deliverer = deliver_all(&ctx, &peer, rx, &mut send);
    tokio::join!(reader, deliverer);
    let _ = send.finish();
}

/// Delivers messages in order; on failure keeps the latest state and retries with backoff.
async fn deliver_all(
    ctx: &LinkContext,
    peer: &str,
    mut rx: mpsc::Receiver<CatalogMessage>,
    send: &mut SendStream,
) {
    let mut pending: Option<CatalogMessage> = None;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut open = true;
    let mut failures = 0u32;
    // A controller replica that must catch up: ask the peer for its whole catalog (the stream
    // starts with one, so only later changes count).
    let mut resyncs = ctx.sink.resyncs();
    loop {
        let msg = match pending.take() {
            Some(m) => m,
            None => {
                let catch_up = async {
                    match resyncs.as_mut() {
                        Some(r) => r.changed().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => m,
                        None => return,
                    },
                    changed = catch_up => {
                        if changed.is_err() {
                            resyncs = None;
                            continue;
                        }
                        tracing::info!(%peer, "a controller replica must catch up; asking the peer for a snapshot");
                        if request_resync(ctx, peer, send).await.is_err() {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        match ctx.sink.deliver(peer, &msg).await {
            Ok(Delivery::Applied) => {
                backoff.reset();
                failures = 0;
            }
            Ok(Delivery::NeedSnapshot) => {
                backoff.reset();
                failures = 0;
                tracing::info!(%peer, kind = msg.kind_label(), "controller needs a snapshot; asking the peer");
                if request_resync(ctx, peer, send).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                ctx.metrics
                    .catalog_delivery_failures
                    .get_or_create(&crate::metrics::PeerLabels {
                        peer: peer.to_string(),
                    })
                    .inc();
                failures += 1;
                if failures == 1 {
                    tracing::warn!(%peer, error = %e, "cannot hand the peer's catalog to the controller; retrying");
                } else {
                    tracing::debug!(%peer, error = %e, failures, "catalog delivery still failing");
                }
                let delay = backoff.next_random();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => pending = Some(msg),
                    newer = rx.recv(), if open => match newer {
                        None => {
                            open = false;
                            pending = Some(msg);
                        }
                        Some(newer) => match fold(msg, newer) {
                            Some(folded) => pending = Some(folded),
                            None => {
                                tracing::info!(%peer, "missed a catalog delta while the controller was away; asking for a snapshot");
                                if request_resync(ctx, peer, send).await.is_err() {
                                    return;
                                }
                            }
                        },
                    },
                }
            }
        }
        if !open && pending.is_none() {
            return;
        }
    }
}

async fn request_resync(
    ctx: &LinkContext,
    peer: &str,
    send: &mut SendStream,
) -> Result<(), FrameError> {
    write_frame(send, &CatalogMessage::ResyncRequest).await?;
    ctx.metrics.catalog_message(peer, "sent", "resync_request");
    Ok(())
}
