//! What every link task shares: the endpoint, the client configuration, the trust store, the
//! current exports, the catalog sink, the metrics and the change signal.

use std::sync::Arc;
use std::time::Duration;

use mesh_core::catalog::ExportCatalog;
use mesh_core::identity::TrustStore;
use quinn::Endpoint;
use tokio::sync::watch;

use crate::catalog_sink::CatalogSink;
use crate::metrics::Metrics;

/// Shared by the link set, every peer link, the acceptor and the stream handlers.
pub(crate) struct LinkContext {
    /// The own cluster.
    pub cluster: String,
    /// The QUIC endpoint (server and client).
    pub endpoint: Endpoint,
    /// Used to dial peers.
    pub client_config: quinn::ClientConfig,
    /// Own and linked trust bundles; the acceptor maps trust domains to clusters with it.
    pub trust: TrustStore,
    /// This cluster's export catalog, as the controller last sent it.
    pub exports: watch::Receiver<Arc<ExportCatalog>>,
    /// Where peers' catalog messages go.
    pub sink: Arc<dyn CatalogSink>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Bumped on every link up/down transition, so the report goes out at once.
    pub changes: watch::Sender<u64>,
    /// The links' QUIC idle timeout (the peer-silence limit is derived from it).
    pub idle_timeout: Duration,
}

impl LinkContext {
    /// Signals a link state change.
    pub(crate) fn notify_change(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The exports now in force.
    pub(crate) fn current_exports(&self) -> Arc<ExportCatalog> {
        self.exports.borrow().clone()
    }
}
