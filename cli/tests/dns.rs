//! The controllers' DNS servers in a running cluster-set, asked with the real `dig`: every
//! cluster gives `echo.demo.svc.clusterset.local` the same VIP, a peer's per-cluster name
//! resolves while it is linked, is NXDOMAIN once its link is down for the whole lease and stays
//! so once it is unlinked,
//! and `mesh up` prints the `dig` line for each cluster.
//!
//! Without `dig` the test is skipped with a message, except under `CI=true`, where it fails.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::config::Topology;
use support::{Running, eventually};

fn have_dig() -> bool {
    let found = std::process::Command::new("dig")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "`dig` is missing (install dnsutils); CI must run the DNS tests"
        );
        eprintln!("skipping: `dig` is not installed (apt-get install dnsutils)");
    }
    found
}

/// `dig @server -p port <name>`: its status and its answers.
fn dig(server: SocketAddr, name: &str) -> (String, Vec<String>) {
    support::dig(server, &[name])
}

#[tokio::test(flavor = "current_thread")]
async fn per_cluster_names_follow_links_and_leases() {
    if !have_dig() {
        return;
    }
    let mut topology = Topology::default_set();
    topology.lease_grace = Duration::from_secs(3);
    let mut run = Running::start("dns", topology).await;
    let dns = |cluster: &str| {
        run.set
            .cluster(cluster)
            .and_then(|c| c.controller_dns())
            .expect("controller DNS address")
    };
    let (east, central) = (dns("us-east"), dns("eu-central"));

    // The same VIP for the same service in every cluster.
    let set = "echo.demo.svc.clusterset.local";
    let mut vips = Vec::new();
    for c in &run.set.clusters {
        let server = c.controller_dns().expect("DNS address");
        let (status, answers) = dig(server, set);
        assert_eq!(status, "NOERROR", "{}: {answers:?}", c.spec.name);
        assert_eq!(answers.len(), 1, "{}: {answers:?}", c.spec.name);
        vips.push(answers[0].clone());
    }
    assert!(vips.windows(2).all(|w| w[0] == w[1]), "{vips:?}");
    assert_eq!(dig(central, set).1, dig(east, set).1);

    // eu-central's per-cluster name resolves in us-east while linked.
    let pinned = "echo.demo.svc.eu-central.clusterset.local";
    let (status, answers) = dig(east, pinned);
    assert_eq!(
        (status.as_str(), answers.len()),
        ("NOERROR", 1),
        "{answers:?}"
    );
    assert_eq!(dig(east, "nope.demo.svc.clusterset.local").0, "NXDOMAIN");
    assert_eq!(dig(east, "example.com").0, "REFUSED");

    // Its gateway gone, the link is down; once the lease (3 s here) runs out its catalog is
    // withdrawn and the name is NXDOMAIN. The cluster-set name stays (us-east exports the
    // service too).
    run.set
        .kill("eu-central", "gateway")
        .await
        .expect("kill eu-central's gateway");
    eventually(
        Duration::from_secs(15),
        "eu-central's per-cluster name NXDOMAIN in us-east after the lease",
        || async { dig(east, pinned).0 == "NXDOMAIN" },
    )
    .await;
    assert_eq!(dig(east, set).1, vips[..1].to_vec());

    // Unlinked: still NXDOMAIN (an unlink withdraws at once, without a grace period).
    let admin = |c: &str| {
        run.set
            .cluster(c)
            .and_then(|c| c.controller_admin())
            .expect("admin")
            .to_string()
    };
    let out = std::process::Command::new(support::mesh_bin())
        .args(["unlink", &admin("us-east"), &admin("eu-central")])
        // `mesh unlink` reads each controller's admin token in the state directory.
        .arg("--state-dir")
        .arg(&run.scratch.0)
        .output()
        .expect("mesh unlink runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        Duration::from_secs(15),
        "eu-central's per-cluster name NXDOMAIN in us-east",
        || async { dig(east, pinned).0 == "NXDOMAIN" },
    )
    .await;
    assert_eq!(dig(east, set).1, vips[..1].to_vec());
    assert_eq!(
        dig(east, "echo.demo.svc.us-east.clusterset.local").0,
        "NOERROR"
    );
    run.stop().await;
}
