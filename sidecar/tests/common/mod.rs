//! Test harness: a CA per cluster, a small hyper app, server (inbound) and client (outbound)
//! sidecars on port 0, hand-made snapshots, and HTTP/1.1 / h2c clients.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::api::{LocalityRoute, RouteEndpoint, ServiceRoute, SidecarSnapshot};
use mesh_core::http::{BoxBody, BoxError, full, text};
use mesh_core::identity::{ClusterCa, SpiffeId, TrustBundle};
use mesh_core::locality::LocalityEntry;
use mesh_core::names::ServiceKey;
use mesh_core::serve::{Listening, ServeLimits};
use mesh_sidecar::identity::SidecarIdentity;
use mesh_sidecar::metrics::Metrics;
use mesh_sidecar::outbound::balancer::ResilienceConfig;
use mesh_sidecar::transparent::{
    Capture, CaptureSettings, InboundPolicy, OutboundPolicy, VipLookup,
};
use mesh_sidecar::{SidecarState, StateOptions};
use mesh_test_support::TestCluster;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub(crate) const DAY: Duration = Duration::from_secs(86400);

/// One cluster's CA and bundle.
pub(crate) struct Cluster {
    pub name: String,
    pub ca: Arc<ClusterCa>,
    pub bundle: TrustBundle,
}

impl Cluster {
    pub(crate) fn new(name: &str) -> Self {
        let TestCluster { name, ca, bundle } = TestCluster::new(name);
        Self { name, ca, bundle }
    }

    pub(crate) fn id(&self, sa: &str) -> SpiffeId {
        SpiffeId::workload(&self.bundle.trust_domain, "demo", sa)
    }

    pub(crate) fn identity(&self, sa: &str) -> SidecarIdentity {
        let ident = self.ca.issue(&self.id(sa), DAY).unwrap();
        SidecarIdentity::new(ident, self.bundle.clone()).unwrap()
    }

    pub(crate) fn state(&self, sa: &str, request_timeout: Duration) -> Arc<SidecarState> {
        SidecarState::new(
            StateOptions {
                cluster: self.name.clone(),
                identity: self.identity(sa),
                connect_timeout: Duration::from_millis(500),
                request_timeout,
                resilience: ResilienceConfig::default(),
                discovery_source: "controller at test".into(),
                cache_max_bytes: mesh_core::policy::http_cache::DEFAULT_CAPACITY_BYTES,
            },
            Metrics::unregistered(),
        )
    }
}

pub(crate) fn echo() -> ServiceKey {
    "echo.demo".parse().unwrap()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Deterministic test payload.
pub(crate) fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A plain-HTTP test app (HTTP/1.1 and h2c).
/// - `/status/<code>` answers that status;
/// - `/sha256` streams the request body through SHA-256 and answers the hex digest;
/// - `/generate/<n>` streams n payload bytes;
/// - anything else echoes the body, with `x-app-id`, `x-seen-host` and `x-seen-method`.
pub(crate) struct TestApp {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TestApp {
    pub(crate) async fn start(id: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let (id, counter) = (id.to_string(), hits.clone());
        let task = tokio::spawn(mesh_core::admin::serve_http(listener, move |req| {
            counter.fetch_add(1, Ordering::SeqCst);
            app_handler(id.clone(), req)
        }));
        Self { addr, hits, task }
    }

    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn app_handler(id: String, req: Request<Incoming>) -> Response<BoxBody> {
    let path = req.uri().path().to_string();
    if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        let mut rsp = text(status, format!("status {code} from {id}"));
        rsp.headers_mut().insert("x-app-id", id.parse().unwrap());
        return rsp;
    }
    if path == "/sha256" {
        let mut body = req.into_body();
        let mut hasher = Sha256::new();
        let mut len = 0usize;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        len += data.len();
                        hasher.update(data);
                    }
                }
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("body broke: {e}")),
            }
        }
        return text(StatusCode::OK, format!("{} {len}", hex(&hasher.finalize())));
    }
    if let Some(n) = path.strip_prefix("/generate/") {
        let n: usize = n.parse().unwrap_or(0);
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            let chunk = 64 * 1024;
            let mut sent = 0;
            while sent < n {
                let len = chunk.min(n - sent);
                let data: Vec<u8> = (sent..sent + len).map(|i| (i % 251) as u8).collect();
                if tx.send(Bytes::from(data)).await.is_err() {
                    return;
                }
                sent += len;
            }
        });
        return Response::new(ChannelBody(rx).boxed());
    }
    let host = req.headers().get("host").cloned();
    let method = req.method().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut rsp = Response::new(full(body));
    rsp.headers_mut().insert("x-app-id", id.parse().unwrap());
    rsp.headers_mut()
        .insert("x-seen-method", method.parse().unwrap());
    if let Some(host) = host {
        rsp.headers_mut().insert("x-seen-host", host);
    }
    rsp
}

/// A body fed chunk by chunk from a channel: streams without holding the whole payload.
pub(crate) struct ChannelBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(http_body::Frame::data(data))))
    }
}

