//! End to end with real processes in two clusters: `AuthorizationPolicy`s from a `--policy`
//! file, enforced by the inbound sidecars. A cross-cluster caller admitted by its principal
//! (and nobody else), a same-namespace caller denied by a DENY rule, a path-scoped DENY, a
//! namespace whose default is deny and one whose default is sameCluster, an AUDIT policy that
//! only logs, a refused gRPC call answered with PERMISSION_DENIED, opaque connections
//! (CONNECT tunnels) judged by their caller and refused before they reach the app (a DENY on
//! HTTP paths refuses them all), a policy changed while running that applies without a
//! restart, and a bad version refused with the last good one kept.
//!
//! Callers: each cluster's client sidecar, `spiffe://<cluster>.mesh/ns/demo/sa/client`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::config::Topology;
use mesh_core::identity::{
    CA_CERT_FILE, ClusterCa, SpiffeId, TrustBundle, TrustStore, client_config,
};
use mesh_launcher::cluster_set::ComponentArgs;
use rustls::pki_types::ServerName;
use support::{Answer, Running, eventually, get, grpc_request, h2c, metric};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EAST_CLIENT: &str = "spiffe://us-east.mesh/ns/demo/sa/client";
const EU_CLIENT: &str = "spiffe://eu-central.mesh/ns/demo/sa/client";
/// us-east's echo, by its per-cluster name (eu-central runs echo replicas too).
const ECHO: &str = "http://echo.demo.svc.us-east.clusterset.local";
const SECURE: &str = "http://secure.demo.svc.clusterset.local";
const VAULT: &str = "http://vault.locked.svc.clusterset.local";
const LEDGER: &str = "http://ledger.internal.svc.clusterset.local";

/// The policy file, with echo admitting only `admitted`.
fn policy(admitted: &str) -> String {
    format!(
        "\
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: one-client-only, namespace: demo}}
spec:
  targetRef: {{group: '', kind: Service, name: echo}}
  rules:
  - from: [{{source: {{principals: ['{admitted}']}}}}]
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: no-admin, namespace: demo}}
spec:
  targetRef: {{group: '', kind: Service, name: echo}}
  action: DENY
  rules:
  - to: [{{operation: {{paths: ['/admin/*']}}}}]
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: not-the-east-client, namespace: demo}}
spec:
  targetRef: {{group: '', kind: Service, name: secure}}
  action: DENY
  rules:
  - from: [{{source: {{principals: ['{EAST_CLIENT}']}}}}]
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: watch-eu, namespace: demo}}
spec:
  targetRef: {{group: '', kind: Service, name: secure}}
  action: AUDIT
  rules:
  - from: [{{source: {{trustDomains: [eu-central.mesh]}}}}]
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: closed, namespace: locked}}
spec:
  targetRef: {{group: '', kind: Namespace, name: locked}}
  default: deny
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: cluster-only, namespace: internal}}
spec:
  targetRef: {{group: '', kind: Namespace, name: internal}}
  default: sameCluster
"
    )
}

/// us-east and eu-central; us-east also serves `secure.demo`, `vault.locked` and
/// `ledger.internal` (one replica each, its sidecar in the service's namespace).
fn topology() -> Topology {
    let mut topology = Topology::default_set();
    topology.clusters.retain(|c| c.name != "us-west");
    topology.clusters[0].region_priority = vec!["eu-central".into()];
    topology.clusters[1].region_priority = vec!["us-east".into()];
    topology
}

/// `text` without its ANSI colour sequences (`ESC [ ... m`), as a log file holds them.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// What an opaque tunnel to us-east's echo answered: the CONNECT's status and `x-mesh-error`,
/// and (when it opened) what came back through it for an HTTP/1.1 GET, else the body.
struct Tunnel {
    status: StatusCode,
    mesh_error: Option<String>,
    text: String,
}

