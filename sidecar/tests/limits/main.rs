//! Bounded resources where a client can push (issue 12, part 5), through real sidecars on real
//! sockets: oversized heads answered 431, a slowloris client closed at the header read timeout,
//! random `Host` values that cannot grow the metrics, an HTTP/2 rapid-reset flood that leaves
//! the sidecar serving others, and the outbound listener's connection cap.

mod cap;
#[path = "../common/mod.rs"]
mod common;
mod flood;
mod heads;
mod labels;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::{Method, StatusCode};
use mesh_core::admin::{AdminServer, Readiness};
use mesh_core::serve::{ConnectionCap, RefusedConnections, ServeLimits};
use mesh_sidecar::metrics::Metrics;
use mesh_sidecar::outbound::balancer::ResilienceConfig;
use mesh_sidecar::{SidecarState, StateOptions};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};

/// An app behind a server sidecar, and a client sidecar whose outbound listener runs within
/// `limits` and `max_connections`, with its metrics served on an admin listener.
pub(crate) struct Setup {
    pub(crate) app: TestApp,
    _server: ServerSidecar,
    pub(crate) outbound: SocketAddr,
    admin: SocketAddr,
    pub(crate) cap: ConnectionCap,
    _tasks: Vec<Task>,
}

impl Setup {
    pub(crate) async fn start(limits: ServeLimits, max_connections: usize) -> Self {
        let east = Cluster::new("us-east");
        let app = TestApp::start("echo-0").await;
        let server = ServerSidecar::start(&east, app.addr).await;

        let mut registry = Registry::default();
        let state = SidecarState::new(
            StateOptions {
                cluster: east.name.clone(),
                identity: east.identity("client"),
                connect_timeout: Duration::from_millis(500),
                request_timeout: Duration::from_secs(5),
                resilience: ResilienceConfig::default(),
                discovery_source: "controller at test".into(),
                cache_max_bytes: mesh_core::policy::http_cache::DEFAULT_CAPACITY_BYTES,
            },
            Metrics::new(&mut registry),
        );
        state.apply_snapshot(snapshot(
            &east,
            vec![east.bundle.clone()],
            vec![locality("us-east", vec![server.endpoint(&east)])],
        ));
        let cap = RefusedConnections::register(&mut registry, "mesh_sidecar")
            .cap("outbound", max_connections);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let outbound = listener.local_addr().unwrap();
        let capture = Arc::new(
            Arc::into_inner(no_capture(&state))
                .expect("a fresh capture")
                .serving_within(limits),
        );
        let proxy = Task(tokio::spawn(mesh_sidecar::outbound::serve_within(
            listener,
            state,
            capture,
            cap.clone(),
        )));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = listener.local_addr().unwrap();
        let metrics = Task(tokio::spawn(
            AdminServer::new(Arc::new(registry), Readiness::default(), None).serve(listener),
        ));
        Self {
            app,
            _server: server,
            outbound,
            admin,
            cap,
            _tasks: vec![proxy, metrics],
        }
    }

    /// The metrics endpoint's text.
    pub(crate) async fn metrics(&self) -> String {
        let answer = h1(
            self.admin,
            Method::GET,
            "/metrics",
            Some("admin"),
            Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        answer.text()
    }
}

pub(crate) const ECHO: &str = "http://echo.demo.svc.clusterset.local/";

/// A GET of `ECHO` with one `x-big` header of `len` bytes, over HTTP/1.1.
pub(crate) async fn h1_with_header(proxy: SocketAddr, len: usize) -> Answer {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(ECHO)
        .header("x-big", "a".repeat(len))
        .body(mesh_core::http::empty())
        .unwrap();
    let rsp = sender.send_request(req).await.unwrap();
    let (parts, body) = rsp.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}
