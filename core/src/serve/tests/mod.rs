//! The serve loop against real sockets: heads, timeouts, idle connections and caps.

mod cap;
mod heads;
mod timeouts;

use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

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
    assert_closed_within(&mut stream, Duration::from_secs(5)).await;
}

/// A server on an ephemeral port within `limits` and `cap`, answering 200 `ok` to everything
/// after `delay`.
async fn server_with(
    limits: ServeLimits,
    cap: ConnectionCap,
    delay: Duration,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = tower::service_fn(move |_req: Request<Incoming>| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, Infallible>(text(http::StatusCode::OK, "ok"))
    });
    let server = tokio::spawn(serve_plain_with(listener, "test", limits, cap, service));
    (addr, server)
}

/// A server within `limits`, no cap, answering at once.
async fn limited_server(limits: ServeLimits) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    server_with(limits, ConnectionCap::unlimited(), Duration::ZERO).await
}

/// An HTTP/2 (prior knowledge) client connection to `addr`: its sender, and the task driving
/// the connection, which ends when the server closes it.
async fn h2_client(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<BoxBody>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    (sender, tokio::spawn(conn))
}

/// Reads until the peer closes (or resets) the connection; panics if it stays open past
/// `within`. Gives what was read.
async fn assert_closed_within(io: &mut (impl AsyncRead + Unpin), within: Duration) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = vec![0; 16 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Err(_) => panic!("the connection is still open after {within:?}"),
            Ok(Ok(0) | Err(_)) => return seen,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one HTTP/1.1 answer (head and a `content-length` body) from `io`.
async fn read_h1_answer(io: &mut (impl AsyncRead + Unpin)) -> String {
    let mut answer = Vec::new();
    let mut buf = vec![0; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|l| l.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(n > 0, "closed without a whole answer: {text}");
        answer.extend_from_slice(&buf[..n]);
    }
}