/// Opens an opaque tunnel to us-east's `sidecar` (an HTTP/2 CONNECT over mTLS, what a
/// sidecar's capture sends for traffic that is not HTTP) as `<cluster>`'s workload
/// `ns/demo/sa/<account>`, with a certificate the test issues from that cluster's CA; when it
/// opens, sends an HTTP/1.1 GET through it to the demo app behind.
async fn opaque_tunnel(run: &Running, sidecar: &str, cluster: &str, account: &str) -> Tunnel {
    let state = run.scratch.0.join("state");
    let domain = format!("{cluster}.mesh");
    let ca = ClusterCa::load(&state.join(cluster), &domain).expect("the caller's CA");
    let id: SpiffeId = format!("spiffe://{domain}/ns/demo/sa/{account}")
        .parse()
        .unwrap();
    let identity = ca.issue(&id, Duration::from_secs(3600)).unwrap();
    let trust = TrustStore::new(&[TrustBundle {
        trust_domain: "us-east.mesh".into(),
        cluster: "us-east".into(),
        ca_pem: std::fs::read_to_string(state.join("us-east").join(CA_CERT_FILE)).unwrap(),
    }])
    .unwrap();
    let tls = client_config(Some(&identity), trust, &[b"h2"]).unwrap();
    let inbound = run
        .set
        .process("us-east", sidecar)
        .and_then(|p| p.ready.as_ref())
        .and_then(|r| r.addr("inbound"))
        .expect("the sidecar's inbound address");
    let tcp = tokio::net::TcpStream::connect(inbound).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::IpAddress(inbound.ip().into()), tcp)
        .await
        .expect("mTLS to the sidecar");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let connect = Request::builder()
        .method(Method::CONNECT)
        .uri("service.demo.svc.clusterset.local:80")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut rsp = sender
        .send_request(connect)
        .await
        .expect("CONNECT answered");
    let status = rsp.status();
    let mesh_error = rsp
        .headers()
        .get(mesh_core::api::HEADER_MESH_ERROR)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if status != StatusCode::OK {
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        return Tunnel {
            status,
            mesh_error,
            text,
        };
    }
    let mut io = TokioIo::new(hyper::upgrade::on(&mut rsp).await.expect("tunnel open"));
    io.write_all(b"GET /through-the-tunnel HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut answer))
        .await
        .expect("the app answers through the tunnel")
        .unwrap();
    Tunnel {
        status,
        mesh_error,
        text: String::from_utf8_lossy(&answer).into_owned(),
    }
}

/// A gRPC call (an empty message) to `url` through the proxy at `proxy` over h2c: the status
/// and the head of the answer.
async fn grpc_call(proxy: std::net::SocketAddr, url: &str) -> (StatusCode, http::HeaderMap) {
    let mut sender = h2c(proxy).await;
    let req = grpc_request(url, Bytes::from_static(&[0, 0, 0, 0, 0]));
    let rsp = sender.send_request(req).await.expect("gRPC call answered");
    (rsp.status(), rsp.headers().clone())
}

fn refused(answer: &Answer, why: &str) {
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
    assert_eq!(answer.mesh_error.as_deref(), Some("unauthorized"));
    assert!(answer.text().contains(why), "{why} in {}", answer.text());
}

