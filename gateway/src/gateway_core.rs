//! The gateway without its controller session: fed [`GatewaySnapshot`]s through a channel and
//! handing peers' catalog messages to a [`CatalogSink`]. `run` drives it from the controller;
//! tests drive it with hand-made snapshots.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::api::{GatewayReport, GatewaySnapshot, PeerLinkStatus};
use mesh_core::catalog::ExportCatalog;
use mesh_core::identity::{IdentitySource, TrustBundle, TrustBundles, TrustStore};
use mesh_core::serve::{DEFAULT_MAX_CONNECTIONS, RefusedConnections};
use mesh_core::telemetry::bind_tcp;
use prometheus_client::registry::Registry;
use quinn::Endpoint;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::args::check_timing;
use crate::catalog_sink::CatalogSink;
use crate::error::GatewayError;
use crate::link_acceptor::accept_loop;
use crate::link_context::LinkContext;
use crate::link_set::{LinkSet, LinkTable};
use crate::metrics::{Metrics, PeerLabels};
use crate::quic_endpoint::{self, codes};
use crate::tunnel_ingress::{self, TunnelIngress};

/// How often link gauges (up, RTT, loss) are refreshed.
const METRICS_REFRESH: Duration = Duration::from_secs(1);
/// How long shutdown waits for peers to acknowledge the close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What a gateway core needs besides its identity.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// The own cluster.
    pub cluster: String,
    /// UDP address of the QUIC endpoint.
    pub quic_addr: SocketAddr,
    /// TCP address of the tunnel port.
    pub tunnel_addr: SocketAddr,
    /// The QUIC address reported for peers to dial, when not the bound one.
    pub advertise_quic: Option<SocketAddr>,
    /// The tunnel address reported for sidecars to dial, when not the bound one.
    pub advertise_tunnel: Option<SocketAddr>,
    /// QUIC keep-alive interval.
    pub keep_alive: Duration,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
}

/// A read-only view of the links, for reports, the admin port and tests.
#[derive(Clone)]
pub struct LinkBoard {
    table: Arc<LinkTable>,
    quic_addr: SocketAddr,
    tunnel_addr: SocketAddr,
    advertised_quic: SocketAddr,
    advertised_tunnel: SocketAddr,
    changes: watch::Receiver<u64>,
}

impl LinkBoard {
    /// The bound QUIC address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// The bound tunnel address.
    pub fn tunnel_addr(&self) -> SocketAddr {
        self.tunnel_addr
    }

    /// Every peer's link state.
    pub fn statuses(&self) -> Vec<PeerLinkStatus> {
        self.table.statuses()
    }

    /// One peer's link state.
    pub fn status(&self, peer: &str) -> Option<PeerLinkStatus> {
        self.table.get(peer).map(|l| l.status())
    }

    /// The report for the controller: the advertised addresses, which are the bound ones
    /// unless `--advertise-quic` / `--advertise-tunnel` say otherwise.
    pub fn report(&self) -> GatewayReport {
        GatewayReport {
            quic_addr: self.advertised_quic,
            tunnel_addr: self.advertised_tunnel,
            peers: self.statuses(),
        }
    }

