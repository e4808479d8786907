//! Transparent capture end to end, in network namespaces (root): the cluster-set of `mesh up
//! --transparent` (each cluster's client sidecar in its own app namespace `mesh-<cluster>`,
//! with `mesh init`'s rules and the cluster's mesh DNS as resolver). From inside a namespace,
//! with no proxy setting: `dig` resolves mesh names to VIPs, plain `curl` is served by the local
//! cluster, a TCP client (`nc`) to a VIP gets its bytes back through the mesh (opaque), `curl` to
//! a server outside the mesh passes through (allow-any) or is refused with the reason
//! (registry-only), TLS to a VIP is carried opaque, the sidecar's own port is refused, inbound
//! plaintext follows the inbound policy, and killing the local replicas fails over as on the
//! proxy path.
//!
//! Needs root, `ip`, `iptables`, `curl`, `dig` and `nc`; without them the test says why and
//! passes only outside CI (under `CI=true` a missing prerequisite fails it: `.ci/run` runs as
//! root and installs them).

mod support;

use std::process::Output;
use std::time::Duration;

use std::net::{IpAddr, SocketAddr};

use mesh_chaos::netns::{AppNamespace, AppNamespaces, NetworkMode, detect};
use mesh_core::config::Topology;
use mesh_core::member_args::ClusterMemberArgs;
use mesh_launcher::cluster_set::{ClusterSet, ComponentArgs, Process};
use mesh_launcher::demo_app_args::DemoAppArgs;
use mesh_sidecar::SidecarArgs;
use mesh_sidecar::transparent::{InboundPolicy, OutboundPolicy};
use support::{Scratch, mesh_bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `args` in app namespace `ns` (as root), bounded.
async fn in_ns(ns: &str, args: &[&str]) -> Output {
    let run = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap_or_else(|_| panic!("{args:?} in {ns} did not end"))
        .expect("ip netns exec")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Plain `curl` from `ns`: status line and body.
async fn curl(ns: &str, url: &str) -> String {
    text(&in_ns(ns, &["curl", "-sS", "-i", "--max-time", "10", url]).await)
}

/// Why this test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if let NetworkMode::Loopback { reason } = detect() {
        return Some(reason);
    }
    for tool in ["curl", "dig", "nc", "setpriv"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// A plain HTTP server outside the mesh on `ip` (a host address the namespaces route to).
async fn outside_server(
    ip: std::net::Ipv4Addr,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = "outside the mesh\n";
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (addr, task)
}

/// A served workload inside an app namespace: the demo app on port 8080 (as root, like an app
/// container) and its sidecar as uid 1337 on 15006, registered as `web.demo`.
struct WebWorkload {
    app: Process,
    sidecar: Process,
}

impl WebWorkload {
    async fn start(set: &ClusterSet, ns: &AppNamespace, scratch: &Scratch) -> Self {
        let dir = scratch.0.join(&ns.cluster);
        let run = dir.join("run");
        let in_ns = argv(&["ip", "netns", "exec", &ns.ns]);
        let mut app = Process::new(
            "web-0".into(),
            ComponentArgs::DemoApp(DemoAppArgs {
                cluster: ns.cluster.clone(),
                replica: "web-0".into(),
                listen: "0.0.0.0:8080".parse().unwrap(),
                admin: "127.0.0.1:0".parse().unwrap(),
                ready_file: Some(run.join("web-0.json")),
            }),
            dir.join("web-0.log"),
            run.join("web-0.json"),
        );
        app.exec_prefix = in_ns;
        app.start(&mesh_bin()).await.expect("the web app starts");
        let controller = set
            .process(&ns.cluster, "controller")
            .and_then(|p| p.ready.as_ref())
            .and_then(|r| r.addr("control"))
            .expect("the controller's control address");
        let member = ClusterMemberArgs {
            cluster: ns.cluster.clone(),
            controller: controller.into(),
            ca_file: dir.join("ca.crt"),
            token_file: dir.join("join-token"),
            admin: SocketAddr::new(IpAddr::V4(ns.app_ip), 0),
            ready_file: Some(run.join("web-sidecar.json")),
        };
        let mut sidecar = Process::new(
            "web-sidecar".into(),
            ComponentArgs::Sidecar(SidecarArgs {
                service: Some("web.demo".parse().unwrap()),
                app: Some("127.0.0.1:8080".parse().unwrap()),
                inbound: "0.0.0.0:15006".parse().unwrap(),
                advertise: Some(SocketAddr::new(IpAddr::V4(ns.app_ip), 15006)),
                outbound: "127.0.0.1:0".parse().unwrap(),
                ..SidecarArgs::new(member, "web-0")
            }),
            dir.join("web-sidecar.log"),
            run.join("web-sidecar.json"),
        );
        sidecar.exec_prefix = ns
            .placement()
            .client
            .expect("a client placement")
            .exec_prefix;
        sidecar
            .start(&mesh_bin())
            .await
            .expect("the web sidecar starts");
        Self { app, sidecar }
    }

    async fn restart_strict(&mut self, mesh_bin: &std::path::Path) {
        self.sidecar.stop().await;
        if let ComponentArgs::Sidecar(args) = &mut self.sidecar.args {
            args.inbound_policy = InboundPolicy::Strict;
        }
        self.sidecar
            .start(mesh_bin)
            .await
            .expect("the web sidecar restarts");
    }

    async fn stop(&mut self) {
        self.sidecar.stop().await;
        self.app.stop().await;
    }
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_clients_in_app_namespaces_reach_mesh_services_with_no_proxy_setting() {
    if let Some(reason) = missing_prerequisite() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "under CI=true this test must run: {reason}"
        );
        eprintln!("skipped: {reason}");
        return;
    }
    let scratch = Scratch::new("transparent");
    let topology = Topology::default_set().with_ephemeral_ports();
    let names: Vec<String> = topology.clusters.iter().map(|c| c.name.clone()).collect();
    let mut apps = AppNamespaces::create(&names, &mesh_bin()).expect("app namespaces");
    let mut set = match ClusterSet::start_placed(
        &topology,
        &scratch.0,
        &mesh_bin(),
        &apps.placements(),
    )
    .await
    {
        Ok(set) => set,
        Err(e) => panic!("the transparent cluster-set did not start: {e}"),
    };
    let east = apps.get("us-east").expect("us-east").clone();
    let west = apps.get("us-west").expect("us-west").clone();

    // The namespace's resolver is the cluster's mesh DNS.
    let vip = text(
        &in_ns(
            &east.ns,
            &["dig", "+short", "echo.demo.svc.clusterset.local"],
        )
        .await,
    );
    assert!(vip.trim().starts_with("240.240."), "{vip}");

    // Plain curl by name, by per-cluster name and by VIP: served by the mesh.
    let local = curl(&east.ns, "http://echo.demo.svc.clusterset.local/").await;
    assert!(local.starts_with("HTTP/1.1 200"), "{local}");
    assert!(local.contains("cluster=us-east"), "{local}");
    let pinned = curl(
        &east.ns,
        "http://echo.demo.svc.eu-central.clusterset.local/",
    )
    .await;
    assert!(pinned.contains("cluster=eu-central"), "{pinned}");
    let by_vip = curl(&east.ns, &format!("http://{}/", vip.trim())).await;
    assert!(by_vip.contains("cluster=us-east"), "{by_vip}");

    // A TCP client (not HTTP) to a VIP: its bytes come back through the mesh, opaque.
    let echoed = in_ns(
        &east.ns,
        &[
            "sh",
            "-c",
            "printf 'opaque bytes\\n' | nc -N -w 10 echo.demo.svc.clusterset.local 9000",
        ],
    )
    .await;
    assert_eq!(text(&echoed), "opaque bytes\n", "{echoed:?}");

    // TLS to a VIP is not HTTP: carried opaque to the demo app, which echoes the ClientHello,
    // so the handshake fails on the client, not in the mesh.
    let tls = curl(&east.ns, "https://echo.demo.svc.clusterset.local/").await;
    assert!(tls.contains("SSL") || tls.contains("TLS"), "{tls}");
    // The app calling the sidecar's own port through capture is refused, not looped.
    let own = curl(&east.ns, &format!("http://{}:15001/", east.app_ip)).await;
    assert!(own.contains("502") && own.contains("own port"), "{own}");

    // Outside the mesh: passed through under allow-any (the default)...
    let (outside, _server) = outside_server(east.host_ip).await;
    let passed = curl(&east.ns, &format!("http://{outside}/")).await;
    assert!(passed.contains("outside the mesh"), "{passed}");
    // ...an unknown VIP is refused, with the reason.
    let unknown = curl(&east.ns, "http://240.240.0.3/").await;
    assert!(
        unknown.contains("502") && unknown.contains("no service has it"),
        "{unknown}"
    );
    // ...and refused under registry-only (us-west's client, restarted with it), while mesh
    // services still work.
    set.restart_with("us-west", "client", |args| {
        if let ComponentArgs::Sidecar(sidecar) = args {
            sidecar.outbound_policy = OutboundPolicy::RegistryOnly;
        }
    })
    .await
    .expect("us-west's client restarts");
    let refused = curl(&west.ns, &format!("http://{outside}/")).await;
    assert!(
        refused.contains("502") && refused.contains("registry-only"),
        "{refused}"
    );
    let still = curl(&west.ns, "http://echo.demo.svc.clusterset.local/").await;
    assert!(still.contains("cluster=us-west"), "{still}");

    // Inbound capture: a workload of `web.demo` in us-east's namespace (app on port 8080,
    // captured; its sidecar as uid 1337 on 15006). Plaintext from outside the mesh reaches the
    // app under permissive and is refused under strict; mTLS from the mesh works under both.
    in_ns(
        &east.ns,
        &[
            mesh_bin().to_str().unwrap(),
            "init",
            "--proxy-uid",
            "1337",
            "--app-ports",
            "8080",
        ],
    )
    .await;
    let mut web = WebWorkload::start(&set, &east, &scratch).await;
    let app_port = format!("http://{}:8080/", east.app_ip);
    let plain = text(
        &tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", &app_port])
            .output()
            .await
            .expect("curl"),
    );
    assert!(plain.contains("replica=web-0"), "permissive: {plain}");
    let meshed = curl(&west.ns, "http://web.demo.svc.clusterset.local/").await;
    assert!(
        meshed.contains("replica=web-0"),
        "mTLS from the mesh: {meshed}"
    );
    web.restart_strict(&mesh_bin()).await;
    let refused = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", &app_port])
        .output()
        .await
        .expect("curl");
    assert!(
        !refused.status.success(),
        "strict refuses plaintext: {}",
        text(&refused)
    );
    let meshed = curl(&west.ns, "http://web.demo.svc.clusterset.local/").await;
    assert!(
        meshed.contains("replica=web-0"),
        "strict keeps mTLS: {meshed}"
    );
    web.stop().await;

    // Killing us-east's replicas: the same plain curl is served by another region.
    for replica in ["echo-0", "echo-1"] {
        set.kill("us-east", replica).await.expect("kill");
    }
    mesh_test_support::eventually(
        "a plain curl in us-east's namespace to be served elsewhere",
        Duration::from_secs(30),
        async || {
            let answer = curl(&east.ns, "http://echo.demo.svc.clusterset.local/").await;
            answer.starts_with("HTTP/1.1 200") && !answer.contains("cluster=us-east")
        },
    )
    .await;

    set.stop().await;
    apps.teardown();
}
