//! The control listener: TLS 1.3 accept loop serving HTTP/2 to the [`ControlApi`], with the
//! serving certificate swappable at run time (it is reissued before it expires) and a graceful
//! drain on shutdown.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use mesh_core::identity::peer_spiffe_id;
use mesh_core::serve::{ConnectionCap, ServeLimits};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::control_api::ControlApi;

/// HTTP/2 pings on idle connections, so a vanished sidecar's streams are noticed and freed.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// A ping unanswered for this long closes the connection.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long shutdown waits for open requests before cutting connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections held at once: every sidecar of the cluster keeps one (to one replica),
/// plus the gateway's and passing `mesh` calls; one more is closed at once and counted in
/// `mesh_controller_connections_refused_total{listener="control"}`.
pub(crate) const MAX_CONTROL_CONNECTIONS: usize = 16_384;

/// The TLS configuration new connections get; replaced when the certificate is reissued.
#[derive(Debug, Clone)]
pub(crate) struct ServingTls(Arc<RwLock<Arc<ServerConfig>>>);

impl ServingTls {
    /// Serves with `config`.
    pub(crate) fn new(config: ServerConfig) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(config))))
    }

    /// Uses `config` for new connections from now on.
    pub(crate) fn replace(&self, config: ServerConfig) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// An acceptor with the current configuration.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Accepts TLS connections on `listener` and serves them until `shutdown` flips, then drains.
pub(crate) async fn serve_control(
    listener: TcpListener,
    tls: ServingTls,
    api: ControlApi,
    cap: ConnectionCap,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            (stream, peer) = mesh_core::telemetry::accept(&listener, "control") => {
                // Ended connections whose task the loop has not reaped yet do not count.
                while connections.try_join_next().is_some() {}
                if !cap.admit(connections.len()) {
                    tracing::debug!(%peer, max = cap.max(), "control connection refused: listener full");
                    continue;
                }
                let acceptor = tls.acceptor();
                let api = api.clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    let Some(tls) = mesh_core::serve::tls_handshake(&acceptor, stream, peer, "control").await else {
                        return;
                    };
                    let caller = peer_spiffe_id(tls.get_ref().1.peer_certificates());
                    serve_connection(tls, caller, api, shutdown, peer).await;
                });
            }
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            open = connections.len(),
            "control connections did not drain in time; closing them"
        );
        connections.shutdown().await;
    }
}

async fn serve_connection(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    caller: Option<mesh_core::identity::SpiffeId>,
    api: ControlApi,
    mut shutdown: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) {
    let svc = hyper::service::service_fn(move |req| {
        let api = api.clone();
        let caller = caller.clone();
        async move { Ok::<_, Infallible>(api.handle(req, caller).await) }
    });
    // The serving bounds every listener shares (`mesh_core::serve`): header list size (which
    // also stops CONTINUATION floods), concurrent streams and the rapid-reset limits; the pings
    // are more frequent here, so a vanished sidecar's discovery stream is freed soon.
    let limits = ServeLimits::default();
    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.hard_header_bytes()).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.max_local_error_reset_streams);
    let conn = builder.serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "control connection ended with an error");
    }
}
