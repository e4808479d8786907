//! The client side of the controller's control API, shared by sidecars and the gateway:
//! bootstrap (CSR with the join token), JSON calls and NDJSON snapshot streams, all over one
//! pooled mTLS HTTP/2 connection that is re-established on failure.
//!
//! One client talks to one address. A caller that talks to several replicas of the controller
//! (the gateway) bootstraps once and derives a client per replica with
//! [`ControlClient::with_addr`]; [`ControlClient::connections`] tells it when a replica was
//! reconnected (and so may have restarted and lost what it was told).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;

use crate::api::{ALPN_H2, CsrRequest, CsrResponse, PATH_CERTIFICATES};
use crate::host_port::{HostPort, HostPorts};
use crate::http::{BoxBody, empty, full};
use crate::identity::{
    CaError, RotatingIdentity, SpiffeId, TlsError, TrustBundle, TrustStore, WorkloadCsr,
    WorkloadIdentity, client_config,
};

/// Bound on connecting (TCP and TLS) to the controller: it is on the same network, so a slow
/// connect means it is down, and callers have a last snapshot to fall back on.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one unary call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest unary answer accepted.
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// Largest single NDJSON message accepted on a stream.
const MAX_STREAM_MESSAGE: usize = 64 * 1024 * 1024;

/// Errors talking to the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Could not connect or the connection broke.
    #[error("controller at {addr}: {reason}")]
    Connect {
        /// Controller address.
        addr: HostPort,
        /// Why.
        reason: String,
    },
    /// The controller answered with an error status.
    #[error("controller answered {status} to {path}: {body}")]
    Status {
        /// The path called.
        path: String,
        /// The status.
        status: StatusCode,
        /// The body (the controller's explanation).
        body: String,
    },
    /// An answer that does not decode.
    #[error("controller answer to {path} is malformed: {reason}")]
    Malformed {
        /// The path called.
        path: String,
        /// Why.
        reason: String,
    },
    /// Key material problems.
    #[error(transparent)]
    Identity(#[from] CaError),
    /// TLS configuration problems.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A client of one cluster's controller.
pub struct ControlClient {
    /// The replicas it may reach; `current` indexes the one used now.
    addr: Vec<HostPort>,
    current: AtomicUsize,
    tls: TlsConnector,
    /// The roots the controller's certificate is verified against (inside `tls`): shared by
    /// every client derived from this one, replaced by [`trust_roots`](Self::trust_roots).
    trust: TrustStore,
    conn: Mutex<Option<SendRequest<BoxBody>>>,
    /// Connections established so far.
    connections: AtomicU64,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ControlClient {
    /// Obtains a certificate for `id` from the controller at `addr` with the join `token`, and
    /// returns a client that authenticates with it. `ca_pem` is the cluster's root, which the
    /// controller's serving certificate chains to. The identity is a [`RotatingIdentity`]: the
    /// client presents whatever it holds at each new connection, so renewing it
    /// ([`renew`](Self::renew)) also renews what this client (and every client derived from
    /// it) presents.
    pub async fn bootstrap(
        addr: HostPort,
        cluster: &str,
        ca_pem: &str,
        token: &str,
        id: &SpiffeId,
    ) -> Result<(Arc<Self>, RotatingIdentity, TrustBundle), ControlError> {
        let (identity, bundle) =
            Self::request_certificate(addr.clone(), cluster, ca_pem, token, id).await?;
        let identity = RotatingIdentity::new(identity)?;
        let trust = TrustStore::new(&[root_bundle(id, cluster, ca_pem)])?;
        let config = client_config(Some(&identity), trust.clone(), &[ALPN_H2])?;
        let client = Self::new(addr, config, trust);
        Ok((Arc::new(client), identity, bundle))
    }

    /// Asks the controller at `addr` to sign a certificate for `id`, authenticated by the join
    /// `token` over a connection without a client certificate (the first certificate, or one
    /// after the current certificate expired). Returns the identity and the cluster's bundle.
    pub async fn request_certificate(
        addr: HostPort,
        cluster: &str,
        ca_pem: &str,
        token: &str,
        id: &SpiffeId,
    ) -> Result<(WorkloadIdentity, TrustBundle), ControlError> {
        let trust = TrustStore::new(&[root_bundle(id, cluster, ca_pem)])?;
        let anonymous = Self::new(addr, client_config(None, trust.clone(), &[ALPN_H2])?, trust);
        anonymous.sign(id, Some(token)).await
    }

    /// Renews this client's certificate for `id`: a CSR authenticated by the certificate the
    /// client presents (no join token). The caller swaps the identity in
    /// ([`RotatingIdentity::replace`]).
    pub async fn renew(&self, id: &SpiffeId) -> Result<WorkloadIdentity, ControlError> {
        self.sign(id, None).await.map(|(identity, _)| identity)
    }

    /// Posts a CSR for `id` with `token` as bearer, or none (then the client certificate is
    /// what authenticates the request).
    async fn sign(
        &self,
        id: &SpiffeId,
        token: Option<&str>,
    ) -> Result<(WorkloadIdentity, TrustBundle), ControlError> {
        let csr = WorkloadCsr::generate(id)?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("https://controller{PATH_CERTIFICATES}"))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {}", token.trim()));
        }
        let req = req
            .body(full(
                serde_json::to_vec(&CsrRequest {
                    csr_pem: csr.csr_pem.clone(),
                })
                .map_err(|e| self.malformed(PATH_CERTIFICATES, e))?,
            ))
            .map_err(|e| self.malformed(PATH_CERTIFICATES, e))?;
        let bytes = self.call(PATH_CERTIFICATES, req).await?;
        let answer: CsrResponse =
            serde_json::from_slice(&bytes).map_err(|e| self.malformed(PATH_CERTIFICATES, e))?;
        let identity = WorkloadIdentity::from_pem(&answer.cert_chain_pem, &csr.key_pem)?;
        if identity.id != *id {
            return Err(self.malformed(
                PATH_CERTIFICATES,
                format!("asked for {id}, the certificate names {}", identity.id),
            ));
        }
        Ok((identity, answer.trust_bundle))
    }

    /// Every replica address this client may reach.
    pub fn replicas(&self) -> &[HostPort] {
        &self.addr
    }

    fn new(addr: HostPort, cfg: rustls::ClientConfig, trust: TrustStore) -> Self {
        Self::with_tls(addr, TlsConnector::from(Arc::new(cfg)), trust)
    }

    fn with_tls(addr: HostPort, tls: TlsConnector, trust: TrustStore) -> Self {
        Self {
            addr: vec![addr],
            current: AtomicUsize::new(0),
            tls,
            trust,
            conn: Mutex::new(None),
            connections: AtomicU64::new(0),
        }
    }

    /// A client that reaches whichever of `replicas` answers: it connects to the one that
    /// answered last and moves to the next when that one cannot be reached, so a sidecar
    /// follows the controller's live replicas (same identity and roots as this client).
    pub fn with_replicas(&self, replicas: &HostPorts) -> Arc<Self> {
        let mut addr: Vec<HostPort> = replicas.iter().cloned().collect();
        // Start with the replica this client already talks to (the one that signed).
        if let Some(i) = addr.iter().position(|a| a == self.addr()) {
            addr.rotate_left(i);
        }
        Arc::new(Self {
            addr,
            current: AtomicUsize::new(0),
            tls: self.tls.clone(),
            trust: self.trust.clone(),
            conn: Mutex::new(None),
            connections: AtomicU64::new(0),
        })
    }

    /// A client of another replica of the same controller, at `addr`: it authenticates with
    /// this client's identity and trusts the same roots (the replicas share the cluster's CA),
    /// so one bootstrap serves every replica. It opens its own connection.
    pub fn with_addr(&self, addr: HostPort) -> Arc<Self> {
        Arc::new(Self::with_tls(addr, self.tls.clone(), self.trust.clone()))
    }

    /// Verifies the controller against the roots of the bundle in `bundles` that is of this
    /// client's trust domain, from the next connection on (a root rotation reaches sidecars
    /// and gateways in their snapshots; the controller's certificate may then chain to the new
    /// root). Bundles of other domains are never trusted for the controller. Returns whether
    /// the roots changed.
    pub fn trust_roots(&self, bundles: &[TrustBundle]) -> bool {
        let current = self.trust.current();
        let Some(own) = current.trust_domains().next().map(str::to_string) else {
            return false;
        };
        let Some(bundle) = bundles.iter().find(|b| b.trust_domain == own) else {
            return false;
        };
        if current.same_roots(bundle) {
            return false;
        }
        match self.trust.replace(std::slice::from_ref(bundle)) {
            Ok(()) => {
                tracing::info!(trust_domain = %own, "the controller is verified against new roots");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the cluster's new roots are unusable; the controller is verified against the previous ones");
                false
            }
        }
    }

    /// The controller's address (of the replica used now).
    pub fn addr(&self) -> &HostPort {
        &self.addr[self.current.load(Ordering::Relaxed) % self.addr.len()]
    }

    /// How many connections this client has established. A count that grows past the first
    /// means the connection broke and was made again: the controller may have restarted in
    /// between and lost what it held.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    fn malformed(&self, path: &str, e: impl std::fmt::Display) -> ControlError {
        ControlError::Malformed {
            path: path.to_string(),
            reason: e.to_string(),
        }
    }

    fn connect_error(&self, e: impl std::fmt::Display) -> ControlError {
        ControlError::Connect {
            addr: self.addr().clone(),
            reason: e.to_string(),
        }
    }

    async fn sender(&self) -> Result<SendRequest<BoxBody>, ControlError> {
        let mut guard = self.conn.lock().await;
        if let Some(s) = guard.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let mut attempt = 0;
        let sender = loop {
            match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
                Ok(Ok(sender)) => break sender,
                Ok(Err(e)) if attempt + 1 < self.addr.len() => {
                    tracing::debug!(error = %e, "controller replica unreachable; trying the next");
                }
                Err(_) if attempt + 1 < self.addr.len() => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(self.connect_error("connect timed out")),
            }
            attempt += 1;
            self.current.fetch_add(1, Ordering::Relaxed);
        };
        self.connections.fetch_add(1, Ordering::Relaxed);
        *guard = Some(sender.clone());
        Ok(sender)
    }

    /// One connection (TCP, TLS, HTTP/2) to the replica used now.
    async fn connect(&self) -> Result<SendRequest<BoxBody>, ControlError> {
        {
            let tcp = tokio::net::TcpStream::connect(self.addr().connect_target())
                .await
                .map_err(|e| self.connect_error(e))?;
            let _ = tcp.set_nodelay(true);
            let name = rustls::pki_types::ServerName::try_from("controller.mesh.invalid")
                .map_err(|e| self.connect_error(e))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| self.connect_error(format!("TLS handshake failed: {e}")))?;
            let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                // Pings even while idle: a dead controller is noticed within ~10 s although a
                // snapshot stream would otherwise wait on it forever.
                .keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true)
                .handshake(TokioIo::new(tls))
                .await
                .map_err(|e| self.connect_error(e))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, ControlError>(sender)
        }
    }

    async fn send(&self, req: Request<BoxBody>) -> Result<http::Response<Incoming>, ControlError> {
        let mut sender = self.sender().await?;
        match sender.send_request(req).await {
            Ok(rsp) => Ok(rsp),
            Err(e) => {
                *self.conn.lock().await = None;
                Err(self.connect_error(e))
            }
        }
    }

    async fn call(&self, path: &str, req: Request<BoxBody>) -> Result<Bytes, ControlError> {
        let fut = async {
            let rsp = self.send(req).await?;
            let status = rsp.status();
            let body = crate::http::read_body(rsp.into_body(), MAX_ANSWER)
                .await
                .map_err(|e| self.connect_error(e))?;
            if !status.is_success() {
                return Err(ControlError::Status {
                    path: path.to_string(),
                    status,
                    body: String::from_utf8_lossy(&body).trim().to_string(),
                });
            }
            Ok(body)
        };
        tokio::time::timeout(CALL_TIMEOUT, fut)
            .await
            .map_err(|_| self.connect_error(format!("{path} timed out")))?
    }

    /// Sends `body` as JSON with `method` to `path`; returns the answer body.
    pub async fn send_json<T: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&T>,
    ) -> Result<Bytes, ControlError> {
        let body = match body {
            Some(b) => full(serde_json::to_vec(b).map_err(|e| self.malformed(path, e))?),
            None => empty(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("https://controller{path}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| self.malformed(path, e))?;
        self.call(path, req).await
    }

    /// Opens an NDJSON stream at `path_and_query`.
    pub async fn stream<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
    ) -> Result<NdjsonStream<T>, ControlError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("https://controller{path_and_query}"))
            .body(empty())
            .map_err(|e| self.malformed(path_and_query, e))?;
        let rsp = tokio::time::timeout(CALL_TIMEOUT, self.send(req))
            .await
            .map_err(|_| self.connect_error("opening stream timed out"))??;
        let status = rsp.status();
        if !status.is_success() {
            let body = crate::http::read_body(rsp.into_body(), 64 * 1024)
                .await
                .unwrap_or_default();
            return Err(ControlError::Status {
                path: path_and_query.to_string(),
                status,
                body: String::from_utf8_lossy(&body).trim().to_string(),
            });
        }
        Ok(NdjsonStream {
            path: path_and_query.to_string(),
            body: rsp.into_body(),
            buf: BytesMut::new(),
            _t: std::marker::PhantomData,
        })
    }
}

/// The bundle of `id`'s trust domain with the root `ca_pem`: what a controller's serving
/// certificate is verified against.
fn root_bundle(id: &SpiffeId, cluster: &str, ca_pem: &str) -> TrustBundle {
    TrustBundle {
        trust_domain: id.trust_domain.clone(),
        cluster: cluster.to_string(),
        ca_pem: ca_pem.to_string(),
    }
}

/// A stream of newline-delimited JSON messages.
pub struct NdjsonStream<T> {
    path: String,
    body: Incoming,
    buf: BytesMut,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> NdjsonStream<T> {
    /// The next message; `Ok(None)` when the controller closed the stream.
    pub async fn next(&mut self) -> Result<Option<T>, ControlError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                let line = &line[..pos];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(line).map(Some).map_err(|e| {
                    ControlError::Malformed {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    }
                });
            }
            if self.buf.len() > MAX_STREAM_MESSAGE {
                return Err(ControlError::Malformed {
                    path: self.path.clone(),
                    reason: format!("message exceeds {MAX_STREAM_MESSAGE} bytes"),
                });
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(ControlError::Malformed {
                        path: self.path.clone(),
                        reason: format!("stream broke: {e}"),
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
            }
        }
    }
}
