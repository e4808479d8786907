//! The mesh on real Kubernetes API servers when the control plane fails: the API server goes
//! away for 30 s under steady load (no failed request, the controller says so and resyncs), and
//! the leader controller replica is killed (the other takes over within the lease time, no
//! failed request).
//!
//! One test walks the phases in order on two API servers (see `kubernetes.rs` for why).

mod kube_support;
mod support;

use std::time::{Duration, Instant};

use kube_support::{MESH_NS, MeshCluster, bring_up, get_json, kubeconfigs, mesh_link};
use mesh_test_support::eventually;
use support::{Scratch, assert_failures_at_most, get, start_load, wait_served_by};

const HOST: &str = "echo.demo.svc.clusterset.local";
const RATE: u32 = 50;
/// Short, so that the takeover is quick to observe; the controller refuses less than 2 s.
const LEADER_LEASE: &str = "4s";

/// The controller's replicas in each cluster, as the chart runs them.
const REPLICAS: [&str; 2] = ["controller-0", "controller-1"];

const CLUSTERS: [(&str, &str, &[&str]); 2] = [
    ("us-east", "us-east", &["us-west"]),
    ("us-west", "us-west", &["us-east"]),
];

#[tokio::test(flavor = "current_thread")]
async fn the_mesh_rides_out_control_plane_failures() {
    let env = mesh_k8s_testenv::shared(&CLUSTERS.map(|(name, _, _)| name));
    let scratch = Scratch::new("kubernetes-faults");
    let mut clusters = bring_up(
        env,
        &CLUSTERS,
        &REPLICAS,
        &["--leader-lease", LEADER_LEASE],
        &scratch.0,
    )
    .await;
    let configs = kubeconfigs(&clusters);
    let ran = mesh_link("link", &configs[0], &configs[1], &["--wait", "90s"]);
    assert!(ran.ok, "mesh link: {}", ran.stderr);
    let proxy = clusters[0].start_client(&REPLICAS).await;
    let answer = get(proxy, &format!("http://{HOST}/")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    api_server_away_for_30s_fails_no_request_and_the_controller_resyncs(&mut clusters, proxy).await;
    killing_the_leader_hands_over_within_the_lease_without_a_failed_request(&mut clusters, proxy)
        .await;

    for c in &mut clusters {
        c.stop().await;
    }
}

async fn controller_readyz(c: &MeshCluster, replica: &str) -> String {
    let admin = c.addr(replica, "admin");
    let mut stream = tokio::net::TcpStream::connect(admin).await.expect("admin");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

async fn api_server_away_for_30s_fails_no_request_and_the_controller_resyncs(
    clusters: &mut [MeshCluster],
    proxy: std::net::SocketAddr,
) {
    let east = &clusters[0];
    let load = start_load(proxy, HOST, RATE);
    eventually("a second of answers", Duration::from_secs(10), async || {
        load.snapshot().len() >= RATE as usize
    })
    .await;
    east.kube.stop_apiserver();
    let away = Instant::now();
    eventually(
        "the controller saying it serves its last state",
        Duration::from_secs(20),
        async || {
            controller_readyz(east, "controller-0")
                .await
                .contains("Kubernetes API unreachable")
        },
    )
    .await;
    // The outage lasts 30 s, as the issue asks, whatever the detection above took.
    tokio::time::sleep_until((away + Duration::from_secs(30)).into()).await;
    // Restarting waits (blocking) for the API server's readiness: off the runtime, so the load
    // it drives keeps flowing meanwhile.
    let kube = east.kube;
    tokio::task::spawn_blocking(move || kube.restart_apiserver())
        .await
        .expect("restart task")
        .expect("the API server comes back");
    eventually(
        "the controller resynced",
        Duration::from_secs(30),
        async || {
            let readyz = controller_readyz(east, "controller-0").await;
            readyz.contains("200 OK") && !readyz.contains("unreachable")
        },
    )
    .await;
    // The watches work again: a change made now reaches the sidecars (traffic leaves us-east).
    east.write_echo_slice(&[("echo-0", false)]);
    wait_served_by(
        &load,
        "us-west",
        0.9,
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
    .await;
    east.write_echo_slice(&[("echo-0", true)]);
    let result = load.finish().await;
    assert_failures_at_most(&result, 0.0, "while the API server was away", &east.logs());
}

fn leader(c: &MeshCluster) -> Option<String> {
    get_json(c.kube, &["lease", "mesh-controller", "-n", MESH_NS])?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

async fn killing_the_leader_hands_over_within_the_lease_without_a_failed_request(
    clusters: &mut [MeshCluster],
    proxy: std::net::SocketAddr,
) {
    let east = &mut clusters[0];
    let mut holder = None;
    eventually("a leader in us-east", Duration::from_secs(15), async || {
        holder = leader(east);
        holder.is_some()
    })
    .await;
    let old = holder.expect("leader");
    let load = start_load(proxy, HOST, RATE);
    eventually("a second of answers", Duration::from_secs(10), async || {
        load.snapshot().len() >= RATE as usize
    })
    .await;
    east.kill(&old).await;
    let killed = Instant::now();
    eventually(
        "the other replica leading",
        Duration::from_secs(15),
        async || leader(east).is_some_and(|l| l != old),
    )
    .await;
    let took = killed.elapsed();
    eprintln!("leadership moved {took:?} after the leader was killed");
    assert!(
        took <= Duration::from_secs(4 + 3),
        "took {took:?} for a {LEADER_LEASE} lease"
    );
    // The new leader writes: a service exported now gets its ServiceImport.
    kube_support::apply(
        east.kube,
        "apiVersion: v1\nkind: Service\nmetadata: {name: late, namespace: demo}\nspec: {ports: [{port: 81}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: late-0, namespace: demo}\nspec: {serviceAccountName: echo, containers: [{name: c, image: mesh}]}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: late-1, namespace: demo, labels: {kubernetes.io/service-name: late}}\n\
         addressType: IPv4\nendpoints: [{addresses: [\"192.0.2.98\"], targetRef: {kind: Pod, name: late-0, namespace: demo}}]\n---\n\
         apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {name: late, namespace: demo}\n",
    );
    eventually(
        "the new leader importing the new service",
        Duration::from_secs(15),
        async || get_json(east.kube, &["serviceimport", "late", "-n", "demo"]).is_some(),
    )
    .await;
    let result = load.finish().await;
    assert_failures_at_most(&result, 0.0, "when the leader was killed", &east.logs());
}
