//! Helpers of the controller integration tests: a state directory, plain HTTP to the admin
//! port, anonymous TLS to the control port, and waiting on streams with a deadline.

#![allow(dead_code)]

pub(crate) mod control;
pub(crate) mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::api::ALPN_H2;
use mesh_core::api::{
    GatewayReport, LinkInfo, PeerLinkStatus, SidecarSnapshot, WorkloadRegistration,
};
use mesh_core::catalog::{ExportCatalog, ExportedEndpoint, ExportedService};
use mesh_core::identity::{ClusterCa, SpiffeId, TrustBundle, TrustStore, client_config};
use mesh_core::names::ServiceKey;
use mesh_federation::{ControllerArgs, RunningController, start};

use self::control::{CallError, Client, Ndjson};
use serde::de::DeserializeOwned;

pub(crate) const TOKEN: &str = "test-join-token";

/// A state directory removed when dropped.
pub(crate) struct StateDir(pub PathBuf);

impl StateDir {
    pub(crate) fn new(name: &str, cluster: &str) -> anyhow::Result<(Self, ClusterCa)> {
        let dir = std::env::temp_dir().join(format!("mesh-fed-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = ClusterCa::generate(&format!("{cluster}.mesh"))?;
        ca.write_to(&dir)?;
        std::fs::write(dir.join("join-token"), format!("{TOKEN}\n"))?;
        Ok((Self(dir), ca))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn args(cluster: &str, state: &Path) -> ControllerArgs {
    ControllerArgs {
        region: Some("us".into()),
        region_priority: vec!["eu".into()],
        registration_ttl: Duration::from_secs(1),
        cert_ttl: Duration::from_secs(3600),
        ready_file: Some(state.join("ready.json")),
        ..ControllerArgs::new(cluster, state)
    }
}

/// One plain HTTP/1.1 request to the admin port, without credentials.
pub(crate) async fn admin(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(StatusCode, String)> {
    admin_with(addr, None, method, path, body).await
}

/// One plain HTTP/1.1 request to the admin port with `authorization` as the header's value.
pub(crate) async fn admin_with(
    addr: SocketAddr,
    authorization: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<(StatusCode, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let rsp = sender.send_request(req).await?;
    let status = rsp.status();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One HTTP/2 request to the control port without a client certificate.
pub(crate) async fn anonymous_control(
    addr: SocketAddr,
    bundle: &TrustBundle,
    method: Method,
    path: &str,
) -> anyhow::Result<(StatusCode, String)> {
    let trust = TrustStore::new(std::slice::from_ref(bundle))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client_config(None, trust, &[ALPN_H2])?));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("controller.mesh.invalid")?;
    let stream = tls.connect(name, tcp).await?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(format!("https://controller{path}"))
        .body(Full::new(Bytes::new()))?;
    let rsp = sender.send_request(req).await?;
    let status = rsp.status();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Reads the stream until a message satisfies `pred`, failing after `deadline`.
pub(crate) async fn next_until<T: DeserializeOwned + std::fmt::Debug>(
    stream: &mut Ndjson<T>,
    deadline: Duration,
    what: &str,
    pred: impl Fn(&T) -> bool,
) -> anyhow::Result<T> {
    let mut last = None;
    let wait = async {
        loop {
            let msg = stream
                .next()
                .await?
                .ok_or_else(|| anyhow!("stream closed"))?;
            if pred(&msg) {
                return Ok::<_, anyhow::Error>(msg);
            }
            last = Some(format!("{msg:?}"));
        }
    };
    match tokio::time::timeout(deadline, wait).await {
        Ok(r) => r,
        Err(_) => Err(anyhow!(
            "timed out waiting for {what}; last message: {last:?}"
        )),
    }
    .with_context(|| format!("waiting for {what}"))
}

/// A controller started on a fresh state directory.
pub(crate) struct Harness {
    pub ctl: RunningController,
    pub ca: ClusterCa,
    pub cluster: String,
    pub state: StateDir,
}

impl Harness {
    pub(crate) async fn start(name: &str, cluster: &str) -> anyhow::Result<Self> {
        let (state, ca) = StateDir::new(name, cluster)?;
        let ctl = start(args(cluster, state.path())).await?;
        Ok(Self {
            ctl,
            ca,
            cluster: cluster.into(),
            state,
        })
    }

    /// Bootstraps a client for `id` with `token`.
    pub(crate) async fn bootstrap(
        &self,
        id: &SpiffeId,
        token: &str,
    ) -> Result<(Client, TrustBundle), CallError> {
        Client::bootstrap(
            self.ctl.control_addr,
            &self.cluster,
            self.ca.cert_pem(),
            token,
            id,
        )
        .await
    }

    /// Bootstraps a client for `id` with the right token.
    pub(crate) async fn client(&self, id: &SpiffeId) -> anyhow::Result<Client> {
        let (client, _) = self
            .bootstrap(id, TOKEN)
            .await
            .map_err(CallError::into_anyhow)?;
        Ok(client)
    }

    /// Bootstraps a client for the workload of service account `demo/<service_account>` of
    /// this cluster.
    pub(crate) async fn workload_client(&self, service_account: &str) -> anyhow::Result<Client> {
        let td = format!("{}.mesh", self.cluster);
        self.client(&SpiffeId::workload(&td, "demo", service_account))
            .await
    }

    /// Bootstraps a client for this cluster's gateway.
    pub(crate) async fn gateway_client(&self) -> anyhow::Result<Client> {
        self.client(&SpiffeId::gateway(&format!("{}.mesh", self.cluster)))
            .await
    }

    /// An admin request with an optional JSON body, carrying the admin token the controller
    /// created in its state directory.
    pub(crate) async fn admin<T: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&T>,
    ) -> anyhow::Result<(StatusCode, String)> {
        let body = body.map(serde_json::to_vec).transpose()?;
        let bearer = format!("Bearer {}", self.admin_token()?);
        admin_with(self.ctl.admin_addr, Some(&bearer), method, path, body).await
    }

    /// The admin token in the state directory.
    pub(crate) fn admin_token(&self) -> anyhow::Result<String> {
        let path = self.state.path().join("admin-token");
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        Ok(text.trim().to_string())
    }

    /// `GET` on the admin port.
    pub(crate) async fn admin_get(&self, path: &str) -> anyhow::Result<(StatusCode, String)> {
        admin(self.ctl.admin_addr, Method::GET, path, None).await
    }
}

/// A registration of `echo-0` of `echo.demo` in us-east, healthy, as `id`.
pub(crate) fn registration(id: &SpiffeId) -> anyhow::Result<WorkloadRegistration> {
    Ok(WorkloadRegistration {
        id: "echo-0".into(),
        service: echo(),
        cluster: "us-east".into(),
        address: "127.0.0.1:15006".parse()?,
        identity: id.to_string(),
        healthy: true,
    })
}

/// The report of a gateway at 127.0.0.1:4500 (QUIC) and :4501 (tunnels) whose link to
/// eu-central is up with a round trip of `rtt_seconds`.
pub(crate) fn gateway_report(rtt_seconds: f64) -> anyhow::Result<GatewayReport> {
    Ok(GatewayReport {
        quic_addr: "127.0.0.1:4500".parse()?,
        tunnel_addr: "127.0.0.1:4501".parse()?,
        peers: vec![PeerLinkStatus {
            cluster: "eu-central".into(),
            up: true,
            rtt_seconds: Some(rtt_seconds),
            loss: 0.0,
            last_error: None,
        }],
    })
}

pub(crate) fn echo() -> ServiceKey {
    ServiceKey::new("echo", "demo").expect("valid name")
}

/// The clusters of `echo.demo` in a snapshot's failover order.
pub(crate) fn localities(snap: &SidecarSnapshot) -> Vec<String> {
    let route = snap.services.get(&echo());
    route
        .map(|r| {
            r.localities
                .iter()
                .map(|l| l.entry.cluster.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The status of a refused call.
pub(crate) fn status_of<T>(r: &Result<T, CallError>) -> Option<StatusCode> {
    r.as_ref().err().and_then(CallError::status)
}

/// Link info of a fake peer `eu-central` in region `eu`.
pub(crate) fn peer_link_info() -> anyhow::Result<LinkInfo> {
    let ca = ClusterCa::generate("eu-central.mesh")?;
    Ok(LinkInfo {
        cluster: "eu-central".into(),
        region: "eu".into(),
        trust_bundle: TrustBundle {
            trust_domain: "eu-central.mesh".into(),
            cluster: "eu-central".into(),
            ca_pem: ca.cert_pem().into(),
        },
        gateway_addr: "127.0.0.1:4433".parse()?,
    })
}

/// The fake peer's catalog exporting one `echo.demo` endpoint.
pub(crate) fn peer_catalog(version: u64) -> anyhow::Result<ExportCatalog> {
    let mut catalog = ExportCatalog::new("eu-central");
    catalog.version = version;
    let endpoint = ExportedEndpoint {
        address: "10.1.0.7:15006".parse()?,
        identity: "spiffe://eu-central.mesh/ns/demo/sa/echo".into(),
        healthy: true,
    };
    let service = ExportedService {
        healthy: true,
        endpoints: vec![endpoint],
        ports: Vec::new(),
        exported_since: None,
    };
    catalog.services.insert(echo(), service);
    Ok(catalog)
}