    /// Changes on every link up/down transition and every link added or removed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}

/// A running gateway: QUIC endpoint, links, tunnel port.
pub struct GatewayCore {
    board: LinkBoard,
    ctx: Arc<LinkContext>,
    endpoint: Endpoint,
    refused: RefusedConnections,
    tasks: Vec<JoinHandle<()>>,
}

impl GatewayCore {
    /// Binds the QUIC endpoint and the tunnel port and starts following `snapshots`. Until the
    /// first snapshot there are no peers; when the sender goes away the last snapshot stays in
    /// force. `identity` is fixed or a [`mesh_core::identity::RotatingIdentity`]: every new
    /// handshake (QUIC links both ways, the tunnel port) presents what it holds then.
    pub async fn start(
        settings: GatewaySettings,
        identity: impl IdentitySource,
        own_bundle: TrustBundle,
        snapshots: watch::Receiver<Option<GatewaySnapshot>>,
        sink: Arc<dyn CatalogSink>,
        registry: &mut Registry,
    ) -> Result<Self, GatewayError> {
        check_timing(settings.keep_alive, settings.idle_timeout)?;
        let identity = identity.rotating()?;
        let trust = TrustStore::new(std::slice::from_ref(&own_bundle))?;
        let transport =
            quic_endpoint::transport_config(settings.keep_alive, settings.idle_timeout)?;
        let server = quic_endpoint::server_config(&identity, trust.clone(), transport.clone())?;
        let client_config = quic_endpoint::client_config(&identity, trust.clone(), transport)?;
        let endpoint = quic_endpoint::bind_endpoint(settings.quic_addr, server)?;
        let quic_addr = endpoint
            .local_addr()
            .map_err(|e| GatewayError::Quic(format!("reading the bound address: {e}")))?;
        let tunnel_listener = bind_tcp("gateway", "tunnel", settings.tunnel_addr).await?;
        let tunnel_addr = tunnel_listener
            .local_addr()
            .map_err(|e| GatewayError::Quic(format!("reading the tunnel address: {e}")))?;

        let metrics = Arc::new(Metrics::new(registry));
        let (exports_tx, exports_rx) =
            watch::channel(Arc::new(ExportCatalog::new(&settings.cluster)));
        let (changes_tx, changes_rx) = watch::channel(0u64);
        let ctx = Arc::new(LinkContext {
            cluster: settings.cluster.clone(),
            endpoint: endpoint.clone(),
            client_config,
            trust: trust.clone(),
            exports: exports_rx,
            sink,
            metrics: metrics.clone(),
            changes: changes_tx,
            idle_timeout: settings.idle_timeout,
            identity: identity.clone(),
            renewal: std::sync::OnceLock::new(),
        });
        let table = Arc::new(LinkTable::default());
        let tls = mesh_core::identity::server_config(
            &identity,
            trust,
            &[mesh_core::api::ALPN_H2],
            false,
        )?;
        let refused = RefusedConnections::register(registry, "mesh_gateway");
        let ingress = Arc::new(TunnelIngress {
            trust_domain: identity.id().trust_domain.clone(),
            table: table.clone(),
            metrics: metrics.clone(),
            tls: TlsAcceptor::from(Arc::new(tls)),
            cap: refused.cap("tunnel", DEFAULT_MAX_CONNECTIONS),
        });
        let follower = SnapshotFollower {
            link_set: LinkSet::new(ctx.clone(), table.clone()),
            ctx: ctx.clone(),
            own_bundle,
            exports: exports_tx,
            applied: Vec::new(),
        };
        let tasks = vec![
            tokio::spawn(accept_loop(ctx.clone(), table.clone())),
            tokio::spawn(tunnel_ingress::serve(ingress, tunnel_listener)),
            tokio::spawn(follower.run(snapshots)),
            tokio::spawn(refresh_link_metrics(table.clone(), metrics)),
        ];
        tracing::info!(cluster = %settings.cluster, %quic_addr, %tunnel_addr, id = %identity.id(), "gateway listening");
        Ok(Self {
            board: LinkBoard {
                table,
                quic_addr,
                tunnel_addr,
                advertised_quic: settings.advertise_quic.unwrap_or(quic_addr),
                advertised_tunnel: settings.advertise_tunnel.unwrap_or(tunnel_addr),
                changes: changes_rx,
            },
            ctx,
            endpoint,
            refused,
            tasks,
        })
    }

    /// Reports the certificate renewal's state to the links: when the certificate expires,
    /// every link closes and stays down naming the renewal's last error, until a renewal
    /// succeeds and the links come back by themselves.
    pub fn follow_renewal(&self, status: mesh_core::renewal::RenewalStatus) {
        let _ = self.ctx.renewal.set(status);
    }

    /// The link view.
    pub fn board(&self) -> LinkBoard {
        self.board.clone()
    }

