//! A fake cluster controller speaking the real control API over mTLS HTTP/2: it signs the
//! gateway's CSR, streams `GatewaySnapshot`s, records `GatewayReport`s and federation POSTs.
//! It can be stopped (every connection dropped) and restarted on the same port.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::api::{ALPN_H2, CsrRequest, CsrResponse, GatewayReport, GatewaySnapshot};
use mesh_core::catalog::CatalogMessage;
use mesh_core::http::{BoxBody, BoxError, read_json, text};
use mesh_core::identity::{SpiffeId, TrustStore, server_config};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::Cluster;

/// What the fake controller saw, and what it serves.
pub(crate) struct ControllerState {
    pub token: String,
    pub snapshots: watch::Sender<Option<GatewaySnapshot>>,
    pub reports: Mutex<Vec<GatewayReport>>,
    pub federation: Mutex<Vec<(String, CatalogMessage)>>,
    pub subscriptions: Mutex<u32>,
    pub conflict_next: Mutex<bool>,
}

/// The running fake controller.
pub(crate) struct FakeController {
    pub addr: SocketAddr,
    pub state: Arc<ControllerState>,
    cluster_tls: Arc<rustls::ServerConfig>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl FakeController {
    pub(crate) async fn start(cluster: &Cluster, token: &str) -> Result<Self> {
        let id = cluster.ca.issue(
            &SpiffeId::controller(&cluster.bundle.trust_domain),
            Duration::from_secs(3600),
        )?;
        let tls = server_config(
            &id,
            TrustStore::new(std::slice::from_ref(&cluster.bundle))?,
            &[ALPN_H2],
            true,
        )?;
        let state = Arc::new(ControllerState {
            token: token.to_string(),
            snapshots: watch::channel(None).0,
            reports: Mutex::new(Vec::new()),
            federation: Mutex::new(Vec::new()),
            subscriptions: Mutex::new(0),
            conflict_next: Mutex::new(false),
        });
        let mut me = Self {
            addr: "127.0.0.1:0".parse()?,
            state,
            cluster_tls: Arc::new(tls),
            server: None,
        };
        let listener = TcpListener::bind(me.addr).await?;
        me.addr = listener.local_addr()?;
        me.serve(listener, cluster);
        Ok(me)
    }

    fn serve(&mut self, listener: TcpListener, cluster: &Cluster) {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.cluster_tls.clone());
        let state = self.state.clone();
        let signer = Arc::new(Signer {
            ca: cluster.ca.clone(),
            bundle: cluster.bundle.clone(),
        });
        self.server = Some(tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, state, signer) = (acceptor.clone(), state.clone(), signer.clone());
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let (state, signer) = (state.clone(), signer.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(handle(&state, &signer, req).await)
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
            // Dropping `conns` aborts every connection.
        }));
    }

    /// Drops the listener and every connection, as if the controller died.
    pub(crate) fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }

    /// Serves again on the same port.
    pub(crate) async fn restart(&mut self, cluster: &Cluster) -> Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener, cluster);
        Ok(())
    }

    pub(crate) fn publish(&self, snapshot: GatewaySnapshot) {
        self.state.snapshots.send_replace(Some(snapshot));
    }

    pub(crate) fn last_report(&self) -> Option<GatewayReport> {
        self.state.reports.lock().unwrap().last().cloned()
    }

    pub(crate) fn report_count(&self) -> usize {
        self.state.reports.lock().unwrap().len()
    }

    pub(crate) fn federation(&self) -> Vec<(String, CatalogMessage)> {
        self.state.federation.lock().unwrap().clone()
    }

    pub(crate) fn subscriptions(&self) -> u32 {
        *self.state.subscriptions.lock().unwrap()
    }
}

impl Drop for FakeController {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Signer {
    ca: Arc<mesh_core::identity::ClusterCa>,
    bundle: mesh_core::identity::TrustBundle,
}

async fn handle(
    state: &ControllerState,
    signer: &Signer,
    req: Request<Incoming>,
) -> Response<BoxBody> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/v1/certificates") => {
            let auth = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if auth != format!("Bearer {}", state.token) {
                return text(StatusCode::UNAUTHORIZED, "bad join token");
            }
            let csr: CsrRequest = match read_json(req.into_body(), 64 * 1024).await {
                Ok(c) => c,
                Err(e) => return e.response(),
            };
            match signer
                .ca
                .sign_csr(&csr.csr_pem, Duration::from_secs(3600), |_| Ok(()))
            {
                Ok((_, pem)) => mesh_core::http::json(
                    StatusCode::OK,
                    &CsrResponse {
                        cert_chain_pem: pem,
                        trust_bundle: signer.bundle.clone(),
                    },
                ),
                Err(e) => text(StatusCode::FORBIDDEN, e.to_string()),
            }
        }
        (Method::GET, "/v1/gateway/stream") => {
            *state.subscriptions.lock().unwrap() += 1;
            let (tx, rx) = mpsc::channel::<Bytes>(8);
            let mut snapshots = state.snapshots.subscribe();
            tokio::spawn(async move {
                loop {
                    let current = snapshots.borrow_and_update().clone();
                    if let Some(s) = current {
                        let mut line = serde_json::to_vec(&s).expect("snapshot encodes");
                        line.push(b'\n');
                        if tx.send(Bytes::from(line)).await.is_err() {
                            return;
                        }
                    }
                    if snapshots.changed().await.is_err() {
                        return;
                    }
                }
            });
            use http_body_util::BodyExt;
            Response::new(ChannelBody(rx).boxed())
        }
        (Method::PUT, "/v1/gateway/report") => {
            match read_json::<GatewayReport, _>(req.into_body(), 1 << 20).await {
                Ok(r) => {
                    state.reports.lock().unwrap().push(r);
                    text(StatusCode::OK, "ok")
                }
                Err(e) => e.response(),
            }
        }
        (Method::POST, p) if p.starts_with("/v1/federation/") => {
            let peer = p.trim_start_matches("/v1/federation/").to_string();
            match read_json::<CatalogMessage, _>(req.into_body(), 16 << 20).await {
                Ok(msg) => {
                    let conflict = std::mem::take(&mut *state.conflict_next.lock().unwrap());
                    state.federation.lock().unwrap().push((peer, msg));
                    if conflict {
                        text(
                            StatusCode::CONFLICT,
                            "delta does not apply; snapshot needed",
                        )
                    } else {
                        text(StatusCode::OK, "applied")
                    }
                }
                Err(e) => e.response(),
            }
        }
        _ => text(StatusCode::NOT_FOUND, format!("no route {path}")),
    }
}

/// A response body fed from a channel (one NDJSON line per message).
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}
