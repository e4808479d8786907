//! Fixtures for the gateway integration tests: clusters with their own CA, gateways started
//! in-process on port 0 and fed hand-made snapshots, a recording catalog sink, an echo endpoint
//! and a sidecar-like tunnel client.
#![allow(dead_code)]

pub(crate) mod fake_controller;
mod hand_peer;
mod net;
mod tunnel_client;

#[allow(unused_imports)] // each test binary uses a different subset
pub(crate) use hand_peer::{control_frame, dial_as_peer};
#[allow(unused_imports)]
pub(crate) use net::{EchoEndpoint, UdpRelay};
#[allow(unused_imports)]
pub(crate) use tunnel_client::{TunnelClient, round_trip};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use mesh_core::api::{GatewaySnapshot, PeerLinkConfig};
use mesh_core::catalog::{CatalogMessage, ExportCatalog, ExportedEndpoint, ExportedService};
use mesh_core::identity::{ClusterCa, SpiffeId, TrustBundle, WorkloadIdentity};
use mesh_gateway::{
    CatalogSink, Delivery, DeliveryError, DeliveryFuture, GatewayCore, GatewaySettings,
};
use mesh_test_support::TestCluster;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

/// How long any awaited condition may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(15);
/// Validity of the identities issued here: longer than any test.
const HOUR: Duration = Duration::from_secs(3600);

/// A cluster: its CA, trust bundle, gateway and one workload identity.
pub(crate) struct Cluster {
    pub name: String,
    pub ca: Arc<ClusterCa>,
    pub bundle: TrustBundle,
    pub gateway_id: WorkloadIdentity,
    pub workload_id: WorkloadIdentity,
}

impl Cluster {
    pub(crate) fn new(name: &str) -> Result<Self> {
        let TestCluster { name, ca, bundle } = TestCluster::new(name);
        let gateway_id = ca.issue(&SpiffeId::gateway(&bundle.trust_domain), HOUR)?;
        let workload_id = ca.issue(
            &SpiffeId::workload(&bundle.trust_domain, "demo", "client"),
            HOUR,
        )?;
        Ok(Self {
            name,
            ca,
            bundle,
            gateway_id,
            workload_id,
        })
    }

    /// The peer entry others put in their snapshot to link with this cluster's gateway.
    pub(crate) fn peer(&self, gateway_addr: SocketAddr) -> PeerLinkConfig {
        PeerLinkConfig {
            cluster: self.name.clone(),
            trust_bundle: self.bundle.clone(),
            gateway_addr,
        }
    }

    /// A snapshot of this cluster with `peers` and `exports`.
    pub(crate) fn snapshot(
        &self,
        version: u64,
        peers: Vec<PeerLinkConfig>,
        exports: ExportCatalog,
    ) -> GatewaySnapshot {
        GatewaySnapshot {
            version,
            cluster: self.name.clone(),
            trust_bundle: self.bundle.clone(),
            peers,
            exports,
        }
    }
}

/// An export catalog of `cluster` at `version` with `service` served by `endpoints`.
pub(crate) fn exports(
    cluster: &str,
    version: u64,
    services: &[(&str, &[SocketAddr])],
) -> ExportCatalog {
    let mut c = ExportCatalog::new(cluster);
    c.version = version;
    for (service, endpoints) in services {
        c.services.insert(
            service.parse().expect("test service names are valid"),
            ExportedService {
                healthy: true,
                endpoints: endpoints
                    .iter()
                    .map(|a| ExportedEndpoint {
                        address: *a,
                        identity: format!("spiffe://{cluster}.mesh/ns/demo/sa/echo"),
                        healthy: true,
                    })
                    .collect(),
                ports: Vec::new(),
                exported_since: None,
            },
        );
    }
    c
}

/// How the recording sink answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SinkMode {
    /// 200.
    Apply,
    /// 409 once, then apply.
    ConflictOnce,
    /// Controller unreachable.
    Fail,
}

/// A catalog sink that records what it applied.
pub(crate) struct RecordingSink {
    tx: mpsc::UnboundedSender<(String, CatalogMessage)>,
    mode: Mutex<SinkMode>,
    pub failed_attempts: Mutex<u32>,
    /// Bumped by a test to play a controller replica that must catch up.
    pub catch_up: watch::Sender<u64>,
}

impl RecordingSink {
    pub(crate) fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<(String, CatalogMessage)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sink = Arc::new(Self {
            tx,
            mode: Mutex::new(SinkMode::Apply),
            failed_attempts: Mutex::new(0),
            catch_up: watch::channel(0).0,
        });
        (sink, rx)
    }

    pub(crate) fn set_mode(&self, mode: SinkMode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub(crate) fn failed(&self) -> u32 {
        *self.failed_attempts.lock().unwrap()
    }
}

