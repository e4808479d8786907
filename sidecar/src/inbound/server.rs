//! The whole inbound walk, in phases: accept -> TLS handshake (mandatory client certificate,
//! verified against every trust bundle known: own and linked clusters) -> HTTP/2 -> for each
//! request: rewrite to origin form with Host -> forward to the app -> answer with
//! `x-mesh-cluster`, also on errors. A failure in any phase is logged with the peer and cause.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use mesh_core::api::{HEADER_MESH_ERROR, HEADER_SERVED_BY_CLUSTER};
use mesh_core::http::{BoxBody, BoxError, text};
use mesh_core::identity::peer_spiffe_id;
use mesh_core::names::ServiceKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::app::{AppClient, AppError};
use crate::headers::strip_hop_by_hop;
use crate::state::SidecarState;

/// Bound on the TLS handshake of an inbound connection: a peer that stalls it holds a socket
/// for nothing.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every inbound request needs.
struct Inbound {
    state: Arc<SidecarState>,
    service: ServiceKey,
    app: AppClient,
    cluster_header: HeaderValue,
}

/// Serves inbound mTLS on `listener` for `service`, forwarding to the app at `app`, until the
/// future is dropped, which also closes every connection it accepted.
pub async fn serve(
    listener: TcpListener,
    state: Arc<SidecarState>,
    service: ServiceKey,
    app: SocketAddr,
) {
    let acceptor = TlsAcceptor::from(state.identity().server.clone());
    let cluster_header = HeaderValue::from_str(state.cluster())
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    let inbound = Arc::new(Inbound {
        app: AppClient::new(app, state.connect_timeout()),
        state,
        service,
        cluster_header,
    });
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            (stream, peer) = mesh_core::telemetry::accept(&listener, "inbound") => {
                connections.spawn(connection(inbound.clone(), acceptor.clone(), stream, peer));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(
    inbound: Arc<Inbound>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    // Handshake: the verifier's message names an unlinked trust domain and what to run.
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "inbound TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "inbound TLS handshake timed out");
            return;
        }
    };
    let client_id = peer_spiffe_id(tls.get_ref().1.peer_certificates())
        .map(|id| id.to_string())
        .unwrap_or_else(|| "unknown".into());
    tracing::debug!(%peer, client = %client_id, "inbound connection");
    let svc = hyper::service::service_fn(move |req| {
        let inbound = inbound.clone();
        async move { Ok::<_, std::convert::Infallible>(inbound.handle(req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timer bounds how long a client may take to send its request head (slowloris).
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .adaptive_window(true)
        .timer(TokioTimer::new());
    if let Err(e) = builder.serve_connection(TokioIo::new(tls), svc).await {
        tracing::debug!(%peer, error = %e, "inbound connection ended with an error");
    }
}

impl Inbound {
    async fn handle(&self, req: Request<Incoming>) -> Response<BoxBody> {
        let started = tokio::time::Instant::now();
        let mut rsp = match self.forward(req).await {
            Ok(rsp) => rsp,
            Err(e) => {
                tracing::info!(service = %self.service, error = %e, "app did not answer");
                self.error_response(&e)
            }
        };
        rsp.headers_mut()
            .insert(HEADER_SERVED_BY_CLUSTER, self.cluster_header.clone());
        self.state.metrics().observe_request(
            "inbound",
            &self.service.to_string(),
            self.state.cluster(),
            rsp.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        rsp
    }

    async fn forward(&self, req: Request<Incoming>) -> Result<Response<BoxBody>, InboundError> {
        let (mut parts, body) = req.into_parts();
        // Origin form with Host: what a plain HTTP/1.1 app expects.
        let host = parts.uri.authority().map(|a| a.as_str().to_string());
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = path.parse::<Uri>().map_err(|_| InboundError::BadUri)?;
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        if let Some(host) = host
            && let Ok(value) = HeaderValue::from_str(&host)
        {
            parts.headers.insert(http::header::HOST, value);
        }
        let req = Request::from_parts(parts, body.map_err(BoxError::from).boxed());
        let rsp = tokio::time::timeout(self.state.request_timeout(), self.app.send(req))
            .await
            .map_err(|_| InboundError::Timeout(self.state.request_timeout()))??;
        let (mut parts, body) = rsp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed(),
        ))
    }

    fn error_response(&self, e: &InboundError) -> Response<BoxBody> {
        let (status, label) = match e {
            InboundError::App(AppError::Unavailable { .. } | AppError::ConnectTimeout { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "app-unavailable")
            }
            InboundError::App(AppError::Protocol { .. }) => {
                (StatusCode::BAD_GATEWAY, "app-protocol-error")
            }
            InboundError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "app-timeout"),
            InboundError::BadUri => (StatusCode::BAD_REQUEST, "bad-request"),
        };
        let mut rsp = text(
            status,
            format!(
                "service {} in cluster {}: {e}",
                self.service,
                self.state.cluster()
            ),
        );
        rsp.headers_mut()
            .insert(HEADER_MESH_ERROR, HeaderValue::from_static(label));
        rsp
    }
}

/// Why an inbound request got no answer from the app.
#[derive(Debug, thiserror::Error)]
enum InboundError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("the app did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the request path is not a valid origin-form URI")]
    BadUri,
}
