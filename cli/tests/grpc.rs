//! End to end with real processes: gRPC through the mesh across clusters. A client in us-east
//! calls the demo app's gRPC echo in eu-central through its sidecar's outbound listener (h2c),
//! over sidecar -> gateway -> QUIC -> gateway -> sidecar -> app (h2c): the unary
//! `mesh.demo.Echo/Say` and the server-streaming `mesh.demo.Echo/Count`, with the real
//! `grpcurl` (built from its Go module by `tools/grpcurl/build.sh`) and with a hand-written
//! HTTP/2 client that checks what grpcurl does not show: the `grpc-status: 0` trailer itself,
//! replies arriving as they are sent, trailers-only answers, and the sidecar's gRPC metric.
//! The service's route has a 1 s request timeout, and the stream lasts longer: a timeout bounds
//! the answer's head, never a stream. A `GRPCRoute` beside it takes `Say` by its method.
//!
//! Without Go, grpcurl cannot be built: the test then says so and runs the hand-written
//! client only, except under `CI=true`, where it fails.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use mesh_cli::demo_app::grpc::wire::{
    CountReply, CountRequest, SayReply, SayRequest, frame, unframe,
};
use mesh_cli::demo_app::grpc::{PATH_COUNT, PATH_SAY};
use mesh_core::config::Topology;
use support::{Running, eventually, grpc_request, h2c};

const EU: &str = "echo.demo.svc.eu-central.clusterset.local";

/// The routes of the test: everything to echo with a 1 s request timeout (`x-route` on the
/// answers), and a `GRPCRoute` whose method match takes `Say` (`x-grpc-route` instead).
const ROUTE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-grpc, namespace: demo}
spec:
  parentRefs: [{kind: Service, name: echo}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    filters:
    - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-route, value: grpc}]}}
    backendRefs: [{name: echo}]
    timeouts: {request: 1s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo-say, namespace: demo}
spec:
  parentRefs: [{kind: Service, name: echo}]
  rules:
  - matches: [{method: {service: mesh.demo.Echo, method: Say}}]
    filters:
    - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-grpc-route, value: say}]}}
    backendRefs: [{name: echo}]
";

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// grpcurl, built once under a lock; `None` (said loudly) when Go is missing outside CI.
fn grpcurl() -> Option<PathBuf> {
    let script = repo().join("tools/grpcurl/build.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .expect("running tools/grpcurl/build.sh");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        return Some(repo().join("target/k8s/bin/grpcurl"));
    }
    assert!(
        !in_ci() && out.status.code() == Some(2),
        "grpcurl could not be built (CI must run this test with it):\n{log}"
    );
    eprintln!(
        "NOT USING grpcurl: it cannot be built here (no Go); hand-written client only\n{log}"
    );
    None
}

/// One call's answer: the head, the messages with when each arrived, the trailers.
struct Call {
    status: StatusCode,
    headers: HeaderMap,
    messages: Vec<(Bytes, Duration)>,
    trailers: Option<HeaderMap>,
}

/// One gRPC call to `EU` through the proxy at `proxy` over h2c, by hand.
async fn call(proxy: std::net::SocketAddr, path: &str, message: &[u8]) -> Call {
    let mut sender = h2c(proxy).await;
    let req = grpc_request(&format!("http://{EU}{path}"), frame(message));
    let started = Instant::now();
    let rsp = sender.send_request(req).await.unwrap();
    let (parts, mut body) = rsp.into_parts();
    let mut buf = Vec::new();
    let mut messages = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            buf.extend_from_slice(data);
            // Every message complete so far, stamped with when its last byte came.
            while buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if buf.len() < 5 + len {
                    break;
                }
                let whole: Vec<u8> = buf.drain(..5 + len).collect();
                let message = unframe(&whole).unwrap()[0].to_vec();
                messages.push((Bytes::from(message), started.elapsed()));
            }
        } else if let Ok(t) = frame.into_trailers() {
            trailers = Some(t);
        }
    }
    assert!(buf.is_empty(), "a partial message at the end");
    Call {
        status: parts.status,
        headers: parts.headers,
        messages,
        trailers,
    }
}

