//! The tunnel port: local sidecars open mTLS HTTP/2 connections and send one `CONNECT` per
//! tunnel. Each is handled in phases: check the client, parse, find the link, open a QUIC stream
//! and send the header, read the peer's reply (bounded), and only then answer 200 and splice.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mesh_core::http::{BoxBody, empty};
use mesh_core::identity::{SpiffeId, peer_spiffe_id};
use mesh_core::serve::{ConnectionCap, Http2Windows, ServeLimits, serve_http2_connection_with};
use mesh_core::wire::{StreamHeader, TunnelReply};
use quinn::{RecvStream, SendStream};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::connect_request::{ConnectTarget, IngressError, parse_connect};
use crate::link_set::LinkTable;
use crate::metrics::Metrics;
use crate::quic_endpoint::codes;
use crate::splice::{SpliceCounters, splice};
use crate::stream_io::{HEADER_TIMEOUT, read_reply};

/// Concurrent tunnels per sidecar connection; sidecars pool connections per endpoint, so a
/// few hundred is plenty, and it matches the QUIC stream budget per peer in order of magnitude.
const MAX_TUNNELS_PER_CONNECTION: u32 = 1024;
/// HTTP/2 flow-control windows: large enough that one tunnel is not capped by them on a fast
/// local network.
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// The tunnel port's shared state.
pub(crate) struct TunnelIngress {
    /// The own trust domain: only its workloads may open tunnels.
    pub trust_domain: String,
    /// Peer links.
    pub table: Arc<LinkTable>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// TLS with mandatory client certificates, ALPN h2.
    pub tls: TlsAcceptor,
    /// How many sidecar connections the tunnel port holds at once.
    pub cap: ConnectionCap,
}

/// Accepts sidecar connections until the task is dropped, which also ends them.
pub(crate) async fn serve(ingress: Arc<TunnelIngress>, listener: TcpListener) {
    let cap = ingress.cap.clone();
    mesh_core::serve::accept_loop_capped(listener, "tunnel", cap, move |tcp, remote| {
        serve_connection(ingress.clone(), tcp, remote)
    })
    .await
}

async fn serve_connection(ingress: Arc<TunnelIngress>, tcp: TcpStream, remote: SocketAddr) {
    let Some(tls) = mesh_core::serve::tls_handshake(&ingress.tls, tcp, remote, "tunnel").await
    else {
        return;
    };
    let client = match peer_spiffe_id(tls.get_ref().1.peer_certificates()) {
        Some(id) if id.trust_domain == ingress.trust_domain => Ok(id),
        Some(id) => Err(format!(
            "{id} may not open tunnels: only workloads of trust domain {} may",
            ingress.trust_domain
        )),
        None => Err("the client certificate carries no SPIFFE ID".to_string()),
    };
    if let Err(msg) = &client {
        tracing::warn!(%remote, error = %msg, "tunnel port: client refused");
    }
    let client = Arc::new(client);
    let svc = tower::service_fn(move |req| {
        let ingress = ingress.clone();
        let client = client.clone();
        async move { Ok::<_, Infallible>(handle(&ingress, &client, remote, req).await) }
    });
    // The bounds every listener has (see `mesh_core::serve`): header list size, first request
    // and idle timeouts (an open tunnel keeps its connection), rapid-reset and protocol-error
    // resets end the connection with GOAWAY, keep-alive pings find a sidecar that vanished
    // while its tunnels were open.
    let limits = ServeLimits {
        max_concurrent_streams: MAX_TUNNELS_PER_CONNECTION,
        ..ServeLimits::default()
    };
    let windows = Http2Windows {
        stream: STREAM_WINDOW,
        connection: CONNECTION_WINDOW,
    };
    serve_http2_connection_with(tls, remote, "tunnel", limits, windows, svc).await;
}

