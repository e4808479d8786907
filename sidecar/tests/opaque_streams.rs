//! Opaque streams (what capture does with non-HTTP connections to a VIP): a CONNECT through the
//! outbound stack, over mTLS to a server sidecar, joined to its app byte for byte; failover of
//! the opening to another endpoint; and a down app answered before any byte is taken.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use mesh_core::api::{HEADER_MESH_ERROR, HEADER_SERVED_BY_CLUSTER, VipTarget};
use mesh_sidecar::SidecarState;
use mesh_sidecar::facts::CapturedVip;
use mesh_sidecar::outbound::stack::{outbound_service, retry_budgets};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// A TCP echo server (not HTTP): what an opaque stream must reach unchanged.
async fn tcp_echo() -> (std::net::SocketAddr, Task) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = Task(tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    }));
    (addr, task)
}

/// Opens an opaque stream to `echo.demo` on port 7 the way the transparent listener does.
async fn open(state: &Arc<SidecarState>) -> http::Response<mesh_core::http::BoxBody> {
    let stack = outbound_service::<Empty<Bytes>>(state, retry_budgets(state));
    let target = VipTarget {
        service: echo(),
        cluster: None,
    };
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("{}:7", target.host()))
        .extension(CapturedVip(target))
        .body(Empty::new())
        .unwrap();
    let Ok(rsp) = stack.oneshot(req).await;
    rsp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_stream_reaches_the_app_byte_for_byte_after_a_dead_endpoint() -> anyhow::Result<()>
{
    let east = Cluster::new("us-east");
    let (app, _app) = tcp_echo().await;
    let server = ServerSidecar::start(&east, app).await;
    let dead = ServerSidecar::start(&east, app).await;
    let dead_endpoint = dead.endpoint(&east);
    dead.kill();
    let client = ClientSidecar::start(&east).await;
    client.state.apply_snapshot(snapshot(
        &east,
        vec![east.bundle.clone()],
        vec![locality(
            "us-east",
            vec![dead_endpoint, server.endpoint(&east)],
        )],
    ));

    for round in 0..4 {
        let mut rsp = open(&client.state).await;
        assert_eq!(rsp.status(), StatusCode::OK, "round {round}: {rsp:?}");
        assert_eq!(
            rsp.headers()
                .get(HEADER_SERVED_BY_CLUSTER)
                .and_then(|v| v.to_str().ok()),
            Some("us-east")
        );
        let mut stream = TokioIo::new(hyper::upgrade::on(&mut rsp).await?);
        // Bytes no HTTP server would take, in both directions, more than one buffer's worth.
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = tokio::io::split(&mut stream);
        let send = async {
            w.write_all(&payload).await?;
            w.shutdown().await
        };
        let mut back = Vec::new();
        let recv = r.read_to_end(&mut back);
        let (sent, received) = tokio::join!(send, recv);
        sent?;
        received?;
        assert_eq!(back, payload, "round {round}: the echo came back unchanged");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_to_a_down_app_is_refused_before_it_opens() -> anyhow::Result<()> {
    let east = Cluster::new("us-east");
    // A port that was just free: nothing listens there.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let server = ServerSidecar::start(&east, gone).await;
    let client = ClientSidecar::start(&east).await;
    client.state.apply_snapshot(snapshot(
        &east,
        vec![east.bundle.clone()],
        vec![locality("us-east", vec![server.endpoint(&east)])],
    ));
    let rsp = open(&client.state).await;
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE, "{rsp:?}");
    assert!(rsp.headers().contains_key(HEADER_MESH_ERROR), "{rsp:?}");
    Ok(())
}
