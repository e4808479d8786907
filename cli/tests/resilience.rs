//! End to end with real processes: losing a gateway, losing a controller, and a peer whose link
//! stays down past the lease grace period.

mod support;

use std::time::Duration;

use http::StatusCode;
use mesh_core::config::Topology;
use support::{Running, eventually, get};

/// One cluster-set at a time: these tests check timings, and two cores are shared.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ANY: &str = "http://echo.demo.svc.clusterset.local/";

fn in_order(status: &mesh_core::api::ControllerStatus, cluster: &str) -> bool {
    status
        .services
        .iter()
        .filter(|s| s.service.to_string() == "echo.demo")
        .any(|s| s.localities.iter().any(|l| l.cluster == cluster))
}

#[tokio::test(flavor = "current_thread")]
async fn losing_a_gateway_drops_its_cluster_everywhere_and_it_rejoins() {
    let _serial = SERIAL.lock().await;
    let mut run = Running::default_set("gateway-loss").await;
    // Make us-east depend on remote clusters: its replicas are gone, us-west is next.
    for r in ["echo-0", "echo-1"] {
        run.set.kill("us-east", r).await.unwrap();
        run.set
            .kill("us-east", &format!("sidecar-{r}"))
            .await
            .unwrap();
    }
    let proxy = run.proxy("us-east");
    eventually(
        Duration::from_secs(10),
        "us-east traffic served by us-west",
        || async { get(proxy, ANY).await.served_by.as_deref() == Some("us-west") },
    )
    .await;

    run.set.kill("us-west", "gateway").await.unwrap();
    let killed = std::time::Instant::now();
    for c in ["us-east", "eu-central"] {
        eventually(
            Duration::from_secs(5).saturating_sub(killed.elapsed()),
            &format!("us-west out of {c}'s order"),
            || async { !in_order(&run.status(c).await, "us-west") },
        )
        .await;
    }
    // Requests that went to us-west now go to eu-central.
    for _ in 0..20 {
        let a = get(proxy, ANY).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert_eq!(a.served_by.as_deref(), Some("eu-central"));
    }

    run.set.restart("us-west", "gateway").await.unwrap();
    for c in ["us-east", "eu-central"] {
        eventually(
            Duration::from_secs(15),
            &format!("us-west back in {c}'s order"),
            || async { in_order(&run.status(c).await, "us-west") },
        )
        .await;
    }
    eventually(
        Duration::from_secs(15),
        "us-east traffic back on us-west",
        || async { get(proxy, ANY).await.served_by.as_deref() == Some("us-west") },
    )
    .await;
    run.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn sidecars_keep_serving_without_their_controller_and_resubscribe() {
    let _serial = SERIAL.lock().await;
    let mut run = Running::default_set("controller-loss").await;
    let proxy = run.proxy("us-east");
    // Traffic before the loss: the client sidecar's last snapshot includes the service.
    assert_eq!(get(proxy, ANY).await.status, StatusCode::OK);
    run.set.kill("us-east", "controller").await.unwrap();
    for _ in 0..20 {
        let a = get(proxy, ANY).await;
        assert_eq!(
            (a.status, a.served_by.as_deref()),
            (StatusCode::OK, Some("us-east")),
            "{}",
            a.text()
        );
        let a = get(proxy, "http://echo.demo.svc.eu-central.clusterset.local/").await;
        assert_eq!(
            (a.status, a.served_by.as_deref()),
            (StatusCode::OK, Some("eu-central")),
            "{}",
            a.text()
        );
    }
    run.set.restart("us-east", "controller").await.unwrap();
    // While the fresh controller relearns its registrations and its peers' catalogs, its
    // snapshots are marked warming: the client sidecar must not take their gaps for truth (no
    // "not exported" 503, no failover of a locality whose replicas have not registered again).
    let warm_up_end = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < warm_up_end {
        for (url, cluster) in [
            (ANY, "us-east"),
            (
                "http://echo.demo.svc.eu-central.clusterset.local/",
                "eu-central",
            ),
        ] {
            let a = get(proxy, url).await;
            assert_eq!(
                (a.status, a.served_by.as_deref()),
                (StatusCode::OK, Some(cluster)),
                "during the controller's warm-up: {}",
                a.text()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The sidecars come back: the controller sees the echo replicas register again, and the
    // client sidecar's discovery stream reconnects.
    let client_admin = run
        .set
        .process("us-east", "client")
        .and_then(|p| p.ready.as_ref())
        .and_then(|r| r.addr("admin"))
        .unwrap();
    eventually(
        Duration::from_secs(15),
        "client sidecar resubscribed",
        || async {
            let m = mesh_launcher::admin_client::call(
                client_admin,
                http::Method::GET,
                "/metrics",
                None,
            )
            .await;
            m.map(|b| {
                String::from_utf8_lossy(&b).lines().any(|l| {
                    l.starts_with("mesh_sidecar_discovery_connected")
                        && l.trim_end().ends_with(" 1")
                })
            })
            .unwrap_or(false)
        },
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "echo replicas registered again",
        || async {
            let s = run.status("us-east").await;
            s.services.iter().any(|svc| {
                svc.endpoints
                    .iter()
                    .any(|e| e.cluster == "us-east" && e.healthy == 2)
            })
        },
    )
    .await;
    let a = get(proxy, ANY).await;
    assert_eq!(
        (a.status, a.served_by.as_deref()),
        (StatusCode::OK, Some("us-east"))
    );
    run.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_peer_down_longer_than_the_grace_period_is_withdrawn() {
    let _serial = SERIAL.lock().await;
    let mut topology = Topology::default_set();
    topology.lease_grace = Duration::from_secs(3);
    let mut run = Running::start("stale-peer", topology).await;
    let proxy = run.proxy("us-east");
    let eu = "http://echo.demo.svc.eu-central.clusterset.local/";
    assert_eq!(
        get(proxy, eu).await.served_by.as_deref(),
        Some("eu-central")
    );

    run.set.kill("eu-central", "gateway").await.unwrap();
    eventually(
        Duration::from_secs(15),
        "eu-central withdrawn in us-east",
        || async {
            let s = run.status("us-east").await;
            let link_withdrawn = s
                .links
                .iter()
                .any(|l| l.cluster == "eu-central" && l.state == "withdrawn");
            let no_endpoints = s
                .services
                .iter()
                .all(|svc| svc.endpoints.iter().all(|e| e.cluster != "eu-central"));
            link_withdrawn && no_endpoints
        },
    )
    .await;
    let a = get(proxy, eu).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    assert!(a.text().contains("eu-central"), "{}", a.text());
    // The rest still works.
    assert_eq!(get(proxy, ANY).await.status, StatusCode::OK);
    run.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn unlink_withdraws_a_peer_at_once_and_link_restores_it() {
    let _serial = SERIAL.lock().await;
    let mut run = Running::default_set("unlink").await;
    let proxy = run.proxy("us-east");
    let eu = "http://echo.demo.svc.eu-central.clusterset.local/";
    assert_eq!(
        get(proxy, eu).await.served_by.as_deref(),
        Some("eu-central")
    );
    let (east, central) = (
        run.admin("us-east").to_string(),
        run.admin("eu-central").to_string(),
    );
    // `mesh link` / `unlink` read each controller's admin token in the state directory.
    let mesh = |args: &[&str]| {
        let out = std::process::Command::new(support::mesh_bin())
            .args(args)
            .arg("--state-dir")
            .arg(&run.scratch.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mesh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let said = mesh(&["unlink", &east, &central]);
    assert!(said.contains("unlinked us-east and eu-central"), "{said}");
    // No grace period for an unlink: trust and endpoints go at once, on both sides.
    let s = run.status("us-east").await;
    assert!(
        s.links.iter().all(|l| l.cluster != "eu-central"),
        "{:?}",
        s.links
    );
    assert!(!in_order(&s, "eu-central"));
    assert!(
        run.status("eu-central")
            .await
            .links
            .iter()
            .all(|l| l.cluster != "us-east")
    );
    eventually(
        Duration::from_secs(5),
        "requests to eu-central refused after unlink",
        || async { get(proxy, eu).await.status == StatusCode::SERVICE_UNAVAILABLE },
    )
    .await;
    // Unlinking twice is not an error.
    mesh(&["unlink", &east, &central]);

    let said = mesh(&["link", &east, &central]);
    assert!(said.contains("linked us-east and eu-central"), "{said}");
    mesh(&["link", &east, &central]);
    eventually(
        Duration::from_secs(15),
        "eu-central serves us-east again",
        || async { get(proxy, eu).await.served_by.as_deref() == Some("eu-central") },
    )
    .await;
    run.stop().await;
}
