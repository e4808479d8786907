use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mesh_core::http::{BoxBody, full};
use sha2::{Digest, Sha256};

use super::*;
use crate::scenario::{LoadSpec, Protocol};

/// A stand-in for a client sidecar plus demo app: echoes bodies with their digest, answers 500
/// to ids divisible by 10, corrupts the echo of ids divisible by 7, waits `delay` first.
async fn fake_proxy(delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(mesh_core::admin::serve_http(
        listener,
        move |req: Request<Incoming>| async move {
            tokio::time::sleep(delay).await;
            let id: u64 = req.headers()[HEADER_REQUEST_ID]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let wants_digest = req.headers().contains_key(HEADER_ECHO_DIGEST);
            let mut body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
            let digest = hex::encode(Sha256::digest(&body));
            if id.is_multiple_of(10) {
                let mut r = Response::new(full("boom"));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return r;
            }
            if id.is_multiple_of(7) && !body.is_empty() {
                body[0] ^= 1;
            }
            let mut r: Response<BoxBody> = Response::new(full(body));
            r.headers_mut()
                .insert("x-mesh-cluster", "us-east".parse().unwrap());
            if wants_digest {
                r.headers_mut()
                    .insert(HEADER_ECHO_BODY_SHA256, digest.parse().unwrap());
            }
            r
        },
    ));
    addr
}

fn spec(rate: u32, protocol: Protocol) -> LoadSpec {
    LoadSpec {
        client: "us-east".into(),
        rate,
        protocol,
        method: http::Method::PUT,
        host: "echo.demo.svc.clusterset.local".into(),
        body_bytes: 2000,
        timeout: Duration::from_secs(2),
        capture: false,
    }
}

async fn run_for(proxy: SocketAddr, spec: LoadSpec, d: Duration) -> LoadResult {
    let driver = LoadDriver::start(proxy, spec);
    while driver.elapsed() < d {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    driver.finish().await
}

#[tokio::test]
async fn every_request_gets_an_outcome_with_status_cluster_and_digest() {
    let proxy = fake_proxy(Duration::ZERO).await;
    let r = run_for(
        proxy,
        spec(200, Protocol::Mixed),
        Duration::from_millis(600),
    )
    .await;
    assert!(r.sent >= 100, "sent {}", r.sent);
    assert_eq!(r.lost(), 0);
    assert_eq!(r.outcomes.len() as u64, r.sent);
    for o in &r.outcomes {
        match (o.id.is_multiple_of(10), o.id.is_multiple_of(7)) {
            (true, _) => {
                assert_eq!(o.status, Some(500));
                assert!(
                    !o.ok() && o.error.as_deref().unwrap().contains("500"),
                    "{o:?}"
                );
            }
            (false, true) => assert_eq!(o.digest, DigestCheck::Mismatch, "{o:?}"),
            (false, false) => {
                assert!(o.ok(), "{o:?}");
                assert_eq!(o.digest, DigestCheck::Match);
                assert_eq!(o.served_by.as_deref(), Some("us-east"));
            }
        }
    }
    assert!(
        r.outcomes.iter().any(|o| o.wire == Wire::Http1)
            && r.outcomes.iter().any(|o| o.wire == Wire::Http2)
    );
}

#[tokio::test]
async fn the_load_is_open_loop_a_slow_server_does_not_slow_the_sender() {
    let proxy = fake_proxy(Duration::from_millis(300)).await;
    let r = run_for(
        proxy,
        spec(100, Protocol::Http2),
        Duration::from_millis(500),
    )
    .await;
    assert!(r.sent >= 45, "only {} sent in 500 ms at 100/s", r.sent);
    assert!(
        r.outcomes
            .iter()
            .all(|o| o.latency >= Duration::from_millis(300))
    );
}

#[tokio::test]
async fn a_dead_proxy_gives_failed_outcomes_not_lost_ones() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap();
    drop(listener);
    let r = run_for(dead, spec(100, Protocol::Http1), Duration::from_millis(200)).await;
    assert!(r.sent > 0);
    assert_eq!(r.lost(), 0);
    assert!(
        r.outcomes
            .iter()
            .all(|o| !o.ok() && o.error.as_deref().unwrap().contains("connect"))
    );
}

#[test]
fn bodies_are_seeded_by_id() {
    let (a, da) = body_for(5, 100);
    let (b, db) = body_for(5, 100);
    let (c, _) = body_for(6, 100);
    assert_eq!((a.clone(), da.clone()), (b, db));
    assert_ne!(a, c);
    assert_eq!(da, hex::encode(Sha256::digest(&a)));
}