    /// The gateway's refused-connections counter (`mesh_gateway_connections_refused_total`),
    /// for caps on its other listeners (the admin port).
    pub fn refused_connections(&self) -> RefusedConnections {
        self.refused.clone()
    }

    /// The bound QUIC address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.board.quic_addr
    }

    /// The bound tunnel address.
    pub fn tunnel_addr(&self) -> SocketAddr {
        self.board.tunnel_addr
    }

    /// Stops accepting, closes every link (peers see a clean close, not a timeout) and waits
    /// briefly for the closes to be acknowledged.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.endpoint.close(codes::CLOSED, b"gateway shutting down");
        let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
    }
}

impl Drop for GatewayCore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Applies each snapshot: trust bundles first (a new peer must be trusted before it is dialed),
/// then exports, then links.
struct SnapshotFollower {
    ctx: Arc<LinkContext>,
    link_set: LinkSet,
    own_bundle: TrustBundle,
    exports: watch::Sender<Arc<ExportCatalog>>,
    applied: Vec<TrustBundle>,
}

impl SnapshotFollower {
    async fn run(mut self, mut snapshots: watch::Receiver<Option<GatewaySnapshot>>) {
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            if let Some(s) = snapshot {
                self.apply(&s);
            }
            if snapshots.changed().await.is_err() {
                break;
            }
        }
        // No more snapshots: keep serving the last one (the link set lives as long as we do).
        std::future::pending::<()>().await;
    }

    fn apply(&mut self, snap: &GatewaySnapshot) {
        if snap.cluster != self.ctx.cluster {
            tracing::error!(snapshot_cluster = %snap.cluster, cluster = %self.ctx.cluster, "ignoring a snapshot for another cluster");
            return;
        }
        if TrustBundles::parse(std::slice::from_ref(&snap.trust_bundle)).is_ok() {
            self.own_bundle = snap.trust_bundle.clone();
            // A root rotation's switch: renew now if the signing root is no longer ours.
            mesh_core::identity::rotation::renew_if_signing_root_changed(
                &self.ctx.identity,
                &self.own_bundle,
            );
        } else {
            tracing::error!(
                "the snapshot's own trust bundle is unusable; keeping the previous one"
            );
        }
        let mut bundles = vec![self.own_bundle.clone()];
        let mut peers = Vec::with_capacity(snap.peers.len());
        for p in &snap.peers {
            match TrustBundles::parse(std::slice::from_ref(&p.trust_bundle)) {
                Ok(_) => {
                    bundles.push(p.trust_bundle.clone());
                    peers.push(p.clone());
                }
                Err(e) => {
                    tracing::error!(peer = %p.cluster, error = %e, "peer left out: its trust bundle is unusable")
                }
            }
        }
        if bundles != self.applied {
            match self.ctx.trust.replace(&bundles) {
                Ok(()) => self.applied = bundles,
                Err(e) => tracing::error!(error = %e, "trust bundles not applied"),
            }
        }
        if snap.exports.cluster != self.ctx.cluster {
            tracing::warn!(exports_cluster = %snap.exports.cluster, "the export catalog names another cluster; peers will refuse it");
        }
        self.exports.send_if_modified(|current| {
            if **current == snap.exports {
                return false;
            }
            *current = Arc::new(snap.exports.clone());
            true
        });
        self.link_set.reconcile(&peers);
        tracing::debug!(
            version = snap.version,
            peers = peers.len(),
            "snapshot applied"
        );
    }
}

async fn refresh_link_metrics(table: Arc<LinkTable>, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(METRICS_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for s in table.statuses() {
            let labels = PeerLabels {
                peer: s.cluster.clone(),
            };
            metrics.link_up.get_or_create(&labels).set(i64::from(s.up));
            metrics
                .link_rtt_seconds
                .get_or_create(&labels)
                .set(s.rtt_seconds.unwrap_or(0.0));
            metrics.link_loss_ratio.get_or_create(&labels).set(s.loss);
        }
    }
}
