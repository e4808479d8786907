//! End to end with real processes: certificate rotation under load. Two clusters whose
//! controllers sign 30 s certificates; us-east's client calls us-west's echo by its
//! cluster-specific name, so those requests all cross the QUIC link, while us-west's client
//! calls its local replica. For
//! about two minutes every component (controllers, gateways, sidecars) renews several times;
//! no request fails and the QUIC link is never re-dialled.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::config::{ClusterSpec, Topology};
use mesh_launcher::cluster_set::ClusterSet;
use support::{
    Running, Scratch, assert_failures_at_most, eventually, mesh_bin, metric, start_load,
};

const HOST: &str = "echo.demo.svc.clusterset.local";
/// us-west's echo only: every request crosses the link.
const REMOTE_HOST: &str = "echo.demo.svc.us-west.clusterset.local";
const CERT_TTL: Duration = Duration::from_secs(30);
/// Renewals every component must have made: at 2/3 of 30 s (±3 s) that takes about 100 s.
const RENEWALS: f64 = 5.0;
/// How long the load runs at least.
const RUN: Duration = Duration::from_secs(120);

fn topology() -> Topology {
    let spec = |name: &str, other: &str, echo_replicas| ClusterSpec {
        name: name.into(),
        region: name.into(),
        region_priority: vec![other.into()],
        echo_replicas,
        client_port: None,
    };
    Topology {
        clusters: vec![spec("us-east", "us-west", 1), spec("us-west", "us-east", 1)],
        ..Topology::default_set()
    }
}

/// Every process of the set that holds a certificate: controllers, gateways, sidecars (the
/// clients and the echo replicas' sidecars), with its admin address.
fn certified(run: &Running) -> Vec<(String, SocketAddr)> {
    let mut out = Vec::new();
    for c in &run.set.clusters {
        for (name, _) in &c.processes {
            let holds_cert = name == "controller"
                || name == "gateway"
                || name == "client"
                || name.starts_with("sidecar-");
            if holds_cert {
                out.push((
                    format!("{}/{name}", c.spec.name),
                    run.admin_of(&c.spec.name, name),
                ));
            }
        }
    }
    out
}

async fn renewals(admin: SocketAddr) -> f64 {
    metric(
        admin,
        "mesh_certificate_renewals_total",
        "result=\"success\"",
    )
    .await
}

#[tokio::test(flavor = "current_thread")]
async fn every_component_renews_under_load_without_a_failed_request_or_a_dropped_link() {
    let scratch = Scratch::new("cert-rotation");
    let topology = topology().with_ephemeral_ports();
    let mut plan = ClusterSet::plan(&topology, &scratch.0.join("state"), &mesh_bin());
    plan.set_cert_ttl(CERT_TTL);
    let set = match plan.launch().await {
        Ok(set) => set,
        Err(e) => panic!("cluster-set did not start: {e}"),
    };
    let mut run = Running { set, scratch };
    let components = certified(&run);
    assert_eq!(components.len(), 8, "{components:?}");
    for (name, admin) in &components {
        let left = metric(
            *admin,
            "mesh_certificate_expiry_seconds",
            "identity=\"spiffe://",
        )
        .await;
        assert!(
            left > 0.0 && left <= CERT_TTL.as_secs_f64(),
            "{name}: certificate expires in {left}s, not within the 30 s lifetime"
        );
    }

    let cross = start_load(run.proxy("us-east"), REMOTE_HOST, 40);
    let local = start_load(run.proxy("us-west"), HOST, 20);
    eventually(
        Duration::from_secs(150),
        "every component renewed its certificate several times",
        || {
            let components = components.clone();
            async move {
                for (_, admin) in &components {
                    if renewals(*admin).await < RENEWALS {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    let started = cross.started();
    eventually(RUN, "two minutes of load", || async move {
        started.elapsed() >= RUN
    })
    .await;
    let cross = cross.finish().await;
    let local = local.finish().await;
    let logs = run.logs();
    assert_failures_at_most(
        &cross,
        0.0,
        "across the link while certificates rotated",
        &logs,
    );
    assert_failures_at_most(
        &local,
        0.0,
        "inside us-west while certificates rotated",
        &logs,
    );
    assert!(
        cross
            .outcomes
            .iter()
            .all(|o| o.served_by.as_deref() == Some("us-west")),
        "us-east's requests all crossed to us-west"
    );

    for (name, admin) in &components {
        assert_eq!(
            metric(
                *admin,
                "mesh_certificate_renewals_total",
                "result=\"failure\""
            )
            .await,
            0.0,
            "{name} had a failed renewal"
        );
        let left = metric(
            *admin,
            "mesh_certificate_expiry_seconds",
            "identity=\"spiffe://",
        )
        .await;
        assert!(left > 0.0, "{name}: certificate expired");
    }
    // The link came up once on each side and never went down: no re-dial.
    for cluster in ["us-east", "us-west"] {
        let log = std::fs::read_to_string(&run.set.process(cluster, "gateway").unwrap().log)
            .expect("gateway log");
        let ups = log.lines().filter(|l| l.contains("link up")).count();
        let downs: Vec<&str> = log.lines().filter(|l| l.contains("link down")).collect();
        assert_eq!(ups, 1, "{cluster}'s gateway linked {ups} times\n{log}");
        assert!(downs.is_empty(), "{cluster}'s link went down: {downs:?}");
        assert!(
            log.contains("certificate renewed"),
            "{cluster}'s gateway logs its renewals"
        );
    }
    run.stop().await;
}
