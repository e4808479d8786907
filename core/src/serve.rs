//! The one accept-and-serve loop of the mesh's HTTP listeners (admin, sidecar outbound and
//! inbound, the demo app): accept with `TCP_NODELAY`, an optional bounded TLS handshake, then
//! HTTP/1.1 or HTTP/2 (auto-detected) answered by a `tower` service. Connections live in the
//! loop's task set, so dropping the loop's future closes every connection it accepted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower::{Service, ServiceExt};

use crate::http::BoxBody;

/// Bound on a TLS handshake of an accepted connection: a peer that stalls it holds a socket
/// for nothing.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` and runs `connection` for each in the loop's task set,
/// until the returned future is dropped, which also ends every connection task. Accept errors
/// are logged with `role` and retried (see [`crate::telemetry::accept`]).
pub async fn accept_loop<F, Fut>(listener: TcpListener, role: &'static str, mut connection: F)
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            (stream, peer) = crate::telemetry::accept(&listener, role) => {
                connections.spawn(connection(stream, peer));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves plain-text HTTP/1.1 and HTTP/2 (prior knowledge) on `listener` with `service`,
/// until the future is dropped.
pub async fn serve_plain<S>(listener: TcpListener, role: &'static str, service: S)
where
    S: Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    accept_loop(listener, role, move |stream, peer| {
        serve_connection(stream, peer, role, service.clone())
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
/// connection or stream over with `hyper::upgrade::on`.
pub async fn serve_connection<I, S>(io: I, peer: SocketAddr, role: &'static str, service: S)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| service.clone().oneshot(req));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timer bounds how long a client may take to send its request head (slowloris).
    builder.http1().timer(TokioTimer::new());
    // Extended CONNECT (RFC 8441): the sidecars carry an HTTP/1.1 `Upgrade` (WebSocket) across
    // their HTTP/2 hop as a CONNECT with `:protocol`, which a server must announce it accepts.
    builder
        .http2()
        .adaptive_window(true)
        .enable_connect_protocol()
        .timer(TokioTimer::new());
    // With upgrades, an HTTP/1.1 request's connection can be handed over after a 101 answer
    // (`hyper::upgrade::on`); without, the 101 would be answered and the connection closed.
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await
    {
        tracing::debug!(%peer, role, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::http::text;

    #[tokio::test]
    async fn answers_http1_and_closes_connections_when_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = tower::service_fn(|req: Request<Incoming>| async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            Ok::<_, Infallible>(text(http::StatusCode::OK, format!("got {}", body.len())))
        });
        let server = tokio::spawn(serve_plain(listener, "test", service));

        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
            .await
            .unwrap();
        let mut buf = vec![0; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("\r\n\r\ngot 3"), "{head}");

        // Dropping the loop ends the kept-alive connection too.
        server.abort();
        let _ = server.await;
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the connection closes when the loop is dropped")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}
