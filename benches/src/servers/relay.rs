//! The relays of the TCP+TLS tunnel baseline: the same shape as the gateway pair (client ->
//! TLS -> ingress -> TLS over TCP -> egress -> TCP -> endpoint), one TLS 1.3 connection per
//! tunnel on each leg (what a TCP tunnel such as stunnel does), mTLS with the same rustls
//! configuration the mesh uses. Only the gateways' QUIC leg differs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_core::identity::{
    ClusterCa, SpiffeId, TrustBundle, TrustStore, WorkloadIdentity, client_config, server_config,
};
use mesh_core::telemetry::{accept, bind_tcp, shutdown_signal};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::BenchError;

/// Trust domain of the relays' private CA.
pub const RELAY_TRUST_DOMAIN: &str = "relay.mesh";
/// ALPN of relay connections.
pub const RELAY_ALPN: &[u8] = b"bench-relay";

/// Which side of the tunnel a relay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RelayRole {
    /// Accepts TLS from clients and forwards over TLS to the egress relay.
    Ingress,
    /// Accepts TLS from the ingress relay and forwards plain TCP to the endpoint.
    Egress,
}

/// `mesh-bench tls-relay`: one relay of the TCP+TLS tunnel baseline.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// Which side this relay is.
    #[arg(long, value_enum)]
    pub role: RelayRole,
    /// TLS listener.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Where to forward each connection.
    #[arg(long)]
    pub forward: SocketAddr,
    /// Directory holding the relay CA (`ca.crt`, `ca.key`), written by the harness.
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// Write a JSON ready file with the bound address (role `listen`) and the pid here.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// TLS configurations of one party of the baseline.
#[derive(Clone)]
pub struct RelayTls {
    /// Server side.
    pub acceptor: TlsAcceptor,
    /// Client side.
    pub connector: TlsConnector,
}

impl RelayTls {
    /// Issues an identity named `name` from the CA in `ca_dir` and builds both configurations.
    pub fn from_ca_dir(ca_dir: &Path, name: &str) -> Result<Self, BenchError> {
        let ca = ClusterCa::load(ca_dir, RELAY_TRUST_DOMAIN)
            .map_err(|e| BenchError::Tls(e.to_string()))?;
        let id = SpiffeId::workload(RELAY_TRUST_DOMAIN, "bench", name);
        let identity: WorkloadIdentity = ca
            .issue(&id, Duration::from_secs(24 * 3600))
            .map_err(|e| BenchError::Tls(e.to_string()))?;
        let trust = TrustStore::new(&[TrustBundle {
            trust_domain: RELAY_TRUST_DOMAIN.to_string(),
            cluster: "relay".to_string(),
            ca_pem: ca.cert_pem().to_string(),
        }])
        .map_err(|e| BenchError::Tls(e.to_string()))?;
        let server = server_config(&identity, trust.clone(), &[RELAY_ALPN], false)
            .map_err(|e| BenchError::Tls(e.to_string()))?;
        let client = client_config(Some(&identity), trust, &[RELAY_ALPN])
            .map_err(|e| BenchError::Tls(e.to_string()))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// A TLS connection to `addr`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        self.connector
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
    }
}

/// Relays until SIGINT or SIGTERM.
pub async fn run(args: RelayArgs) -> Result<(), BenchError> {
    let name = match args.role {
        RelayRole::Ingress => "relay-ingress",
        RelayRole::Egress => "relay-egress",
    };
    let tls = RelayTls::from_ca_dir(&args.ca_dir, name)?;
    let listener = bind_tcp(name, "listen", args.listen)
        .await
        .map_err(|e| BenchError::measure("binding the relay", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::measure("relay address", e))?;
    super::write_ready(name, addr, args.ready_file.as_deref())?;
    let serve = async {
        loop {
            let (stream, peer) = accept(&listener, "listen").await;
            let _ = stream.set_nodelay(true);
            let (tls, role, forward) = (tls.clone(), args.role, args.forward);
            tokio::spawn(async move {
                if let Err(e) = relay(tls, role, stream, forward).await {
                    tracing::debug!(%peer, error = %e, "relay connection ended");
                }
            });
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = shutdown_signal() => {}
    }
    Ok(())
}

/// Phases: TLS handshake with the client, connect onward, then copy both ways.
async fn relay(
    tls: RelayTls,
    role: RelayRole,
    stream: TcpStream,
    forward: SocketAddr,
) -> std::io::Result<()> {
    let mut inbound = tls.acceptor.accept(stream).await?;
    match role {
        RelayRole::Ingress => {
            let mut onward = tls.connect(forward).await?;
            tokio::io::copy_bidirectional(&mut inbound, &mut onward).await?;
        }
        RelayRole::Egress => {
            let mut onward = TcpStream::connect(forward).await?;
            let _ = onward.set_nodelay(true);
            tokio::io::copy_bidirectional(&mut inbound, &mut onward).await?;
        }
    }
    Ok(())
}