/// A task that is aborted when dropped.
pub(crate) struct Task(pub JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A server sidecar (inbound) for `echo.demo` in front of an app.
pub(crate) struct ServerSidecar {
    pub addr: SocketAddr,
    pub state: Arc<SidecarState>,
    pub task: Task,
}

impl ServerSidecar {
    pub(crate) async fn start(cluster: &Cluster, app: SocketAddr) -> Self {
        let state = cluster.state("echo", Duration::from_secs(5));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = Task(tokio::spawn(mesh_sidecar::inbound::serve_within(
            listener,
            state.clone(),
            echo(),
            app,
            addr,
            no_capture(&state),
            Listening::uncapped(ServeLimits::default()),
        )));
        Self { addr, state, task }
    }

    /// Drops the listener and every connection it accepted.
    pub(crate) fn kill(&self) {
        self.task.0.abort();
    }

    pub(crate) fn endpoint(&self, cluster: &Cluster) -> RouteEndpoint {
        RouteEndpoint {
            address: self.addr,
            identity: cluster.id("echo").to_string(),
            healthy: true,
            plaintext: false,
        }
    }
}

/// A client sidecar (outbound proxy).
pub(crate) struct ClientSidecar {
    pub addr: SocketAddr,
    pub state: Arc<SidecarState>,
    pub task: Task,
}

impl ClientSidecar {
    pub(crate) async fn start(cluster: &Cluster) -> Self {
        Self::with_timeout(cluster, Duration::from_secs(5)).await
    }

    pub(crate) async fn with_timeout(cluster: &Cluster, request_timeout: Duration) -> Self {
        let state = cluster.state("client", request_timeout);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = Task(tokio::spawn(mesh_sidecar::outbound::serve(
            listener,
            state.clone(),
            no_capture(&state),
        )));
        Self { addr, state, task }
    }
}

/// Capture handling for listeners that no capture rule redirects to (every connection is
/// the app's own, as a proxy client); no address is a VIP.
pub(crate) fn no_capture(state: &Arc<SidecarState>) -> Arc<Capture> {
    Arc::new(Capture::new(
        CaptureSettings {
            vip_range: "240.240.0.0/16".parse().unwrap(),
            outbound: OutboundPolicy::AllowAny,
            inbound: InboundPolicy::Permissive,
            own_ports: Vec::new(),
        },
        VipLookup::new(Arc::new(|_| Box::pin(async { Ok(None) }))),
        state.metrics().clone(),
        Duration::from_secs(1),
    ))
}

/// A locality of `echo.demo`.
pub(crate) fn locality(cluster: &str, endpoints: Vec<RouteEndpoint>) -> LocalityRoute {
    LocalityRoute {
        entry: LocalityEntry {
            cluster: cluster.into(),
            health: 1.0,
            reason: "test".into(),
        },
        endpoints,
    }
}

/// A snapshot of `own` routing `echo.demo` over `localities`.
pub(crate) fn snapshot(
    own: &Cluster,
    bundles: Vec<TrustBundle>,
    localities: Vec<LocalityRoute>,
) -> SidecarSnapshot {
    SidecarSnapshot {
        version: 1,
        cluster: own.name.clone(),
        trust_bundles: bundles,
        gateway: None,
        services: BTreeMap::from([(echo(), ServiceRoute { localities })]),
        unknown: vec![],
        policies: Default::default(),
        epoch: 0,
        warming: false,
    }
}

/// A response read whole.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn read(rsp: Response<Incoming>) -> anyhow::Result<Answer> {
    let (parts, body) = rsp.into_parts();
    let body = body
        .collect()
        .await
        .context("reading the response body")?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// One HTTP/1.1 request through the proxy; `uri` absolute (proxy form) or origin form with `host`.
pub(crate) async fn h1(
    proxy: SocketAddr,
    method: Method,
    uri: &str,
    host: Option<&str>,
    body: Vec<u8>,
) -> anyhow::Result<Answer> {
    let tcp = tokio::net::TcpStream::connect(proxy).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(host) = host {
        req = req.header("host", host);
    }
    let rsp = sender
        .send_request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    read(rsp).await
}

/// GET `http://echo.demo.svc.clusterset.local<path>` over HTTP/1.1 through the proxy.
pub(crate) async fn get(proxy: SocketAddr, path: &str) -> anyhow::Result<Answer> {
    h1(
        proxy,
        Method::GET,
        &format!("http://echo.demo.svc.clusterset.local{path}"),
        None,
        vec![],
    )
    .await
}

/// An h2c (prior knowledge) connection to the proxy.
pub(crate) async fn h2c(
    proxy: SocketAddr,
) -> anyhow::Result<hyper::client::conn::http2::SendRequest<BoxBody>> {
    let tcp = tokio::net::TcpStream::connect(proxy).await?;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request on an h2c connection.
pub(crate) async fn h2_send(
    sender: &mut hyper::client::conn::http2::SendRequest<BoxBody>,
    method: Method,
    uri: &str,
    body: Vec<u8>,
) -> anyhow::Result<Answer> {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(full(body))?;
    read(sender.send_request(req).await?).await
}

/// Waits for `cond` with a deadline.
pub(crate) async fn eventually(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    mesh_test_support::eventually(what, deadline, async || cond()).await;
}

/// Serves mTLS HTTP/2 on a fresh loopback port as `id` of `cluster` (a stand-in gateway or
/// controller), answering every request with `handler`. With `client_auth_optional`, clients
/// without a certificate get through the handshake (the controller's CSR call).
pub(crate) async fn serve_mtls_h2<F, Fut>(
    cluster: &Cluster,
    id: &SpiffeId,
    client_auth_optional: bool,
    handler: F,
) -> (SocketAddr, Task)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<BoxBody>> + Send + 'static,
{
    let ident = cluster.ca.issue(id, DAY).unwrap();
    let trust =
        mesh_core::identity::TrustStore::new(std::slice::from_ref(&cluster.bundle)).unwrap();
    let config =
        mesh_core::identity::server_config(&ident, trust, &[b"h2"], client_auth_optional).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, std::convert::Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, Task(task))
}