async fn grpcurl_call(
    grpcurl: &Path,
    proxy: std::net::SocketAddr,
    data: &str,
    method: &str,
) -> String {
    let out = tokio::process::Command::new(grpcurl)
        .arg("-plaintext")
        .arg("-import-path")
        .arg(repo().join("cli/src/demo_app"))
        .args(["-proto", "echo.proto", "-authority", EU, "-d", data])
        .arg(proxy.to_string())
        .arg(method)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // grpcurl exits 0 only for grpc-status 0, which it reads from the trailers (a stream
    // without them is an error to gRPC).
    assert!(
        out.status.success(),
        "grpcurl {method} {data}: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "current_thread")]
async fn grpc_unary_and_streaming_calls_cross_clusters_with_their_trailers() {
    let grpcurl = grpcurl();
    let mut run = Running::with_policy("grpc", Topology::default_set(), ROUTE, |_| {}).await;
    let proxy = run.proxy("us-east");
    let say = SayRequest {
        text: "hello over the mesh".into(),
    }
    .encode();
    // The routes are in force (the GRPCRoute's header on Say) before anything is measured.
    eventually(Duration::from_secs(20), "the routes in force", || async {
        call(proxy, PATH_SAY, &say)
            .await
            .headers
            .contains_key("x-grpc-route")
    })
    .await;

    // Unary, by hand: the reply from eu-central, and the trailer.
    let a = call(proxy, PATH_SAY, &say).await;
    assert_eq!(a.status, StatusCode::OK, "{}", run.logs());
    assert_eq!(a.headers["x-mesh-cluster"], "eu-central");
    assert_eq!(a.headers["content-type"], "application/grpc");
    // The GRPCRoute's method match took the call, not the HTTPRoute's prefix.
    assert_eq!(a.headers["x-grpc-route"], "say");
    assert!(a.headers.get("x-route").is_none());
    assert_eq!(a.messages.len(), 1);
    let reply = SayReply::decode(&a.messages[0].0).unwrap();
    assert_eq!(reply.text, "hello over the mesh");
    assert_eq!(reply.cluster, "eu-central");
    let trailers = a.trailers.expect("trailers came through the mesh");
    assert_eq!(trailers["grpc-status"], "0");

    // Server streaming, by hand: 5 replies 400 ms apart, each as it is sent (the first long
    // before the last), the whole longer than the route's 1 s request timeout.
    let count = CountRequest {
        count: 5,
        interval_ms: 400,
    }
    .encode();
    let c = call(proxy, PATH_COUNT, &count).await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(
        c.headers["x-route"], "grpc",
        "the rule with the 1 s timeout"
    );
    assert!(c.headers.get("x-grpc-route").is_none());
    let numbers: Vec<u32> = c
        .messages
        .iter()
        .map(|(m, _)| CountReply::decode(m).unwrap().number)
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
    assert!(
        c.messages
            .iter()
            .all(|(m, _)| CountReply::decode(m).unwrap().cluster == "eu-central")
    );
    let (first, last) = (c.messages[0].1, c.messages[4].1);
    assert!(
        last >= first + Duration::from_millis(1500) && last > Duration::from_secs(1),
        "replies stream as sent, past the request timeout: first at {first:?}, last at {last:?}"
    );
    assert_eq!(c.trailers.expect("trailers")["grpc-status"], "0");

    // A call the app refuses before any message: trailers-only, through as it came.
    let u = call(proxy, "/mesh.demo.Echo/Nope", b"").await;
    assert_eq!(u.status, StatusCode::OK);
    assert_eq!(u.headers["grpc-status"], "12");
    assert!(u.messages.is_empty());

    // The real client.
    if let Some(grpcurl) = &grpcurl {
        let out = grpcurl_call(
            grpcurl,
            proxy,
            r#"{"text": "hi from grpcurl"}"#,
            "mesh.demo.Echo/Say",
        )
        .await;
        assert!(out.contains("hi from grpcurl"), "{out}");
        assert!(out.contains(r#""cluster": "eu-central""#), "{out}");
        let started = Instant::now();
        let out = grpcurl_call(
            grpcurl,
            proxy,
            r#"{"count": 4, "interval_ms": 400}"#,
            "mesh.demo.Echo/Count",
        )
        .await;
        for n in 1..=4 {
            assert!(out.contains(&format!(r#""number": {n}"#)), "{n}: {out}");
        }
        assert!(started.elapsed() >= Duration::from_millis(1200), "{out}");
    }

    // The client sidecar counted the calls by grpc-status.
    let client_admin = run
        .set
        .process("us-east", "client")
        .and_then(|p| p.ready.as_ref())
        .and_then(|r| r.addr("admin"))
        .unwrap();
    let metrics =
        mesh_launcher::admin_client::call(client_admin, http::Method::GET, "/metrics", None)
            .await
            .unwrap();
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    let grpc: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("mesh_sidecar_grpc_responses_total{"))
        .collect();
    assert!(
        grpc.iter().any(|l| l.contains(
            r#"direction="outbound",service="echo.demo",cluster="eu-central",grpc_status="0""#
        )),
        "{grpc:?}"
    );
    assert!(
        grpc.iter().any(|l| l.contains(r#"grpc_status="12""#)),
        "{grpc:?}"
    );
    run.stop().await;
}
