//! Oversized and slow request heads.

use std::time::Duration;

use http::{Method, StatusCode};
use mesh_core::serve::ServeLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::common::*;
use super::{ECHO, Setup, h1_with_header};

#[tokio::test]
async fn a_100_kib_head_is_answered_431_over_http1_and_http2_and_others_are_served() {
    let setup = Setup::start(ServeLimits::default(), 64).await;

    let refused = h1_with_header(setup.outbound, 100 * 1024).await;
    assert_eq!(refused.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(refused.header("x-mesh-error"), Some("header-too-large"));
    assert!(
        refused.text().contains("limit of 65536 bytes"),
        "{refused:?}"
    );

    let mut h2 = h2c(setup.outbound).await.unwrap();
    let req = http::Request::get(ECHO)
        .header("x-big", "a".repeat(100 * 1024))
        .body(mesh_core::http::empty())
        .unwrap();
    let rsp = h2.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(rsp.headers()["x-mesh-error"], "header-too-large");
    assert_eq!(setup.app.hits(), 0, "no refused head reached the app");

    // The same HTTP/2 connection, and new HTTP/1.1 ones, go on serving heads within the limit.
    let ok = h2_send(&mut h2, Method::GET, ECHO, Vec::new())
        .await
        .unwrap();
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    let ok = h1_with_header(setup.outbound, 16 * 1024).await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    assert_eq!(setup.app.hits(), 2);
}

#[tokio::test]
async fn a_client_that_trickles_its_head_is_closed_at_the_header_timeout() {
    let limits = ServeLimits {
        header_read_timeout: Duration::from_secs(1),
        ..ServeLimits::default()
    };
    let setup = Setup::start(limits, 64).await;
    // Started before the connection exists, so the sidecar's clock starts later.
    let started = tokio::time::Instant::now();
    let stream = TcpStream::connect(setup.outbound).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // One header byte every 100 ms: the head never completes.
    let trickle = tokio::spawn(async move {
        let _ = writer
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await;
        let mut pace = tokio::time::interval(Duration::from_millis(100));
        while writer.write_all(b"a").await.is_ok() {
            pace.tick().await;
        }
    });
    let mut buf = vec![0; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf))
        .await
        .expect("the sidecar closes a trickling client well before 5 s");
    assert!(matches!(closed, Ok(0) | Err(_)), "closed without an answer");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "not before the timeout: {took:?}"
    );
    trickle.abort();
    // Others are served.
    let ok = get(setup.outbound, "/").await.unwrap();
    assert_eq!(ok.status, StatusCode::OK);
}