async fn handle(
    ingress: &TunnelIngress,
    client: &Result<SpiffeId, String>,
    remote: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<BoxBody> {
    let target = match client
        .clone()
        .map_err(IngressError::Forbidden)
        .and_then(|_| parse_connect(&req))
    {
        Ok(t) => t,
        Err(e) => return fail(ingress, client.as_ref().ok(), None, remote, e),
    };
    match open_tunnel(ingress, &target).await {
        Ok((send, recv)) => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            let peer = target.cluster.clone();
            ingress.metrics.tunnel(&peer, "ingress", "accepted");
            let metrics = ingress.metrics.clone();
            tokio::spawn(async move {
                let _active = metrics.active_tunnel(&peer);
                match on_upgrade.await {
                    Ok(upgraded) => {
                        let counters = SpliceCounters::new(&metrics, &peer);
                        match splice(TokioIo::new(upgraded), send, recv, &counters).await {
                            Ok(done) => {
                                tracing::debug!(%peer, endpoint = %target.endpoint, to_peer = done.to_peer, from_peer = done.from_peer, "tunnel closed")
                            }
                            Err(e) => {
                                tracing::debug!(%peer, endpoint = %target.endpoint, error = %e, "tunnel broke")
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "sidecar went away before the tunnel started");
                        let (mut send, mut recv) = (send, recv);
                        let _ = send.reset(codes::STREAM_REFUSED);
                        let _ = recv.stop(codes::STREAM_REFUSED);
                    }
                }
            });
            Response::new(empty())
        }
        Err(e) => fail(ingress, client.as_ref().ok(), Some(&target), remote, e),
    }
}

fn fail(
    ingress: &TunnelIngress,
    client: Option<&SpiffeId>,
    target: Option<&ConnectTarget>,
    remote: SocketAddr,
    e: IngressError,
) -> Response<BoxBody> {
    // Only linked clusters become label values: a sidecar cannot grow the metric without bound.
    let peer = target
        .map(|t| t.cluster.as_str())
        .filter(|c| ingress.table.get(c).is_some())
        .unwrap_or("unknown");
    ingress.metrics.tunnel(peer, "ingress", e.label());
    tracing::warn!(
        %remote,
        client = %client.map(|c| c.to_string()).unwrap_or_default(),
        cluster = target.map(|t| t.cluster.as_str()).unwrap_or(""),
        service = %target.map(|t| t.service.to_string()).unwrap_or_default(),
        endpoint = ?target.map(|t| t.endpoint),
        reason = e.label(),
        error = %e,
        "tunnel not opened"
    );
    e.response()
}

/// Opens the QUIC stream, sends the header and waits for the peer's verdict.
async fn open_tunnel(
    ingress: &TunnelIngress,
    target: &ConnectTarget,
) -> Result<(SendStream, RecvStream), IngressError> {
    let link = ingress
        .table
        .get(&target.cluster)
        .ok_or_else(|| IngressError::UnknownCluster(target.cluster.clone()))?;
    let conn = link
        .connection()
        .ok_or_else(|| IngressError::LinkDown(target.cluster.clone()))?;
    let mut header = StreamHeader::tunnel(
        &target.cluster,
        &target.service.to_string(),
        target.endpoint,
    );
    header.trace = target.trace.clone();
    let header = header
        .encode()
        .map_err(|e| IngressError::BadRequest(e.to_string()))?;
    let (mut send, mut recv) = tokio::time::timeout(HEADER_TIMEOUT, conn.open_bi())
        .await
        .map_err(|_| {
            IngressError::Tunnel(format!(
                "no stream to {} became available in time",
                target.cluster
            ))
        })?
        .map_err(|_| IngressError::LinkDown(target.cluster.clone()))?;
    if let Err(e) = send.write_all(&header).await {
        return Err(IngressError::Tunnel(format!(
            "sending the tunnel header to {}: {e}",
            target.cluster
        )));
    }
    match read_reply(&mut recv).await {
        Ok(TunnelReply::Accepted) => Ok((send, recv)),
        Ok(TunnelReply::Refused(kind, message)) => Err(IngressError::Refused {
            label: kind.label(),
            message,
        }),
        Err(e) => {
            let _ = send.reset(codes::STREAM_REFUSED);
            let _ = recv.stop(codes::STREAM_REFUSED);
            Err(IngressError::Tunnel(e.to_string()))
        }
    }
}
