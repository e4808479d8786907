//! The one accept-and-serve loop of the mesh's HTTP listeners (admin, sidecar outbound and
//! inbound, the demo app): accept with `TCP_NODELAY`, an optional bounded TLS handshake, then
//! HTTP/1.1 or HTTP/2 (auto-detected) answered by a `tower` service. Connections live in the
//! loop's task set, so dropping the loop's future closes every connection it accepted.
//!
//! Every connection is served within [`ServeLimits`]: a bound on the request head's size
//! (HTTP/1: answered `431 Request Header Fields Too Large` by hyper itself; HTTP/2: the stream
//! is answered 431 and reset with `REFUSED_STREAM` by h2) and on the time a client may take to
//! send an HTTP/1 head (slowloris: the connection is closed without an answer). These hold
//! before the request reaches any service, so no layer above can forget them.

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

/// Default bound on a request's header bytes, HTTP/1 head and HTTP/2 header list alike: 64 KiB,
/// close to Envoy's 60 KiB default and above nginx's 4 x 8 KiB, roomy for large cookies and
/// JWTs, yet small enough that a connection cannot be made to hold hundreds of KiB (hyper's
/// own HTTP/1 default is about 400 KiB) before a service sees its request. The same value on
/// both protocols, so a head the outbound sidecar accepts over HTTP/1 also crosses its HTTP/2
/// hop to the inbound sidecar.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// Default bound on the number of HTTP/1 header fields: 100, hyper's own default and far above
/// what real clients send (a browser sends about 20).
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// Default time an HTTP/1 client has to send a complete request head: 30 s, hyper's default,
/// long enough for a slow mobile link, short enough that a slowloris client trickling bytes
/// holds its socket for seconds, not forever.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// hyper's smallest HTTP/1 read buffer (it refuses smaller ones): a lower
/// [`ServeLimits::max_header_bytes`] is raised to this for HTTP/1.
const MIN_HTTP1_BUF: usize = 8 * 1024;

/// What a client may make one connection hold before its request reaches the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Largest request head in bytes: hyper's HTTP/1 read buffer (at least 8 KiB) and the
    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`. Over it: 431.
    pub max_header_bytes: usize,
    /// Most header fields in an HTTP/1 request. Over it: 431.
    pub max_headers: usize,
    /// Time an HTTP/1 client has to send a complete request head; then the connection closes.
    pub header_read_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

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
/// within the default [`ServeLimits`], until the future is dropped.
pub async fn serve_plain<S>(listener: TcpListener, role: &'static str, service: S)
where
    S: Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    serve_plain_with(listener, role, ServeLimits::default(), service).await
}

/// [`serve_plain`] within `limits`.
pub async fn serve_plain_with<S>(
    listener: TcpListener,
    role: &'static str,
    limits: ServeLimits,
    service: S,
) where
    S: Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    accept_loop(listener, role, move |stream, peer| {
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
    S: Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
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
    S: Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| service.clone().oneshot(req));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A head that outgrows the read buffer, or has too many fields, is answered 431 by hyper
    // itself. The timer bounds how long a client may take to send its request head
    // (slowloris): at the timeout hyper closes the connection without an answer.
    builder
        .http1()
        .max_buf_size(limits.max_header_bytes.max(MIN_HTTP1_BUF))
        .max_headers(limits.max_headers)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // Over the header list size, h2 answers the stream 431 and resets it (REFUSED_STREAM); the
    // connection and its other streams go on.
    builder
        .http2()
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
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

    /// A server on an ephemeral port within `limits`, answering 200 to everything.
    async fn limited_server(limits: ServeLimits) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = tower::service_fn(|_req: Request<Incoming>| async move {
            Ok::<_, Infallible>(text(http::StatusCode::OK, "ok"))
        });
        let server = tokio::spawn(serve_plain_with(listener, "test", limits, service));
        (addr, server)
    }

    /// Sends an HTTP/1.1 request whose one extra header carries `value_len` bytes and gives the
    /// status line answered. The request is written by a separate task: the server answers
    /// (and stops reading) before the whole head is sent when it is too large.
    async fn status_for_header_of(addr: SocketAddr, value_len: usize) -> String {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let head = format!(
            "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(value_len)
        );
        let write = tokio::spawn(async move {
            // A write cut short by the server's close is expected for a refused head.
            let _ = writer.write_all(head.as_bytes()).await;
            writer
        });
        let mut answer = Vec::new();
        let mut buf = vec![0; 4096];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf))
                .await
                .expect("an answer within 5 s")
                .unwrap();
            assert!(n > 0, "closed without an answer");
            answer.extend_from_slice(&buf[..n]);
        }
        drop(write.await);
        let answer = String::from_utf8_lossy(&answer).to_string();
        answer.lines().next().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn a_head_over_the_limit_is_answered_431_and_one_under_it_is_served() {
        let (addr, server) = limited_server(ServeLimits::default()).await;
        assert_eq!(
            status_for_header_of(addr, 100 * 1024).await,
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        assert_eq!(
            status_for_header_of(addr, 32 * 1024).await,
            "HTTP/1.1 200 OK"
        );
        server.abort();
    }

    #[tokio::test]
    async fn too_many_header_fields_are_answered_431() {
        let limits = ServeLimits {
            max_headers: 10,
            ..ServeLimits::default()
        };
        let (addr, server) = limited_server(limits).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut head = String::from("GET / HTTP/1.1\r\nhost: x\r\n");
        for i in 0..20 {
            head.push_str(&format!("x-h{i}: v\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        server.abort();
    }

    #[tokio::test]
    async fn a_client_that_stalls_its_head_is_closed_at_the_header_timeout() {
        let limits = ServeLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ServeLimits::default()
        };
        let (addr, server) = limited_server(limits).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // Half a head, then nothing.
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let mut buf = vec![0; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the server closes the stalled connection well before 5 s")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "not before the timeout: {:?}",
            started.elapsed()
        );
        server.abort();
    }

    #[tokio::test]
    async fn an_http2_header_list_over_the_limit_is_answered_431_and_the_connection_serves_on() {
        let (addr, server) = limited_server(ServeLimits::default()).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let request = |value_len: usize| {
            Request::builder()
                .uri("http://x/")
                .header("x-big", "a".repeat(value_len))
                .body(crate::http::empty())
                .unwrap()
        };
        match sender.send_request(request(100 * 1024)).await {
            Ok(rsp) => assert_eq!(
                rsp.status(),
                http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            ),
            Err(e) => panic!("expected a 431 answer, got {e}"),
        }
        sender.ready().await.unwrap();
        // 32 KiB: over h2's 16 KiB default, within the 64 KiB limit.
        let rsp = sender.send_request(request(32 * 1024)).await.unwrap();
        assert_eq!(rsp.status(), http::StatusCode::OK);
        server.abort();
    }
}
