//! The QUIC link between gateways against a TCP+TLS tunnel, in the same run: throughput of one
//! and of 16 concurrent streams with the same payload, and tunnel set-up latency (a new stream
//! on a warm connection to the gateway, and a cold connection).
//!
//! Both tunnels have the same shape: client -> TLS -> ingress -> (QUIC, or TLS over TCP) ->
//! egress -> TCP -> sink. The mesh tunnel is the product's own: an HTTP/2 `CONNECT` over mTLS to
//! gateway A, one QUIC stream to gateway B, which splices to the sink it exports. The baseline
//! is a pair of TLS relays with one TLS connection per tunnel on each leg.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::api::{ALPN_H2, HEADER_TARGET_CLUSTER, HEADER_TARGET_SERVICE};
use mesh_core::bootstrap::JoinCredentials;
use mesh_core::control_client::ControlClient;
use mesh_core::identity::{SpiffeId, TrustStore, client_config, default_trust_domain};
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use crate::error::BenchError;
use crate::latency::{LatencySummary, new_histogram, record};
use crate::servers::relay::RelayTls;
use crate::servers::sink::send_transfer;

/// One throughput measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamsRun {
    /// Concurrent streams (tunnels).
    pub streams: usize,
    /// Bytes carried in total.
    pub bytes: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// MiB per second.
    pub mib_per_s: f64,
}

/// The link measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkReport {
    /// Payload of each throughput run, bytes (split evenly over the streams).
    pub payload_bytes: u64,
    /// Through the gateway pair (QUIC).
    pub quic: Vec<StreamsRun>,
    /// Through the TCP+TLS relay pair.
    pub tcp_tls: Vec<StreamsRun>,
    /// New tunnel on a warm connection to gateway A (CONNECT, QUIC stream, sink connect, one
    /// round trip through).
    pub setup_quic_warm: LatencySummary,
    /// The same from a cold start: TCP, mTLS and HTTP/2 handshakes with gateway A first.
    pub setup_quic_cold: LatencySummary,
    /// A TCP+TLS tunnel (always cold: one TLS connection per tunnel on each leg), to the same
    /// round trip through.
    pub setup_tcp_tls: LatencySummary,
}

/// A client of gateway A's tunnel port, with a workload identity of cluster A.
pub struct TunnelClient {
    tls: TlsConnector,
    gateway: SocketAddr,
    target_cluster: String,
    service: String,
    endpoint: SocketAddr,
}

impl TunnelClient {
    /// A client of the gateway at `gateway` aimed at `endpoint` of `service` in `target_cluster`.
    pub fn new(
        tls: rustls::ClientConfig,
        gateway: SocketAddr,
        target_cluster: &str,
        service: &str,
        endpoint: SocketAddr,
    ) -> Self {
        Self {
            tls: TlsConnector::from(Arc::new(tls)),
            gateway,
            target_cluster: target_cluster.to_string(),
            service: service.to_string(),
            endpoint,
        }
    }

