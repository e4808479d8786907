//! The request path end to end in one process: client sidecar (outbound) -> mTLS HTTP/2 ->
//! server sidecar (inbound) -> app, with hand-made snapshots.

mod common;

use std::time::Duration;

use common::*;
use http::{Method, StatusCode};
use mesh_core::api::{HEADER_MESH_ERROR, HEADER_SERVED_BY_CLUSTER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reaches_the_app_over_mtls_and_says_which_cluster_served_it() -> anyhow::Result<()>
{
    let east = Cluster::new("us-east");
    let app = TestApp::start("echo-0").await;
    let server = ServerSidecar::start(&east, app.addr).await;
    let client = ClientSidecar::start(&east).await;
    client.state.apply_snapshot(snapshot(
        &east,
        vec![east.bundle.clone()],
        vec![locality("us-east", vec![server.endpoint(&east)])],
    ));

    let rsp = h1(
        client.addr,
        Method::POST,
        "http://echo.demo.svc.clusterset.local/hello",
        None,
        b"ping".to_vec(),
    )
    .await?;
    assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text());
    assert_eq!(rsp.header(HEADER_SERVED_BY_CLUSTER), Some("us-east"));
    assert_eq!(rsp.header("x-app-id"), Some("echo-0"));
    assert_eq!(
        rsp.header("x-seen-host"),
        Some("echo.demo.svc.clusterset.local"),
        "the app sees the mesh name as Host"
    );
    assert_eq!(rsp.text(), "ping");
    assert_eq!(app.hits(), 1);
    // Metrics of both directions counted it.
    let mut out = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("out", "", client.state.metrics().requests.clone());
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    assert!(
        out.contains(r#"direction="outbound",service="echo.demo",cluster="us-east",status="200""#),
        "{out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_endpoint_is_reached_without_tls() -> anyhow::Result<()> {
    let east = Cluster::new("us-east");
    let app = TestApp::start("legacy-0").await;
    let client = ClientSidecar::start(&east).await;
    let endpoint = mesh_core::api::RouteEndpoint {
        address: app.addr,
        identity: String::new(),
        healthy: true,
        plaintext: true,
    };
    client.state.apply_snapshot(snapshot(
        &east,
        vec![east.bundle.clone()],
        vec![locality("us-east", vec![endpoint])],
    ));

    for _ in 0..3 {
        let rsp = h1(
            client.addr,
            Method::POST,
            "http://echo.demo.svc.clusterset.local/echo",
            None,
            b"plain".to_vec(),
        )
        .await?;
        assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text());
        assert_eq!(
            rsp.header("x-app-id"),
            Some("legacy-0"),
            "the app itself answered"
        );
        assert_eq!(
            rsp.header(HEADER_SERVED_BY_CLUSTER),
            None,
            "no inbound sidecar was crossed"
        );
        assert_eq!(rsp.text(), "plain");
    }
    assert_eq!(app.hits(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2c_carry_bodies_byte_identical() -> anyhow::Result<()> {
    let east = Cluster::new("us-east");
    let app = TestApp::start("echo-0").await;
    let server = ServerSidecar::start(&east, app.addr).await;
    let client = ClientSidecar::start(&east).await;
    client.state.apply_snapshot(snapshot(
        &east,
        vec![east.bundle.clone()],
        vec![locality("us-east", vec![server.endpoint(&east)])],
    ));

    let mut h2 = h2c(client.addr).await?;
    for len in [0, 1024, 1024 * 1024] {
        let body = payload(len);
        let want = sha256(&body);
        // HTTP/1.1, absolute form (as curl -x sends it).
        let rsp = h1(
            client.addr,
            Method::PUT,
            "http://echo.demo.svc.clusterset.local/echo",
            None,
            body.clone(),
        )
        .await?;
        assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text());
        assert_eq!(
            sha256(&rsp.body),
            want,
            "HTTP/1.1 absolute form, {len} bytes"
        );
        // HTTP/1.1, origin form with Host.
        let rsp = h1(
            client.addr,
            Method::POST,
            "/echo",
            Some("echo.demo:8080"),
            body.clone(),
        )
        .await?;
        assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text());
        assert_eq!(sha256(&rsp.body), want, "HTTP/1.1 origin form, {len} bytes");
        // HTTP/2 prior knowledge.
        let rsp = h2_send(
            &mut h2,
            Method::POST,
            "http://echo.demo.svc.clusterset.local/echo",
            body.clone(),
        )
        .await?;
        assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text());
        assert_eq!(rsp.header(HEADER_SERVED_BY_CLUSTER), Some("us-east"));
        assert_eq!(sha256(&rsp.body), want, "h2c, {len} bytes");
    }
    assert_eq!(app.hits(), 9);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_endpoints_loses_no_request_and_ejects_it() -> anyhow::Result<()> {
    let east = Cluster::new("us-east");
    let app_a = TestApp::start("echo-a").await;
    let app_b = TestApp::start("echo-b").await;
    let a = ServerSidecar::start(&east, app_a.addr).await;
    let b = ServerSidecar::start(&east, app_b.addr).await;
    let client = ClientSidecar::start(&east).await;
    client.state.apply_snapshot(snapshot(
        &east,
        vec![east.bundle.clone()],
        vec![locality(
            "us-east",
            vec![a.endpoint(&east), b.endpoint(&east)],
        )],
    ));
    // Warm up with concurrent requests: in-flight counts spread them over both endpoints,
    // which then have pooled connections.
    for _ in 0..4 {
        let batch: Vec<_> = (0..10)
            .map(|_| tokio::spawn(get(client.addr, "/")))
            .collect();
        for request in batch {
            assert_eq!(request.await??.status, StatusCode::OK);
        }
    }
    assert!(
        app_a.hits() > 0 && app_b.hits() > 0,
        "both served: {} {}",
        app_a.hits(),
        app_b.hits()
    );

    a.kill();
    let before_b = app_b.hits();
    // Concurrent load after the kill, so in-flight counts make P2C keep trying the dead
    // endpoint until outlier detection ejects it; every request must still succeed.
    for round in 0..6 {
        let batch: Vec<_> = (0..10)
            .map(|_| tokio::spawn(get(client.addr, "/")))
            .collect();
        for request in batch {
            let rsp = request.await??;
            assert_eq!(
                rsp.status,
                StatusCode::OK,
                "round {round} after the kill: {}",
                rsp.text()
            );
            assert_eq!(rsp.header("x-app-id"), Some("echo-b"));
        }
    }
    assert_eq!(app_b.hits() - before_b, 60);
    let ejections = client
        .state
        .metrics()
        .ejections
        .get_or_create(&mesh_sidecar::metrics::LocalityLabels {
            service: "echo.demo".into(),
            cluster: "us-east".into(),
        })
        .get();
    assert!(ejections >= 1, "the dead endpoint was ejected");
    assert!(
        !client.state.endpoint_ejected(&echo(), "us-east", b.addr),
        "the live one was not"
    );
    let retries = client
        .state
        .metrics()
        .retries
        .get_or_create(&mesh_sidecar::metrics::ServiceLabels {
            service: "echo.demo".into(),
        })
        .get();
    assert!(retries >= 3, "the failed tries were retried: {retries}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_service_is_answered_503_at_once_naming_it() -> anyhow::Result<()> {
    let east = Cluster::new("us-east");
    let client = ClientSidecar::start(&east).await;
    let mut snap = snapshot(&east, vec![east.bundle.clone()], vec![]);
    snap.unknown = vec!["nope.demo".parse()?];
    client.state.apply_snapshot(snap);

    let started = std::time::Instant::now();
    let rsp = h1(
        client.addr,
        Method::GET,
        "http://nope.demo.svc.clusterset.local/",
        None,
        vec![],
    )
    .await?;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "fast: {:?}",
        started.elapsed()
    );
    assert_eq!(rsp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rsp.header(HEADER_MESH_ERROR), Some("unknown-service"));
    assert!(
        rsp.text().contains(
            "service nope.demo is not exported by any linked cluster (asked controller at test)"
        ),
        "{}",
        rsp.text()
    );

    // Not a mesh name: 400 with the accepted forms.
    let rsp = h1(
        client.addr,
        Method::GET,
        "http://www.example.com/",
        None,
        vec![],
    )
    .await?;
    assert_eq!(rsp.status, StatusCode::BAD_REQUEST);
    assert!(rsp.text().contains("clusterset.local"), "{}", rsp.text());
    // A cluster the service is not in: 503 naming it.
    let rsp = h1(
        client.addr,
        Method::GET,
        "http://echo.demo.svc.mars.clusterset.local/",
        None,
        vec![],
    )
    .await?;
    assert_eq!(rsp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rsp.header(HEADER_MESH_ERROR), Some("unknown-cluster"));
    assert!(
        rsp.text()
            .contains("cluster mars is unknown or unreachable"),
        "{}",
        rsp.text()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_app_is_a_bad_request() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let east = Cluster::new("us-east");
    let client = ClientSidecar::start(&east).await;
    let mut tcp = tokio::net::TcpStream::connect(client.addr).await?;
    tcp.write_all(b"\x01\x02 GARBAGE \xff\xfe\r\nnot: http\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await??;
    let head = String::from_utf8_lossy(&buf);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_not_yet_asked_for_is_awaited_on_demand() -> anyhow::Result<()> {
    let east = Cluster::new("us-east");
    let app = TestApp::start("echo-0").await;
    let server = ServerSidecar::start(&east, app.addr).await;
    let client = ClientSidecar::start(&east).await;
    let mut empty = snapshot(&east, vec![east.bundle.clone()], vec![]);
    empty.services.clear();
    client.state.apply_snapshot(empty);
    let mut interest = client.state.watch_interest();

    let request = tokio::spawn(get(client.addr, "/"));
    // The request adds the service to the interest set; the "controller" answers.
    tokio::time::timeout(
        Duration::from_secs(2),
        interest.wait_for(|set| set.contains(&echo())),
    )
    .await??;
    let mut snap = snapshot(
        &east,
        vec![east.bundle.clone()],
        vec![locality("us-east", vec![server.endpoint(&east)])],
    );
    snap.version = 2;
    client.state.apply_snapshot(snap);
    let rsp = request.await??;
    assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text());
    assert_eq!(app.hits(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_nobody_answers_for_times_out_with_503() -> anyhow::Result<()> {
    let east = Cluster::new("us-east");
    let client = ClientSidecar::start(&east).await;
    let started = std::time::Instant::now();
    let rsp = get(client.addr, "/").await?;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(rsp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rsp.header(HEADER_MESH_ERROR), Some("unknown-service"));
    assert!(rsp.text().contains("echo.demo"), "{}", rsp.text());
    Ok(())
}
