//! The one accept-and-serve loop of the mesh's HTTP listeners (admin, sidecar outbound and
//! inbound, the demo app, the controller's control API): accept with `TCP_NODELAY` up to the
//! listener's [`ConnectionCap`], an optional bounded TLS handshake, then HTTP/1.1 or HTTP/2
//! (auto-detected) answered by a `tower` service. Connections live in the loop's task set, so
//! dropping the loop's future closes every connection it accepted.
//!
//! Every connection is served within [`ServeLimits`], before and around the service, so no
//! layer above can forget them:
//! - request heads: over the limit, a 431 naming it (`x-mesh-error: header-too-large` or
//!   `too-many-headers`); past twice the limit hyper or h2 refuse the head unparsed (see
//!   [`limits`]). h2's header list bound also ends CONTINUATION floods;
//! - slowloris: an HTTP/1 head (hyper's header read timeout) or a first HTTP/2 request
//!   (preface, SETTINGS, HEADERS: [`activity`]) not complete in time closes the connection;
//! - idle connections (nothing in flight) are closed at the idle timeout, HTTP/2 with GOAWAY;
//! - HTTP/2: concurrent streams, rapid reset (CVE-2023-44487: streams reset before they were
//!   picked up), streams reset for protocol errors, and keep-alive pings that find a vanished
//!   peer.

mod activity;
mod cap;
mod limits;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower::{Service, ServiceExt};

use crate::http::BoxBody;
use activity::{Activity, CountingExecutor, IdleEnd, InFlightBody};
pub use cap::{
    ConnectionCap, DEFAULT_MAX_ADMIN_CONNECTIONS, DEFAULT_MAX_CONNECTIONS, ListenerLabels,
    RefusedConnections,
};
pub use limits::{
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEP_ALIVE_INTERVAL,
    DEFAULT_KEEP_ALIVE_TIMEOUT, DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS, DEFAULT_MAX_LOCAL_ERROR_RESET_STREAMS,
    DEFAULT_MAX_PENDING_ACCEPT_RESET_STREAMS, ServeLimits, head_bytes, oversized_head,
};

/// Bound on a TLS handshake of an accepted connection: a peer that stalls it holds a socket
/// for nothing.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What answers the requests of a served connection (bodies of type `B`, hyper's by default):
/// a `tower` service, cloned per connection (and per request), that never fails (errors are
/// answers) and can run on another task. Every such service is one (a blanket implementation):
/// this only names the bounds once, here and for the stacks built on them (the sidecar's).
pub trait HttpService<B = Incoming>:
    Service<Request<B>, Response = Response<BoxBody>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: Service<
            Request<B>,
            Response = Response<BoxBody>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The bounds of a listener: per connection, and how many connections at once.
#[derive(Debug, Clone)]
pub struct Listening {
    /// What a client may make one connection hold.
    pub limits: ServeLimits,
    /// How many connections the listener holds at once.
    pub cap: ConnectionCap,
}

impl Listening {
    /// `limits` per connection, no cap on connections.
    pub fn uncapped(limits: ServeLimits) -> Self {
        Self {
            limits,
            cap: ConnectionCap::unlimited(),
        }
    }
}

/// Accepts connections on `listener` and runs `connection` for each in the loop's task set,
/// until the returned future is dropped, which also ends every connection task. Accept errors
/// are logged with `role` and retried (see [`crate::telemetry::accept`]). No cap.
pub async fn accept_loop<F, Fut>(listener: TcpListener, role: &'static str, connection: F)
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    accept_loop_capped(listener, role, ConnectionCap::unlimited(), connection).await
}

