//! The mesh on three real Kubernetes API servers, end to end: `helm install` of the chart in
//! each, controllers and gateways running with the ServiceAccount credentials the chart
//! created, `ServiceExport`s, `mesh link` pairwise, `ServiceImport`s naming every cluster,
//! traffic served locally, failover on EndpointSlice readiness and back, `mesh check`, the bad
//! inputs of the Kubernetes issue, and `mesh unlink`.
//!
//! One test walks the phases in order: they share three API servers and a cluster-set that
//! takes a while to start, and each phase builds on the previous one's state. Each phase is its
//! own function, named for what it proves.
//!
//! These tests never skip: without the Kubernetes binaries (no Go toolchain to build them) they
//! fail with the reason.

mod kube_support;
mod support;

use std::time::{Duration, Instant};

use kube_support::{
    DEMO_NS, MeshCluster, apply, bring_up, condition, get_json, kubeconfigs, kubectl, mesh,
    mesh_link,
};
use mesh_test_support::eventually;
use support::{Scratch, assert_failures_at_most, due_at, get, start_load, wait_served_by};

const HOST: &str = "echo.demo.svc.clusterset.local";
const RATE: u32 = 100;

/// (cluster, region, region priority).
const CLUSTERS: [(&str, &str, &[&str]); 3] = [
    ("us-east", "us-east", &["us-west", "eu"]),
    ("us-west", "us-west", &["us-east", "eu"]),
    ("eu-west", "eu", &["us-east", "us-west"]),
];

struct World {
    clusters: Vec<MeshCluster>,
    proxy: std::net::SocketAddr,
    _scratch: Scratch,
}

impl World {
    fn cluster(&self, name: &str) -> &MeshCluster {
        self.clusters
            .iter()
            .find(|c| c.name == name)
            .expect("cluster")
    }

