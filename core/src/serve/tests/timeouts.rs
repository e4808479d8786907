//! Slow and idle clients: closed at the header read timeout or the idle timeout, never while
//! a request is in flight.

use super::*;

/// The client connection preface of HTTP/2 (RFC 9113, section 3.4) and an empty SETTINGS.
const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fn short_timeouts() -> ServeLimits {
    ServeLimits {
        header_read_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(400),
        ..ServeLimits::default()
    }
}

/// Opens a connection, writes `bytes`, and checks the server closes it after the header read
/// timeout (not before) and well before 5 s.
async fn closed_at_the_header_timeout(addr: SocketAddr, bytes: &[u8]) {
    // Started before the connection exists, so the server's clock starts later.
    let started = tokio::time::Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    assert_closed_within(&mut stream, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "not before the timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_client_that_stalls_its_http1_head_is_closed_at_the_header_timeout() {
    let (addr, server) = limited_server(short_timeouts()).await;
    closed_at_the_header_timeout(addr, b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ").await;
    server.abort();
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_closed_at_the_header_timeout() {
    let (addr, server) = limited_server(short_timeouts()).await;
    closed_at_the_header_timeout(addr, b"").await;
    // Part of the HTTP/2 preface: still deciding which protocol it is.
    closed_at_the_header_timeout(addr, &H2_PREFACE_AND_SETTINGS[..10]).await;
    server.abort();
}

#[tokio::test]
async fn an_http2_client_that_never_sends_a_request_is_closed_at_the_header_timeout() {
    let (addr, server) = limited_server(short_timeouts()).await;
    closed_at_the_header_timeout(addr, H2_PREFACE_AND_SETTINGS).await;
    server.abort();
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_its_requests() {
    let (addr, server) = limited_server(short_timeouts()).await;
    let (mut sender, conn) = h2_client(addr).await;
    let rsp = sender
        .send_request(Request::new(crate::http::empty()))
        .await
        .unwrap();
    assert_eq!(rsp.status(), http::StatusCode::OK);
    drop(rsp);
    // GOAWAY, then the server closes: the client's connection task ends.
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle connection is closed well before 5 s")
        .unwrap()
        .ok();
    server.abort();
}

#[tokio::test]
async fn a_request_in_flight_keeps_its_connection_past_the_idle_timeout() {
    let (addr, server) = server_with(
        short_timeouts(),
        ConnectionCap::unlimited(),
        Duration::from_millis(1200),
    )
    .await;
    let (mut sender, _conn) = h2_client(addr).await;
    let rsp = sender
        .send_request(Request::new(crate::http::empty()))
        .await
        .expect("answered after three idle timeouts: the request kept its connection");
    assert_eq!(rsp.status(), http::StatusCode::OK);
    server.abort();
}

#[tokio::test]
async fn an_http2_only_connection_serves_and_closes_a_silent_client_at_the_header_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = tower::service_fn(|_req: Request<Incoming>| async move {
        Ok::<_, Infallible>(text(http::StatusCode::OK, "ok"))
    });
    let windows = Http2Windows {
        stream: 4 * 1024 * 1024,
        connection: 16 * 1024 * 1024,
    };
    let server = tokio::spawn(accept_loop(listener, "test", move |stream, peer| {
        serve_http2_connection_with(stream, peer, "test", short_timeouts(), windows, service)
    }));
    closed_at_the_header_timeout(addr, H2_PREFACE_AND_SETTINGS).await;

    let (mut sender, _conn) = h2_client(addr).await;
    let rsp = sender
        .send_request(Request::new(crate::http::empty()))
        .await
        .unwrap();
    assert_eq!(rsp.status(), http::StatusCode::OK);
    server.abort();
}
