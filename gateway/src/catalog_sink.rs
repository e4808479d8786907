//! Where a peer's catalog messages go: every replica of the own controller
//! (`/v1/federation/{peer}`) in production, a channel in tests.

use std::future::Future;
use std::pin::Pin;

use mesh_core::catalog::CatalogMessage;
use tokio::sync::watch;

/// What the controller made of a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Applied (200) by every replica that could be reached.
    Applied,
    /// A replica cannot apply it and needs a snapshot (409): the gateway asks the peer for one
    /// with a resync request.
    NeedSnapshot,
}

/// A delivery that reached no replica of the controller or was refused; the gateway keeps the
/// message and retries.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DeliveryError(pub String);

/// The future a [`CatalogSink`] returns.
pub type DeliveryFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Delivery, DeliveryError>> + Send + 'a>>;

/// Receives the catalog messages that arrive from peers on control streams.
pub trait CatalogSink: Send + Sync + 'static {
    /// Hands `msg`, received from `peer`, to the controller.
    fn deliver<'a>(&'a self, peer: &'a str, msg: &'a CatalogMessage) -> DeliveryFuture<'a>;

    /// Changes whenever the controller needs every peer's current catalog (a replica appeared,
    /// came back or was reconnected): each control-stream receiver then asks its peer for a
    /// snapshot. `None` (the default) when that never happens.
    fn resyncs(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}
