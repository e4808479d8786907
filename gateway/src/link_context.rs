//! What every link task shares: the endpoint, the client configuration, the trust store, the
//! current exports, the catalog sink, the metrics and the change signal.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use mesh_core::catalog::ExportCatalog;
use mesh_core::identity::{RotatingIdentity, TrustStore};
use mesh_core::renewal::{RenewalStatus, describe_expiry};
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
    /// The certificate this gateway presents (renewed in place).
    pub identity: RotatingIdentity,
    /// Its renewal, once started: the last error names why an expired certificate was not
    /// renewed.
    pub renewal: OnceLock<RenewalStatus>,
}

impl LinkContext {
    /// Signals a link state change.
    pub(crate) fn notify_change(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Why no link can be up now: this gateway's own certificate has expired (its renewal
    /// failing), so peers refuse new handshakes and established links must close. The message
    /// names the identity, when it expired and the renewal's last error.
    pub(crate) fn expired_certificate(&self) -> Option<String> {
        let validity = self.identity.validity();
        let now = SystemTime::now();
        if !validity.expired(now) {
            return None;
        }
        let renewal = match self.renewal.get().and_then(RenewalStatus::last_error) {
            Some(e) => format!("renewal failing: {e}"),
            None => "no renewal has succeeded yet".to_string(),
        };
        Some(format!(
            "the certificate of {} {}; {renewal}",
            self.identity.id(),
            describe_expiry(validity, now)
        ))
    }

    /// The exports now in force.
    pub(crate) fn current_exports(&self) -> Arc<ExportCatalog> {
        self.exports.borrow().clone()
    }
}