impl CatalogSink for RecordingSink {
    fn deliver<'a>(&'a self, peer: &'a str, msg: &'a CatalogMessage) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let mode = *self.mode.lock().unwrap();
            match mode {
                SinkMode::Fail => {
                    *self.failed_attempts.lock().unwrap() += 1;
                    Err(DeliveryError("controller unreachable (test)".into()))
                }
                SinkMode::ConflictOnce => {
                    self.set_mode(SinkMode::Apply);
                    let _ = self.tx.send((peer.to_string(), msg.clone()));
                    Ok(Delivery::NeedSnapshot)
                }
                SinkMode::Apply => {
                    let _ = self.tx.send((peer.to_string(), msg.clone()));
                    Ok(Delivery::Applied)
                }
            }
        })
    }

    fn resyncs(&self) -> Option<watch::Receiver<u64>> {
        Some(self.catch_up.subscribe())
    }
}

/// A gateway core running in this process.
pub(crate) struct TestGateway {
    pub core: GatewayCore,
    pub snapshots: watch::Sender<Option<GatewaySnapshot>>,
    pub sink: Arc<RecordingSink>,
    pub received: mpsc::UnboundedReceiver<(String, CatalogMessage)>,
    pub registry: Arc<Mutex<Registry>>,
}

impl TestGateway {
    /// Starts a gateway of `cluster` on 127.0.0.1 port 0 (or the given QUIC address).
    pub(crate) async fn start(cluster: &Cluster, quic_addr: Option<SocketAddr>) -> Result<Self> {
        Self::start_with(cluster, Self::settings(cluster, quic_addr)).await
    }

    /// The settings `start` uses, to be adjusted before `start_with`.
    pub(crate) fn settings(cluster: &Cluster, quic_addr: Option<SocketAddr>) -> GatewaySettings {
        GatewaySettings {
            cluster: cluster.name.clone(),
            quic_addr: quic_addr.unwrap_or_else(|| "127.0.0.1:0".parse().expect("literal")),
            tunnel_addr: "127.0.0.1:0".parse().expect("literal"),
            advertise_quic: None,
            advertise_tunnel: None,
            keep_alive: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3),
        }
    }

    /// Starts a gateway of `cluster` with `settings`.
    pub(crate) async fn start_with(cluster: &Cluster, settings: GatewaySettings) -> Result<Self> {
        let (snapshots, rx) = watch::channel(None);
        let (sink, received) = RecordingSink::new();
        let mut registry = Registry::default();
        let core = GatewayCore::start(
            settings,
            cluster.gateway_id.clone(),
            cluster.bundle.clone(),
            rx,
            sink.clone(),
            &mut registry,
        )
        .await?;
        Ok(Self {
            core,
            snapshots,
            sink,
            received,
            registry: Arc::new(Mutex::new(registry)),
        })
    }

    pub(crate) fn publish(&self, snapshot: GatewaySnapshot) {
        self.snapshots.send_replace(Some(snapshot));
    }

    /// The metrics in the text exposition format.
    pub(crate) fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock().unwrap())
            .expect("encoding metrics");
        out
    }

    /// The value of the sample whose line starts with `series` (name and labels), if present.
    pub(crate) fn metric(&self, series: &str) -> Option<f64> {
        self.metrics().lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
    }

    /// Waits for the next catalog message this gateway's controller received.
    pub(crate) async fn next_catalog(&mut self) -> Result<(String, CatalogMessage)> {
        tokio::time::timeout(DEADLINE, self.received.recv())
            .await
            .context("no catalog message arrived in time")?
            .context("sink closed")
    }

    pub(crate) fn link_up(&self, peer: &str) -> bool {
        self.core.board().status(peer).is_some_and(|s| s.up)
    }
}

/// Polls `cond` until it holds or [`DEADLINE`] passes.
pub(crate) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    mesh_test_support::wait_for(what, DEADLINE, async || cond()).await?;
    Ok(())
}

/// Links two started gateways with each other, exporting `a_exports` / `b_exports`.
pub(crate) fn link_pair(
    a: (&Cluster, &TestGateway, ExportCatalog),
    b: (&Cluster, &TestGateway, ExportCatalog),
) {
    let (ca, ga, ea) = a;
    let (cb, gb, eb) = b;
    ga.publish(ca.snapshot(1, vec![cb.peer(gb.core.quic_addr())], ea));
    gb.publish(cb.snapshot(1, vec![ca.peer(ga.core.quic_addr())], eb));
}

/// Runs `f` with a deadline.
pub(crate) async fn within<T>(what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(DEADLINE, f)
        .await
        .with_context(|| format!("{what} did not finish in time"))?
}
