//! Identity on both hops: the inbound listener refuses client certificates of trust domains it
//! is not linked with (and accepts them once a snapshot links them), and the outbound side
//! refuses an endpoint that presents another identity than the snapshot lists.

mod common;

use std::sync::Arc;

use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::api::{HEADER_MESH_ERROR, HEADER_SERVED_BY_CLUSTER};
use mesh_core::http::empty;
use mesh_core::identity::{TrustStore, client_config};
use rustls::pki_types::ServerName;

/// One GET straight to an inbound listener over mTLS h2 with `client`'s certificate.
async fn direct(
    inbound: std::net::SocketAddr,
    client: &Cluster,
    trust: TrustStore,
) -> anyhow::Result<StatusCode> {
    let ident = client.ca.issue(&client.id("client"), DAY)?;
    let cfg = client_config(Some(&ident), trust, &[b"h2"])?;
    let tcp = tokio::net::TcpStream::connect(inbound).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::IpAddress(inbound.ip().into()), tcp)
        .await?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::GET)
        .uri("http://echo.demo.svc.clusterset.local/")
        .body(empty())?;
    let rsp = sender.send_request(req).await?;
    let status = rsp.status();
    assert_eq!(
        rsp.headers()
            .get(HEADER_SERVED_BY_CLUSTER)
            .map(|v| v.to_str().unwrap()),
        Some("us-east")
    );
    rsp.into_body().collect().await?;
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_an_unlinked_trust_domain_is_refused_until_linked() -> anyhow::Result<()> {
    let east = Cluster::new("us-east");
    let mars = Cluster::new("mars");
    let app = TestApp::start("echo-0").await;
    let server = ServerSidecar::start(&east, app.addr).await;
    let both = TrustStore::new(&[east.bundle.clone(), mars.bundle.clone()])?;

    // Control: a client of the own domain gets through.
    assert_eq!(
        direct(server.addr, &east, both.clone()).await?,
        StatusCode::OK
    );
    assert_eq!(app.hits(), 1);

    // A client of a domain the server does not know is refused in the handshake.
    let refused = direct(server.addr, &mars, both.clone()).await;
    assert!(refused.is_err(), "mars client must be refused: {refused:?}");
    assert_eq!(app.hits(), 1, "the refused client never reached the app");

    // Once a snapshot carries mars' bundle (`mesh link`), the same client is accepted.
    server.state.apply_snapshot(snapshot(
        &east,
        vec![east.bundle.clone(), mars.bundle.clone()],
        vec![],
    ));
    assert_eq!(direct(server.addr, &mars, both).await?, StatusCode::OK);
    assert_eq!(app.hits(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_presenting_another_identity_is_a_connect_failure() -> anyhow::Result<()> {
    let east = Cluster::new("us-east");
    let app = TestApp::start("echo-0").await;
    let server = ServerSidecar::start(&east, app.addr).await;
    let client = ClientSidecar::start(&east).await;
    let mut endpoint = server.endpoint(&east);
    endpoint.identity = east.id("payments").to_string();
    client.state.apply_snapshot(snapshot(
        &east,
        vec![east.bundle.clone()],
        vec![locality("us-east", vec![endpoint])],
    ));

    let rsp = get(client.addr, "/").await?;
    assert_eq!(
        rsp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        rsp.text()
    );
    assert_eq!(rsp.header(HEADER_MESH_ERROR), Some("connect-failed"));
    let text = rsp.text();
    assert!(
        text.contains("presented spiffe://us-east.mesh/ns/demo/sa/echo"),
        "{text}"
    );
    assert!(
        text.contains("lists spiffe://us-east.mesh/ns/demo/sa/payments"),
        "{text}"
    );
    assert_eq!(app.hits(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_is_down_answers_503_app_unavailable_and_the_caller_goes_elsewhere()
-> anyhow::Result<()> {
    let east = Cluster::new("us-east");
    let down = TestApp::start("echo-down").await;
    let up = TestApp::start("echo-up").await;
    let server_down = ServerSidecar::start(&east, down.addr).await;
    let server_up = ServerSidecar::start(&east, up.addr).await;
    down.stop();
    // The app's listener is gone once connecting is refused.
    eventually("the app to stop", std::time::Duration::from_secs(5), || {
        std::net::TcpStream::connect(down.addr).is_err()
    })
    .await;

    // Straight to the inbound of the dead app: 503 app-unavailable, with x-mesh-cluster.
    let client = ClientSidecar::start(&east).await;
    client.state.apply_snapshot(snapshot(
        &east,
        vec![east.bundle.clone()],
        vec![locality("us-east", vec![server_down.endpoint(&east)])],
    ));
    let rsp = get(client.addr, "/").await?;
    assert_eq!(
        rsp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        rsp.text()
    );
    assert_eq!(rsp.header(HEADER_MESH_ERROR), Some("app-unavailable"));
    assert_eq!(rsp.header(HEADER_SERVED_BY_CLUSTER), Some("us-east"));

    // With a live endpoint beside it, GETs are retried there and all succeed.
    client.state.apply_snapshot(snapshot(
        &east,
        vec![east.bundle.clone()],
        vec![locality(
            "us-east",
            vec![server_down.endpoint(&east), server_up.endpoint(&east)],
        )],
    ));
    for _ in 0..20 {
        let rsp = get(client.addr, "/").await?;
        assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text());
        assert_eq!(rsp.header("x-app-id"), Some("echo-up"));
    }
    // A POST is not idempotent: a 503 from the app side is passed through, not retried.
    let only_down = snapshot(
        &east,
        vec![east.bundle.clone()],
        vec![locality("us-east", vec![server_down.endpoint(&east)])],
    );
    client.state.apply_snapshot(only_down);
    let rsp = h1(
        client.addr,
        Method::POST,
        "http://echo.demo.svc.clusterset.local/",
        None,
        b"x".to_vec(),
    )
    .await?;
    assert_eq!(rsp.status, StatusCode::SERVICE_UNAVAILABLE);
    Ok(())
}