    fn logs(&self) -> String {
        self.clusters.iter().map(MeshCluster::logs).collect()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_cluster_set_on_kubernetes() {
    let env = mesh_k8s_testenv::shared(&CLUSTERS.map(|(name, _, _)| name));
    let scratch = Scratch::new("kubernetes");
    let mut clusters = bring_up(env, &CLUSTERS, &["controller-0"], &[], &scratch.0).await;
    let proxy = clusters[0].start_client(&["controller-0"]).await;
    let mut world = World {
        clusters,
        proxy,
        _scratch: scratch,
    };

    link_pairwise_and_every_cluster_imports_echo_from_all_three(&world).await;
    exports_are_valid_and_a_request_is_served_locally(&world).await;
    endpoint_readiness_fails_over_within_two_seconds_and_back(&world).await;
    mesh_check_reports_a_healthy_set_as_healthy(&world);
    an_export_without_endpoints_is_imported_everywhere(&world).await;
    bad_inputs_are_refused_with_what_to_do(&world).await;
    unlink_removes_the_peer_imports_on_both_sides(&world).await;
    a_peer_presenting_another_trust_domain_is_not_ready(&world).await;
    mesh_check_names_a_link_deleted_on_one_side(&world).await;

    for c in &mut world.clusters {
        c.stop().await;
    }
}

fn configs(world: &World) -> Vec<String> {
    kubeconfigs(&world.clusters)
}

fn import_clusters(c: &MeshCluster) -> Vec<String> {
    get_json(c.kube, &["serviceimport", "echo", "-n", DEMO_NS])
        .and_then(|i| {
            i["status"]["clusters"].as_array().map(|a| {
                a.iter()
                    .filter_map(|c| c["cluster"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

async fn link_pairwise_and_every_cluster_imports_echo_from_all_three(world: &World) {
    let configs = configs(world);
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let ran = mesh_link("link", &configs[a], &configs[b], &["--wait", "90s"]);
        assert!(
            ran.ok,
            "mesh link {a} {b}: {}\n{}\n{}",
            ran.stderr,
            ran.stdout,
            world.logs()
        );
        assert!(
            ran.stdout.contains("both Links are Ready"),
            "{}",
            ran.stdout
        );
    }
    // Linking again changes nothing and succeeds (idempotent).
    let again = mesh_link("link", &configs[0], &configs[1], &[]);
    assert!(again.ok, "{}", again.stderr);
    let mut vips = Vec::new();
    for c in &world.clusters {
        eventually(
            &format!(
                "ServiceImport demo/echo in {} naming all three clusters",
                c.name
            ),
            Duration::from_secs(30),
            async || import_clusters(c) == ["eu-west", "us-east", "us-west"],
        )
        .await;
        let import = get_json(c.kube, &["serviceimport", "echo", "-n", DEMO_NS]).unwrap();
        assert_eq!(import["spec"]["type"], "ClusterSetIP");
        assert_eq!(import["spec"]["ports"][0]["port"], 80);
        // The cluster-set VIP the DNS server answers, recorded where it survives restarts.
        let vip = import["spec"]["ips"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(vip.starts_with("240.240."), "{}: {import}", c.name);
        vips.push(vip);
        let links = kubectl(c.kube, &["get", "links"], None);
        assert_eq!(
            links.matches("True").count(),
            2,
            "kubectl get links in {}:\n{links}",
            c.name
        );
    }
    assert!(
        vips.windows(2).all(|w| w[0] == w[1]),
        "one VIP for demo/echo in every cluster: {vips:?}"
    );
}

async fn exports_are_valid_and_a_request_is_served_locally(world: &World) {
    for c in &world.clusters {
        eventually(
            &format!(
                "ServiceExport demo/echo in {} Valid without conflict",
                c.name
            ),
            Duration::from_secs(15),
            async || {
                let export = get_json(c.kube, &["serviceexport", "echo", "-n", DEMO_NS]).unwrap();
                condition(&export, "Valid").is_some_and(|v| v.0 == "True")
                    && condition(&export, "Conflict").is_some_and(|v| v.0 == "False")
            },
        )
        .await;
    }
    let answer = get(world.proxy, &format!("http://{HOST}/")).await;
    assert_eq!(answer.status, 200, "{}\n{}", answer.text(), world.logs());
    assert_eq!(answer.served_by.as_deref(), Some("us-east"));
}

async fn endpoint_readiness_fails_over_within_two_seconds_and_back(world: &World) {
    let east = world.cluster("us-east");
    let load = start_load(world.proxy, HOST, RATE);
    let started = load.started();
    eventually("a second of answers", Duration::from_secs(10), async || {
        load.snapshot().len() >= RATE as usize
    })
    .await;
    // us-east's only endpoint is marked not ready, as kube-controller-manager would when its
    // readiness probe fails.
    let fault = Instant::now();
    east.write_echo_slice(&[("echo-0", false)]);
    let took = wait_served_by(
        &load,
        "us-west",
        0.9,
        Duration::from_millis(300),
        Duration::from_secs(2),
    )
    .await;
    eprintln!("failover observed {took:?} after the EndpointSlice update");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = load.snapshot();
    let window: Vec<_> = during
        .iter()
        .filter(|o| due_at(started, o) >= fault)
        .collect();
    let failed = window.iter().filter(|o| !o.ok()).count();
    assert!(
        failed * 100 <= window.len(),
        "{failed} of {} requests failed during the failover\n{}",
        window.len(),
        world.logs()
    );
    // Ready again: traffic comes back.
    east.write_echo_slice(&[("echo-0", true)]);
    wait_served_by(
        &load,
        "us-east",
        0.95,
        Duration::from_secs(1),
        Duration::from_secs(15),
    )
    .await;
    let result = load.finish().await;
    assert_failures_at_most(&result, 0.01, "over the failover and back", &world.logs());
}

fn mesh_check_reports_a_healthy_set_as_healthy(world: &World) {
    let configs = configs(world);
    let mut args = vec!["check"];
    for c in &configs {
        args.extend(["--kubeconfig", c.as_str()]);
    }
    let ran = mesh(&args);
    assert!(
        ran.ok,
        "mesh check of a healthy set failed:\n{}\n{}",
        ran.stdout, ran.stderr
    );
    assert!(!ran.stdout.contains("FAIL"), "{}", ran.stdout);
    for expected in [
        "crd links.mesh.dev",
        "controller",
        "link us-west",
        "trust eu-west",
        "rbac (controller)",
    ] {
        assert!(
            ran.stdout.contains(expected),
            "no {expected} in:\n{}",
            ran.stdout
        );
    }
    args.push("--json");
    let ran = mesh(&args);
    let findings: serde_json::Value = serde_json::from_str(&ran.stdout).expect("--json is JSON");
    assert!(findings.as_array().unwrap().iter().all(|f| f["ok"] == true));
}

async fn an_export_without_endpoints_is_imported_everywhere(world: &World) {
    // MCS: the import exists as soon as the service is exported, before any pod is ready.
    let west = world.cluster("us-west");
    apply(
        west.kube,
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: pending, namespace: {DEMO_NS}}}\n\
             spec: {{ports: [{{name: grpc, port: 9090}}]}}\n---\n\
             apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\n\
             metadata: {{name: pending, namespace: {DEMO_NS}}}\n"
        ),
    );
    for c in &world.clusters {
        eventually(
            &format!("ServiceImport demo/pending in {}", c.name),
            Duration::from_secs(15),
            async || {
                get_json(c.kube, &["serviceimport", "pending", "-n", DEMO_NS]).is_some_and(|i| {
                    i["spec"]["ports"][0]["port"] == 9090
                        && i["status"]["clusters"][0]["cluster"] == "us-west"
                })
            },
        )
        .await;
    }
}

async fn bad_inputs_are_refused_with_what_to_do(world: &World) {
    let east = world.cluster("us-east");
    let west = world.cluster("us-west");
    let configs = configs(world);

    // A ServiceExport whose Service does not exist: Valid=False with the reason.
    apply(
        east.kube,
        &format!(
            "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {{name: ghost, namespace: {DEMO_NS}}}\n"
        ),
    );
    eventually(
        "ServiceExport ghost invalid",
        Duration::from_secs(15),
        async || {
            get_json(east.kube, &["serviceexport", "ghost", "-n", DEMO_NS])
                .and_then(|e| condition(&e, "Valid"))
                .is_some_and(|(status, reason, message)| {
                    status == "False" && reason == "NoService" && message.contains("does not exist")
                })
        },
    )
    .await;
    assert!(get_json(west.kube, &["serviceimport", "ghost", "-n", DEMO_NS]).is_none());

    // Two clusters export one service with different ports: the newer export is in conflict.
    for (c, port) in [(east, 80), (west, 8080)] {
        apply(
            c.kube,
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: clash, namespace: {DEMO_NS}}}\n\
                 spec: {{ports: [{{name: http, port: {port}}}]}}\n---\n\
                 apiVersion: v1\nkind: Pod\nmetadata: {{name: clash-0, namespace: {DEMO_NS}}}\n\
                 spec: {{serviceAccountName: echo, containers: [{{name: c, image: mesh}}]}}\n---\n\
                 apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: clash-1\n  namespace: {DEMO_NS}\n  \
                 labels: {{kubernetes.io/service-name: clash}}\naddressType: IPv4\nendpoints:\n- addresses: [\"192.0.2.99\"]\n  \
                 targetRef: {{kind: Pod, name: clash-0, namespace: {DEMO_NS}}}\n---\n\
                 apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {{name: clash, namespace: {DEMO_NS}}}\n"
            ),
        );
        if port == 80 {
            // Creation times have a one-second resolution: us-west exports once the clock has
            // passed the second of us-east's export, so us-east's is strictly older.
            let export = get_json(east.kube, &["serviceexport", "clash", "-n", DEMO_NS]).unwrap();
            let created: mesh_k8s::k8s_openapi::jiff::Timestamp =
                export["metadata"]["creationTimestamp"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .expect("creationTimestamp");
            eventually(
                "a second past us-east's export",
                Duration::from_secs(3),
                async || {
                    mesh_k8s::k8s_openapi::jiff::Timestamp::now().as_second() > created.as_second()
                },
            )
            .await;
        }
    }
    eventually(
        "Conflict=True on us-west's newer export",
        Duration::from_secs(20),
        async || {
            get_json(west.kube, &["serviceexport", "clash", "-n", DEMO_NS])
                .and_then(|e| condition(&e, "Conflict"))
                .is_some_and(|(status, reason, message)| {
                    status == "True"
                        && reason == "PortConflict"
                        && message.contains("cluster us-east exported")
                })
        },
    )
    .await;
    let east_export = get_json(east.kube, &["serviceexport", "clash", "-n", DEMO_NS]).unwrap();
    assert_eq!(
        condition(&east_export, "Conflict").map(|c| c.0),
        Some("False".into())
    );
    let import = get_json(west.kube, &["serviceimport", "clash", "-n", DEMO_NS]).expect("import");
    assert_eq!(
        import["spec"]["ports"][0]["port"], 80,
        "the oldest export defines the ports"
    );

    // mesh link with an unreachable API server, a cluster without the chart, or one cluster
    // twice: non-zero, the cluster and the fix named, nothing written.
    let unreachable = east.dir.join("unreachable.kubeconfig");
    let text = std::fs::read_to_string(east.kube.kubeconfig())
        .unwrap()
        .replace(&east.kube.server(), "https://127.0.0.1:1");
    std::fs::write(&unreachable, text).unwrap();
    let ran = mesh_link(
        "link",
        &configs[0],
        unreachable.to_str().unwrap(),
        &["--wait", "5s"],
    );
    assert!(
        !ran.ok && ran.stderr.contains("unreachable.kubeconfig"),
        "{}",
        ran.stderr
    );
    let ran = mesh_link(
        "link",
        &configs[0],
        &configs[1],
        &["--namespace", "no-chart-here"],
    );
    assert!(
        !ran.ok && ran.stderr.contains("helm install"),
        "{}",
        ran.stderr
    );
    let ran = mesh_link("link", &configs[0], &configs[0], &[]);
    assert!(
        !ran.ok && ran.stderr.contains("cluster names must be unique"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        kubectl(east.kube, &["get", "links", "-o", "name"], None)
            .lines()
            .count(),
        2,
        "no Link was written by the refused runs"
    );

    // A Link whose trust bundle does not parse: Ready=False with what to do.
    apply(
        east.kube,
        "apiVersion: mesh.dev/v1alpha1\nkind: Link\nmetadata: {name: bogus}\nspec:\n  cluster: bogus\n  region: nowhere\n  \
         gatewayAddress: 192.0.2.1:15443\n  trustBundle: {trustDomain: bogus.mesh, caPem: not a certificate}\n",
    );
    eventually("Link bogus refused", Duration::from_secs(15), async || {
        get_json(east.kube, &["link", "bogus"])
            .and_then(|l| condition(&l, "Ready"))
            .is_some_and(|(status, reason, message)| {
                status == "False" && reason == "Invalid" && message.contains("fix the Link")
            })
    })
    .await;
    kubectl(east.kube, &["delete", "link", "bogus"], None);
    // A workload cannot get another ServiceAccount's identity: the CA signs what the token is.
    let refused = east
        .try_impersonating_sidecar("controller-0", "client", "echo")
        .await
        .expect_err("a client token must not obtain the echo identity");
    assert!(
        refused.contains("ServiceAccount demo/client") && refused.contains("cannot be issued"),
        "{refused}"
    );

    // Traffic still flows after all of the above.
    let answer = get(world.proxy, &format!("http://{HOST}/")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

async fn unlink_removes_the_peer_imports_on_both_sides(world: &World) {
    let configs = configs(world);
    let ran = mesh_link("unlink", &configs[0], &configs[2], &[]);
    assert!(ran.ok, "mesh unlink: {}", ran.stderr);
    let east = world.cluster("us-east");
    let eu = world.cluster("eu-west");
    eventually(
        "us-east's import without eu-west",
        Duration::from_secs(15),
        async || import_clusters(east) == ["us-east", "us-west"],
    )
    .await;
    eventually(
        "eu-west's import without us-east",
        Duration::from_secs(15),
        async || import_clusters(eu) == ["eu-west", "us-west"],
    )
    .await;
    assert!(get_json(east.kube, &["link", "eu-west"]).is_none());
    assert!(get_json(eu.kube, &["link", "us-east"]).is_none());
}

async fn a_peer_presenting_another_trust_domain_is_not_ready(world: &World) {
    // us-east gets a Link to "zz-west" whose gateway address is really eu-west's (unlinked from
    // us-east now): eu-west's gateway presents an eu-west.mesh certificate, which us-east must
    // refuse and report.
    let east = world.cluster("us-east");
    let eu = world.cluster("eu-west");
    let info = get_json(
        eu.kube,
        &["configmap", "mesh-link-info", "-n", "mesh-system"],
    )
    .unwrap();
    let info: serde_json::Value =
        serde_json::from_str(info["data"]["link-info.json"].as_str().unwrap()).unwrap();
    let link = serde_json::json!({
        "apiVersion": "mesh.dev/v1alpha1",
        "kind": "Link",
        "metadata": {"name": "zz-west"},
        "spec": {
            "cluster": "zz-west",
            "region": "zz",
            "gatewayAddress": info["gateway_addr"],
            "trustBundle": {"trustDomain": "zz-west.mesh", "caPem": info["trust_bundle"]["ca_pem"]},
        },
    });
    apply(east.kube, &link.to_string());
    eventually(
        "Link zz-west not ready, naming the trust domain",
        Duration::from_secs(20),
        async || {
            get_json(east.kube, &["link", "zz-west"])
                .and_then(|l| condition(&l, "Ready"))
                .is_some_and(|(status, reason, message)| {
                    status == "False"
                        && reason == "Disconnected"
                        && message.contains("eu-west.mesh")
                })
        },
    )
    .await;
    kubectl(east.kube, &["delete", "link", "zz-west"], None);
}

async fn mesh_check_names_a_link_deleted_on_one_side(world: &World) {
    let configs = configs(world);
    let west = world.cluster("us-west");
    kubectl(west.kube, &["delete", "link", "us-east"], None);
    let ran = mesh(&[
        "check",
        "--kubeconfig",
        &configs[0],
        "--kubeconfig",
        &configs[1],
    ]);
    assert!(!ran.ok, "mesh check must fail:\n{}", ran.stdout);
    assert!(
        ran.stdout
            .contains("us-east has a Link to us-west, but us-west has none back"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("mesh link"), "{}", ran.stdout);
}