/// [`accept_loop`] holding at most `cap` connections: one more is closed as soon as it is
/// accepted, and counted.
pub async fn accept_loop_capped<F, Fut>(
    listener: TcpListener,
    role: &'static str,
    cap: ConnectionCap,
    mut connection: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            (stream, peer) = crate::telemetry::accept(&listener, role) => {
                // Ended connections whose task the loop has not reaped yet do not count.
                while connections.try_join_next().is_some() {}
                if cap.admit(connections.len()) {
                    connections.spawn(connection(stream, peer));
                } else {
                    tracing::debug!(%peer, role, max = cap.max(), "connection refused: listener full");
                    drop(stream);
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves plain-text HTTP/1.1 and HTTP/2 (prior knowledge) on `listener` with `service`,
/// within the default [`ServeLimits`] and no connection cap, until the future is dropped.
pub async fn serve_plain<S>(listener: TcpListener, role: &'static str, service: S)
where
    S: HttpService,
{
    serve_plain_with(
        listener,
        role,
        ServeLimits::default(),
        ConnectionCap::unlimited(),
        service,
    )
    .await
}

/// [`serve_plain`] within `limits`, holding at most `cap` connections.
pub async fn serve_plain_with<S>(
    listener: TcpListener,
    role: &'static str,
    limits: ServeLimits,
    cap: ConnectionCap,
    service: S,
) where
    S: HttpService,
{
    accept_loop_capped(listener, role, cap, move |stream, peer| {
        serve_connection_with(stream, peer, role, limits, service.clone())
    })
    .await
}

/// The TLS handshake of an accepted connection, bounded by [`HANDSHAKE_TIMEOUT`]; a refusal or
/// a stall is logged with the peer and `role`, and gives `None`.
pub async fn tls_handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    role: &'static str,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::warn!(%peer, role, error = %e, "TLS handshake refused");
            None
        }
        Err(_) => {
            tracing::warn!(%peer, role, "TLS handshake timed out");
            None
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 (detected from the first bytes) on one connection, answering each
/// request with a clone of `service`, until the client closes it. HTTP/1.1 upgrades and HTTP/2
/// extended CONNECT are accepted: a service that answers 101 (or 200 to the CONNECT) takes the
/// connection or stream over with `hyper::upgrade::on`. Within the default [`ServeLimits`].
pub async fn serve_connection<I, S>(io: I, peer: SocketAddr, role: &'static str, service: S)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService,
{
    serve_connection_with(io, peer, role, ServeLimits::default(), service).await
}

/// [`serve_connection`] within `limits`.
pub async fn serve_connection_with<I, S>(
    io: I,
    peer: SocketAddr,
    role: &'static str,
    limits: ServeLimits,
    service: S,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService,
{
    serve_on(io, peer, role, limits, None, service).await
}

/// Fixed HTTP/2 flow-control windows, for a listener that carries bulk streams (the gateway's
/// tunnel port) rather than hyper's adaptive ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Windows {
    /// Each stream's receive window, in bytes.
    pub stream: u32,
    /// The connection's receive window, in bytes.
    pub connection: u32,
}

/// Serves HTTP/2 only (prior knowledge, or ALPN `h2` already agreed) on one connection with
/// `windows`, within `limits`, as [`serve_connection_with`] does.
pub async fn serve_http2_connection_with<I, S>(
    io: I,
    peer: SocketAddr,
    role: &'static str,
    limits: ServeLimits,
    windows: Http2Windows,
    service: S,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService,
{
    serve_on(io, peer, role, limits, Some(windows), service).await
}

/// One connection served within `limits`: HTTP/1.1 or HTTP/2 detected, or HTTP/2 only with
/// `http2_windows`.
async fn serve_on<I, S>(
    io: I,
    peer: SocketAddr,
    role: &'static str,
    limits: ServeLimits,
    http2_windows: Option<Http2Windows>,
    service: S,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService,
{
    let activity = Activity::new(tokio::time::Instant::now());
    let counted = activity.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let in_flight = counted.begin();
        let refusal = oversized_head(&req, &limits);
        let service = service.clone();
        async move {
            let rsp = match refusal {
                Some(rsp) => {
                    tracing::debug!(%peer, role, "request head over the limits: 431");
                    rsp
                }
                None => match service.oneshot(req).await {
                    Ok(rsp) => rsp,
                    Err(never) => match never {},
                },
            };
            Ok::<_, Infallible>(rsp.map(|body| InFlightBody::new(body, in_flight)))
        }
    });
    let builder = builder(&limits, http2_windows, CountingExecutor(activity.clone()));
    // With upgrades, an HTTP/1.1 request's connection can be handed over after a 101 answer
    // (`hyper::upgrade::on`); without, the 101 would be answered and the connection closed.
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(connection);
    let ended = tokio::select! {
        result = connection.as_mut() => Some(result),
        end = activity.idle(&limits) => match end {
            IdleEnd::NoRequest => {
                tracing::debug!(%peer, role, "no complete request within the header read timeout: closed");
                return;
            }
            IdleEnd::Idle => {
                tracing::debug!(%peer, role, "idle connection: closing");
                connection.as_mut().graceful_shutdown();
                None
            }
        },
    };
    let result = match ended {
        Some(result) => result,
        // A client that does not let a graceful close finish (an HTTP/2 GOAWAY's ping never
        // answered) is cut after one more header read timeout.
        None => match tokio::time::timeout(limits.header_read_timeout, connection).await {
            Ok(result) => result,
            Err(_) => return,
        },
    };
    if let Err(e) = result {
        tracing::debug!(%peer, role, error = %e, "connection ended with an error");
    }
}

/// hyper's HTTP/1.1 + HTTP/2 server within `limits` (HTTP/2 only with `http2_windows`),
/// spawning HTTP/2 stream tasks on `executor`.
fn builder(
    limits: &ServeLimits,
    http2_windows: Option<Http2Windows>,
    executor: CountingExecutor,
) -> auto::Builder<CountingExecutor> {
    let mut builder = auto::Builder::new(executor);
    // A head that outgrows the read buffer, or has too many fields, is answered 431 by hyper
    // itself, unparsed: these are the hard bounds, twice ours (see `limits`). The timer bounds
    // how long a client may take to send a request head (slowloris): at the timeout hyper
    // closes the connection without an answer.
    builder
        .http1()
        .max_buf_size(limits.hard_header_bytes())
        .max_headers(limits.hard_headers())
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // Over the header list size, h2 answers the stream 431 and resets it (REFUSED_STREAM); the
    // connection and its other streams go on. The same bound caps the CONTINUATION frames of
    // one header block. Streams reset by the client before they are picked up (rapid reset)
    // or by the server for protocol errors past their bounds end the connection with GOAWAY.
    builder
        .http2()
        .max_header_list_size(u32::try_from(limits.hard_header_bytes()).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.max_local_error_reset_streams)
        .keep_alive_interval(limits.keep_alive_interval)
        .keep_alive_timeout(limits.keep_alive_timeout);
    // Extended CONNECT (RFC 8441): the sidecars carry an HTTP/1.1 `Upgrade` (WebSocket) across
    // their HTTP/2 hop as a CONNECT with `:protocol`, which a server must announce it accepts.
    builder
        .http2()
        .adaptive_window(true)
        .enable_connect_protocol()
        .timer(TokioTimer::new());
    match http2_windows {
        None => builder,
        Some(windows) => {
            let mut builder = builder.http2_only();
            builder
                .http2()
                .adaptive_window(false)
                .initial_stream_window_size(windows.stream)
                .initial_connection_window_size(windows.connection);
            builder
        }
    }
}

#[cfg(test)]
mod tests;