#[tokio::test(flavor = "current_thread")]
async fn authorization_policies_hold_across_two_clusters() {
    let mut run = Running::with_policy("authorization", topology(), &policy(EU_CLIENT), |plan| {
        for service in ["secure.demo", "vault.locked", "ledger.internal"] {
            let key: mesh_core::names::ServiceKey = service.parse().unwrap();
            assert!(plan.add_demo_service("us-east", &key, 1));
            let sidecar = format!("sidecar-{}-0", key.name);
            for (name, process) in &mut plan.clusters[0].processes {
                if let (true, ComponentArgs::Sidecar(args)) = (*name == sidecar, &mut process.args)
                {
                    args.namespace = key.namespace.clone();
                }
            }
        }
    })
    .await;
    let (east, eu) = (run.proxy("us-east"), run.proxy("eu-central"));

    // A cross-cluster caller admitted by its principal, nobody else.
    eventually(Duration::from_secs(30), "the policy in force", || async {
        get(east, &format!("{ECHO}/")).await.status == StatusCode::FORBIDDEN
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "eu-central reaching echo",
        || async { get(eu, &format!("{ECHO}/")).await.status == StatusCode::OK },
    )
    .await;
    let admitted = get(eu, &format!("{ECHO}/api")).await;
    assert_eq!(admitted.status, StatusCode::OK, "{}", admitted.text());
    assert_eq!(admitted.served_by.as_deref(), Some("us-east"));
    refused(
        &get(east, &format!("{ECHO}/api")).await,
        "no ALLOW policy of the service matches (demo/one-client-only)",
    );

    // A path-scoped DENY, before the ALLOW.
    refused(
        &get(eu, &format!("{ECHO}/admin/users")).await,
        "denied by DENY policy demo/no-admin",
    );
    assert_eq!(
        get(eu, &format!("{ECHO}/administer")).await.status,
        StatusCode::OK
    );

    // A same-namespace caller denied by a DENY rule; the other admitted and audited.
    refused(
        &get(east, &format!("{SECURE}/")).await,
        "denied by DENY policy demo/not-the-east-client",
    );
    let audited = get(eu, &format!("{SECURE}/")).await;
    assert_eq!(audited.status, StatusCode::OK, "{}", audited.text());
    let secure_sidecar = run
        .set
        .process("us-east", "sidecar-secure-0")
        .expect("secure's sidecar");
    let log = || without_colours(&std::fs::read_to_string(&secure_sidecar.log).unwrap());
    eventually(Duration::from_secs(5), "the audit logged", || async {
        log().contains("authorization audit")
    })
    .await;
    let log = log();
    let audit_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("authorization audit"))
        .collect();
    assert_eq!(audit_lines.len(), 1, "{log}");
    for part in ["demo/watch-eu", EU_CLIENT, "allowed=true"] {
        assert!(
            audit_lines[0].contains(part),
            "{part} in {}",
            audit_lines[0]
        );
    }
    let secure_admin = run.admin_of("us-east", "sidecar-secure-0");
    let counted = |policy: &'static str, decision: &'static str| {
        let label = format!("policy=\"{policy}\",decision=\"{decision}\"");
        async move { metric(secure_admin, "mesh_sidecar_authorization_total", &label).await }
    };
    assert_eq!(counted("demo/watch-eu", "audit").await, 1.0);
    assert_eq!(counted("demo/not-the-east-client", "deny").await, 1.0);

    // A gRPC call refused is answered the gRPC way: 200, PERMISSION_DENIED naming the policy.
    let (status, head) = grpc_call(east, &format!("{SECURE}/mesh.demo.Echo/Say")).await;
    assert_eq!(status, StatusCode::OK, "{head:?}");
    assert_eq!(head["grpc-status"], "7", "{head:?}");
    assert_eq!(head[mesh_core::api::HEADER_MESH_ERROR], "unauthorized");
    let message = head["grpc-message"].to_str().unwrap();
    assert!(
        message.contains("denied by DENY policy demo/not-the-east-client"),
        "{message}"
    );

    // A namespace whose default is deny: nobody; one whose default is sameCluster.
    for proxy in [east, eu] {
        refused(
            &get(proxy, &format!("{VAULT}/")).await,
            "denied by the namespace default deny of locked/closed",
        );
    }
    assert_eq!(
        get(east, &format!("{LEDGER}/")).await.status,
        StatusCode::OK
    );
    refused(
        &get(eu, &format!("{LEDGER}/")).await,
        "the namespace default sameCluster of internal/cluster-only",
    );

    // Opaque connections: judged by their caller (a `from` rule applies as to HTTP), refused
    // before any byte reaches the app, and counted; a DENY written for HTTP paths refuses
    // every tunnel, which could carry those requests past it.
    let secure_allowed = counted("-", "allow").await;
    let open = opaque_tunnel(&run, "sidecar-secure-0", "eu-central", "client").await;
    assert_eq!(open.status, StatusCode::OK, "{}", open.text);
    assert!(
        open.text.starts_with("HTTP/1.1 200"),
        "the app's answer through the tunnel: {}",
        open.text
    );
    assert_eq!(counted("-", "allow").await, secure_allowed + 1.0);
    let shut = opaque_tunnel(&run, "sidecar-secure-0", "us-east", "client").await;
    assert_eq!(shut.status, StatusCode::FORBIDDEN, "{}", shut.text);
    assert_eq!(shut.mesh_error.as_deref(), Some("unauthorized"));
    assert!(
        shut.text
            .contains("denied by DENY policy demo/not-the-east-client"),
        "{}",
        shut.text
    );
    assert_eq!(counted("demo/not-the-east-client", "deny").await, 3.0);
    let past_a_path_rule = opaque_tunnel(&run, "sidecar-echo-0", "eu-central", "client").await;
    assert_eq!(
        past_a_path_rule.status,
        StatusCode::FORBIDDEN,
        "{}",
        past_a_path_rule.text
    );
    assert!(
        past_a_path_rule
            .text
            .contains("denied by DENY policy demo/no-admin"),
        "{}",
        past_a_path_rule.text
    );

    // The policy changed while running: the east client is admitted, eu-central no longer,
    // by the same sidecar processes.
    let pid = secure_sidecar.pid();
    std::fs::write(run.policy_file(), policy(EAST_CLIENT)).unwrap();
    eventually(
        Duration::from_secs(20),
        "the new policy in force",
        || async { get(east, &format!("{ECHO}/")).await.status == StatusCode::OK },
    )
    .await;
    refused(
        &get(eu, &format!("{ECHO}/")).await,
        "no ALLOW policy of the service matches (demo/one-client-only)",
    );
    assert_eq!(
        run.set
            .process("us-east", "sidecar-secure-0")
            .unwrap()
            .pid(),
        pid
    );

    // A version with a `*` in the middle of a principal is refused with the file, the line and
    // the field; the last good policy stays in force.
    std::fs::write(
        run.policy_file(),
        policy("spiffe://us-east.mesh/ns/*/sa/client"),
    )
    .unwrap();
    let admin = run.admin("us-east");
    let refused_now = async || {
        let report: serde_json::Value =
            mesh_launcher::admin_client::get_json(admin, mesh_core::api::PATH_POLICY)
                .await
                .expect("policy report");
        report["refused"].as_array().cloned().unwrap_or_default()
    };
    eventually(
        Duration::from_secs(20),
        "the bad version refused",
        || async { !refused_now().await.is_empty() },
    )
    .await;
    let refusal = serde_json::Value::Array(refused_now().await).to_string();
    for part in [
        "policy.yaml: line 7",
        "spec.rules[0].from[0].source.principals[0]",
        "`*` is allowed only once",
    ] {
        assert!(refusal.contains(part), "{part} in {refusal}");
    }
    assert_eq!(get(east, &format!("{ECHO}/")).await.status, StatusCode::OK);
    run.stop().await;
}
