//! Cross-cluster traffic through the own gateway: HTTP/2 CONNECT over mTLS to a stand-in
//! gateway that splices to the remote endpoint, the inner mTLS end to end between sidecars.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mesh_core::api::{
    HEADER_MESH_ERROR, HEADER_SERVED_BY_CLUSTER, HEADER_TARGET_CLUSTER, HEADER_TARGET_SERVICE,
};
use mesh_core::http::{BoxBody, empty, text};
use mesh_core::identity::SpiffeId;

/// What the stand-in gateway saw of one CONNECT.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    authority: String,
    cluster: String,
    service: String,
    traceparent: Option<String>,
}

/// A stand-in for the own cluster's gateway: accepts CONNECT to `allowed` endpoints only.
struct FakeGateway {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _task: Task,
}

impl FakeGateway {
    async fn start(own: &Cluster, allowed: Vec<SocketAddr>) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let id = SpiffeId::gateway(&own.bundle.trust_domain);
        let (addr, task) = serve_mtls_h2(own, &id, false, move |req| {
            let (allowed, log) = (allowed.clone(), log.clone());
            async move { tunnel(req, &allowed, &log) }
        })
        .await;
        Self {
            addr,
            seen,
            _task: task,
        }
    }
}

fn tunnel(
    mut req: Request<Incoming>,
    allowed: &[SocketAddr],
    log: &Mutex<Vec<Seen>>,
) -> Response<BoxBody> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    log.lock().unwrap().push(Seen {
        authority: authority.clone(),
        cluster: header(HEADER_TARGET_CLUSTER).unwrap_or_default(),
        service: header(HEADER_TARGET_SERVICE).unwrap_or_default(),
        traceparent: header("traceparent"),
    });
    let target: Option<SocketAddr> = authority.parse().ok();
    let Some(target) = target.filter(|t| req.method() == Method::CONNECT && allowed.contains(t))
    else {
        let mut rsp = text(
            StatusCode::BAD_GATEWAY,
            format!("endpoint {authority} is not exported to us-east"),
        );
        rsp.headers_mut()
            .insert(HEADER_MESH_ERROR, "not-exported".parse().unwrap());
        return rsp;
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let (Ok(upgraded), Ok(mut tcp)) =
            (upgrade.await, tokio::net::TcpStream::connect(target).await)
        else {
            return;
        };
        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut tcp).await;
    });
    Response::new(empty())
}

/// us-east client, eu-central server behind a gateway; both sides trust both domains.
async fn two_clusters() -> (Cluster, Cluster, TestApp, ServerSidecar, ClientSidecar) {
    let east = Cluster::new("us-east");
    let eu = Cluster::new("eu-central");
    let app = TestApp::start("echo-eu").await;
    let server = ServerSidecar::start(&eu, app.addr).await;
    server.state.apply_snapshot(snapshot(
        &eu,
        vec![eu.bundle.clone(), east.bundle.clone()],
        vec![],
    ));
    let client = ClientSidecar::start(&east).await;
    (east, eu, app, server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_clusters_are_reached_through_the_gateway_tunnel() -> anyhow::Result<()> {
    let (east, eu, app, server, client) = two_clusters().await;
    let gateway = FakeGateway::start(&east, vec![server.addr]).await;
    let mut snap = snapshot(
        &east,
        vec![east.bundle.clone(), eu.bundle.clone()],
        vec![locality("eu-central", vec![server.endpoint(&eu)])],
    );
    snap.gateway = Some(gateway.addr);
    client.state.apply_snapshot(snap);

    let tcp = tokio::net::TcpStream::connect(client.addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    for i in 0..3 {
        let req = Request::builder()
            .uri("http://echo.demo.svc.clusterset.local/")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                "hello {i}"
            ))))?;
        // The connection is reused: wait until it has finished the previous exchange.
        sender.ready().await?;
        let rsp = sender.send_request(req).await?;
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()[HEADER_SERVED_BY_CLUSTER], "eu-central");
        let body = http_body_util::BodyExt::collect(rsp.into_body())
            .await?
            .to_bytes();
        assert_eq!(&body[..], format!("hello {i}").as_bytes());
    }
    assert_eq!(app.hits(), 3);
    // One tunnel for the pooled connection, naming cluster, service and endpoint.
    let seen = gateway.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![Seen {
            authority: server.addr.to_string(),
            cluster: "eu-central".into(),
            service: "echo.demo".into(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        }]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tunnel_is_a_connect_failure_with_the_gateways_reason() -> anyhow::Result<()> {
    let (east, eu, app, server, client) = two_clusters().await;
    let gateway = FakeGateway::start(&east, vec![]).await;
    let mut snap = snapshot(
        &east,
        vec![east.bundle.clone(), eu.bundle.clone()],
        vec![locality("eu-central", vec![server.endpoint(&eu)])],
    );
    snap.gateway = Some(gateway.addr);
    client.state.apply_snapshot(snap);

    let rsp = get(client.addr, "/").await?;
    assert_eq!(rsp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rsp.header(HEADER_MESH_ERROR), Some("connect-failed"));
    let text = rsp.text();
    assert!(text.contains("refused the tunnel"), "{text}");
    assert!(text.contains("not-exported: endpoint"), "{text}");
    assert!(text.contains("eu-central"), "{text}");
    assert_eq!(app.hits(), 0);

    // Without a gateway in the snapshot the cause says so.
    client.state.apply_snapshot(snapshot(
        &east,
        vec![east.bundle.clone(), eu.bundle.clone()],
        vec![locality("eu-central", vec![server.endpoint(&eu)])],
    ));
    let rsp = get(client.addr, "/").await?;
    assert_eq!(rsp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(rsp.text().contains("no gateway is known"), "{}", rsp.text());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_local_endpoint_fails_over_to_the_next_cluster_on_retry() -> anyhow::Result<()> {
    let (east, eu, remote_app, remote, client) = two_clusters().await;
    let local_app = TestApp::start("echo-east").await;
    let local = ServerSidecar::start(&east, local_app.addr).await;
    let gateway = FakeGateway::start(&east, vec![remote.addr]).await;
    let mut snap = snapshot(
        &east,
        vec![east.bundle.clone(), eu.bundle.clone()],
        vec![
            locality("us-east", vec![local.endpoint(&east)]),
            locality("eu-central", vec![remote.endpoint(&eu)]),
        ],
    );
    snap.gateway = Some(gateway.addr);
    client.state.apply_snapshot(snap);

    let rsp = get(client.addr, "/").await?;
    assert_eq!(
        rsp.header(HEADER_SERVED_BY_CLUSTER),
        Some("us-east"),
        "local first"
    );
    local.kill();
    for _ in 0..10 {
        let rsp = get(client.addr, "/").await?;
        assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text());
        assert_eq!(rsp.header(HEADER_SERVED_BY_CLUSTER), Some("eu-central"));
    }
    assert_eq!(remote_app.hits(), 10);
    // Three failures ejected the only local endpoint; its breaker opened on healthy share 0.
    let report = client
        .state
        .breaker_report("client-0", mesh_sidecar::state::now());
    let local_breaker = report
        .breakers
        .iter()
        .find(|b| b.cluster == "us-east")
        .map(|b| b.state);
    assert_eq!(
        local_breaker,
        Some(mesh_core::api::ReportedBreakerState::Open),
        "{report:?}"
    );
    Ok(())
}
