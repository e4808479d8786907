//! End to end with real processes: local and cross-cluster routing, body integrity over
//! HTTP/1.1 and HTTP/2 across the QUIC path, and the answers to bad requests.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::{Proto, Running, get, send, sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOCAL: &str = "http://echo.demo.svc.clusterset.local/";
const EU: &str = "http://echo.demo.svc.eu-central.clusterset.local/";

#[tokio::test(flavor = "current_thread")]
async fn requests_route_locally_and_across_clusters_with_intact_bodies() {
    let mut run = Running::default_set("routing").await;
    let proxy = run.proxy("us-east");

    let a = get(proxy, LOCAL).await;
    assert_eq!(a.status, StatusCode::OK, "{}\n{}", a.text(), run.logs());
    assert_eq!(a.served_by.as_deref(), Some("us-east"));
    assert!(a.text().contains("cluster=us-east"), "{}", a.text());

    let a = get(proxy, EU).await;
    assert_eq!(a.status, StatusCode::OK, "{}\n{}", a.text(), run.logs());
    assert_eq!(a.served_by.as_deref(), Some("eu-central"));
    assert!(a.text().contains("cluster=eu-central"), "{}", a.text());

    // Bodies cross sidecar -> gateway -> QUIC -> gateway -> sidecar -> app and back, unchanged.
    let sizes = [0usize, 1024, 1024 * 1024, 64 * 1024 * 1024];
    for proto in [Proto::Http1, Proto::Http2] {
        for size in sizes {
            let body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let digest = sha256(&body);
            let a = send(proxy, proto, "POST", EU, Bytes::from(body))
                .await
                .unwrap_or_else(|e| panic!("{proto:?} {size} B: {e}\n{}", run.logs()));
            assert_eq!(a.status, StatusCode::OK, "{proto:?} {size} B: {}", a.text());
            assert_eq!(
                a.served_by.as_deref(),
                Some("eu-central"),
                "{proto:?} {size} B"
            );
            assert_eq!(a.body.len(), size, "{proto:?} {size} B length");
            assert_eq!(sha256(&a.body), digest, "{proto:?} {size} B digest");
        }
    }

    // An unknown service gets a fast 503 naming it.
    let started = Instant::now();
    let a = get(proxy, "http://nosuch.demo.svc.clusterset.local/").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.text().contains("nosuch.demo"), "{}", a.text());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    // A name that is not a mesh name is refused with the accepted forms.
    let a = get(proxy, "http://www.example.com/").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    assert!(a.text().contains("clusterset.local"), "{}", a.text());

    // Malformed HTTP from the app gets a 400.
    let mut tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(b"GARBAGE \x01\x02 NOT-HTTP\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    let head = String::from_utf8_lossy(&buf);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");

    run.stop().await;
}