    /// A new mTLS HTTP/2 connection to the gateway.
    pub async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, String> {
        let tcp = tokio::net::TcpStream::connect(self.gateway)
            .await
            .map_err(|e| format!("TCP connect to gateway {}: {e}", self.gateway))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(ServerName::IpAddress(self.gateway.ip().into()), tcp)
            .await
            .map_err(|e| format!("TLS with gateway {}: {e}", self.gateway))?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .adaptive_window(true)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP/2 with gateway {}: {e}", self.gateway))?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// Opens one tunnel on `sender`: the byte stream to the endpoint.
    pub async fn open(
        &self,
        sender: &mut SendRequest<Empty<Bytes>>,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, String> {
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri(self.endpoint.to_string())
            .header(HEADER_TARGET_CLUSTER, &self.target_cluster)
            .header(HEADER_TARGET_SERVICE, &self.service)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("CONNECT: {e}"))?;
        if rsp.status() != StatusCode::OK {
            return Err(format!(
                "the gateway refused the tunnel with {}",
                rsp.status()
            ));
        }
        let upgraded = hyper::upgrade::on(rsp)
            .await
            .map_err(|e| format!("tunnel upgrade: {e}"))?;
        Ok(TokioIo::new(upgraded))
    }
}

/// Bootstraps a workload identity `spiffe://<cluster>.mesh/ns/<ns>/sa/<account>` from the controller.
pub async fn bootstrap(
    controller: SocketAddr,
    cluster: &str,
    state_dir: &std::path::Path,
    namespace: &str,
    account: &str,
) -> Result<(Arc<ControlClient>, rustls::ClientConfig), BenchError> {
    let credentials = JoinCredentials::read(
        &state_dir.join("ca.crt"),
        &state_dir.join(mesh_launcher::ca::JOIN_TOKEN_FILE),
    )
    .map_err(|e| BenchError::Tls(e.to_string()))?;
    let id = SpiffeId::workload(&default_trust_domain(cluster), namespace, account);
    let (client, identity, bundle) =
        mesh_core::bootstrap::bootstrap(&controller.into(), cluster, &credentials, &id)
            .await
            .map_err(|e| BenchError::Tls(e.to_string()))?;
    let trust = TrustStore::new(&[bundle]).map_err(|e| BenchError::Tls(e.to_string()))?;
    let cfg = client_config(Some(&identity), trust, &[ALPN_H2])
        .map_err(|e| BenchError::Tls(e.to_string()))?;
    Ok((client, cfg))
}

/// What the link measurement needs.
pub struct LinkSetup {
    /// The mesh tunnel client.
    pub mesh: TunnelClient,
    /// The baseline's client TLS.
    pub relay_tls: RelayTls,
    /// The baseline's ingress relay.
    pub relay_ingress: SocketAddr,
    /// Total payload per throughput run.
    pub payload_bytes: u64,
    /// Set-up latency samples per kind.
    pub setup_samples: usize,
}

/// Runs every link measurement.
pub async fn measure(setup: &LinkSetup) -> Result<LinkReport, BenchError> {
    let mut quic = Vec::new();
    let mut tcp_tls = Vec::new();
    for streams in [1usize, 16] {
        // Interleaved, so both transports see the same machine conditions.
        quic.push(mesh_throughput(setup, streams).await?);
        tcp_tls.push(relay_throughput(setup, streams).await?);
    }
    let (warm, cold, relay) = setup_latencies(setup).await?;
    Ok(LinkReport {
        payload_bytes: setup.payload_bytes,
        quic,
        tcp_tls,
        setup_quic_warm: warm,
        setup_quic_cold: cold,
        setup_tcp_tls: relay,
    })
}

async fn mesh_throughput(setup: &LinkSetup, streams: usize) -> Result<StreamsRun, BenchError> {
    let what = format!("QUIC tunnel throughput, {streams} streams");
    let mut sender = setup
        .mesh
        .connect()
        .await
        .map_err(|e| BenchError::measure(&what, e))?;
    let mut tunnels = Vec::new();
    for _ in 0..streams {
        let mut t = setup
            .mesh
            .open(&mut sender)
            .await
            .map_err(|e| BenchError::measure(&what, e))?;
        send_transfer(&mut t, 0)
            .await
            .map_err(|e| BenchError::measure(&what, e))?;
        tunnels.push(t);
    }
    transfer_all(tunnels, setup.payload_bytes, &what).await
}

async fn relay_throughput(setup: &LinkSetup, streams: usize) -> Result<StreamsRun, BenchError> {
    let what = format!("TCP+TLS tunnel throughput, {streams} streams");
    let mut tunnels = Vec::new();
    for _ in 0..streams {
        let mut t = setup
            .relay_tls
            .connect(setup.relay_ingress)
            .await
            .map_err(|e| BenchError::measure(&what, e))?;
        send_transfer(&mut t, 0)
            .await
            .map_err(|e| BenchError::measure(&what, e))?;
        tunnels.push(t);
    }
    transfer_all(tunnels, setup.payload_bytes, &what).await
}

/// Sends `total` bytes split over the already open tunnels, all at once; times the whole.
async fn transfer_all<S>(tunnels: Vec<S>, total: u64, what: &str) -> Result<StreamsRun, BenchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let streams = tunnels.len();
    let each = total / streams.max(1) as u64;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for mut t in tunnels {
        tasks.spawn(async move { send_transfer(&mut t, each).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| BenchError::measure(what, e))?
            .map_err(|e| BenchError::measure(what, e))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes = each * streams as u64;
    Ok(StreamsRun {
        streams,
        bytes,
        seconds,
        mib_per_s: if seconds > 0.0 {
            bytes as f64 / seconds / (1024.0 * 1024.0)
        } else {
            0.0
        },
    })
}

async fn setup_latencies(
    setup: &LinkSetup,
) -> Result<(LatencySummary, LatencySummary, LatencySummary), BenchError> {
    let (mut warm, mut cold, mut relay) = (new_histogram(), new_histogram(), new_histogram());
    let fail = |kind: &str, e: String| BenchError::measure(format!("tunnel set-up ({kind})"), e);
    let mut sender = setup.mesh.connect().await.map_err(|e| fail("warm", e))?;
    // One tunnel first, so the warm samples do not include the first use of the connection.
    let mut first = setup
        .mesh
        .open(&mut sender)
        .await
        .map_err(|e| fail("warm", e))?;
    send_transfer(&mut first, 0)
        .await
        .map_err(|e| fail("warm", e.to_string()))?;
    drop(first);
    for _ in 0..setup.setup_samples {
        let t0 = Instant::now();
        let mut t = setup
            .mesh
            .open(&mut sender)
            .await
            .map_err(|e| fail("warm", e))?;
        send_transfer(&mut t, 0)
            .await
            .map_err(|e| fail("warm", e.to_string()))?;
        record(&mut warm, micros(t0.elapsed()));

        let t0 = Instant::now();
        let mut fresh = setup.mesh.connect().await.map_err(|e| fail("cold", e))?;
        let mut t = setup
            .mesh
            .open(&mut fresh)
            .await
            .map_err(|e| fail("cold", e))?;
        send_transfer(&mut t, 0)
            .await
            .map_err(|e| fail("cold", e.to_string()))?;
        record(&mut cold, micros(t0.elapsed()));

        let t0 = Instant::now();
        let mut t = setup
            .relay_tls
            .connect(setup.relay_ingress)
            .await
            .map_err(|e| fail("TCP+TLS", e.to_string()))?;
        send_transfer(&mut t, 0)
            .await
            .map_err(|e| fail("TCP+TLS", e.to_string()))?;
        record(&mut relay, micros(t0.elapsed()));
    }
    Ok((
        LatencySummary::of(&warm),
        LatencySummary::of(&cold),
        LatencySummary::of(&relay),
    ))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
