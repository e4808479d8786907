//! End to end with real processes: us-east's root CA is rotated with `mesh ca rotate` while
//! requests cross the link both ways (us-east's client calls us-west's echo, us-west's client
//! calls us-east's). No request fails; afterwards every component of us-east presents a
//! certificate of the new root (checked by a TLS handshake trusting only that root), us-west
//! holds only the new root for us-east, and a certificate of the old root is refused at
//! handshake with a message naming the trust domain.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::api::{ALPN_H2, LinkInfo, PATH_LINKS};
use mesh_core::config::{ClusterSpec, Topology};
use mesh_core::identity::rotation::{
    PATH_CA_ROTATION, RotationPhase, RotationStatus, bundle_fingerprints,
};
use mesh_core::identity::{
    ClusterCa, SpiffeId, TrustBundle, TrustStore, WorkloadIdentity, client_config,
};
use mesh_launcher::cluster_set::ClusterSet;
use support::{Running, Scratch, assert_failures_at_most, eventually, mesh_bin, start_load};

/// us-west's echo only: every request from us-east crosses the link.
const TO_WEST: &str = "echo.demo.svc.us-west.clusterset.local";
/// us-east's echo only: every request from us-west crosses the link to the rotating cluster.
const TO_EAST: &str = "echo.demo.svc.us-east.clusterset.local";
/// Short lifetimes, so the switch's roll-over takes seconds (renewal at 2/3 of it).
const CERT_TTL: Duration = Duration::from_secs(20);
const RATE: u32 = 40;

fn topology() -> Topology {
    let spec = |name: &str, other: &str| ClusterSpec {
        name: name.into(),
        region: name.into(),
        region_priority: vec![other.into()],
        echo_replicas: 1,
        client_port: None,
    };
    Topology {
        clusters: vec![spec("us-east", "us-west"), spec("us-west", "us-east")],
        ..Topology::default_set()
    }
}

fn bundle(cluster: &str, pem: &str) -> TrustBundle {
    TrustBundle {
        trust_domain: format!("{cluster}.mesh"),
        cluster: cluster.into(),
        ca_pem: pem.into(),
    }
}

/// A mutual TLS handshake with the server at `addr`, presenting `identity` and trusting
/// `trusted` (the mesh's own verifier): the error when either side refused.
async fn handshake(
    addr: SocketAddr,
    identity: &WorkloadIdentity,
    trusted: &[TrustBundle],
) -> Result<(), String> {
    let store = TrustStore::new(trusted).map_err(|e| e.to_string())?;
    let rotating =
        mesh_core::identity::RotatingIdentity::new(identity.clone()).map_err(|e| e.to_string())?;
    let config = client_config(Some(&rotating), store, &[ALPN_H2]).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("mesh").expect("a server name");
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // The server judges our certificate after our Finished: a refusal arrives as an alert on
    // the first read. An accepted connection stays open (the read times out).
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(500), tls.read(&mut buf)).await {
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(0)) => Err("closed by the server".into()),
        _ => Ok(()),
    }
}

/// Every TLS listener of us-east's components: controller (control), gateway (tunnel),
/// sidecars (inbound).
fn east_listeners(run: &Running) -> Vec<(String, SocketAddr)> {
    let east = run.set.cluster("us-east").expect("us-east");
    let mut out = Vec::new();
    for (name, process) in &east.processes {
        let Some(ready) = process.ready.as_ref() else {
            continue;
        };
        for role in ["control", "tunnel", "inbound"] {
            if let Some(addr) = ready.addr(role) {
                out.push((format!("us-east/{name} {role}"), addr));
            }
        }
    }
    out
}

async fn rotation(admin: SocketAddr) -> RotationStatus {
    mesh_launcher::admin_client::get_json(admin, PATH_CA_ROTATION)
        .await
        .expect("rotation status")
}

/// Runs `mesh ca rotate --cluster us-east` with `args`, against the controller at `admin`
/// and the state in `state`: what it printed and how it ended.
async fn ca_rotate_us_east(admin: SocketAddr, state: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(mesh_bin())
        .args(["ca", "rotate", "--cluster", "us-east"])
        .args(args)
        .arg("--admin")
        .arg(admin.to_string())
        .arg("--state-dir")
        .arg(state)
        .output()
        .await
        .unwrap_or_else(|e| panic!("mesh ca rotate {args:?} does not run: {e}"))
}

fn fingerprints(pem: &str) -> Vec<String> {
    bundle_fingerprints(pem).expect("a PEM bundle")
}

#[tokio::test(flavor = "current_thread")]
async fn rotating_a_root_under_cross_cluster_load_fails_no_request() {
    let scratch = Scratch::new("root-rotation");
    let state = scratch.0.join("state");
    let topology = topology().with_ephemeral_ports();
    let mut plan = ClusterSet::plan(&topology, &state, &mesh_bin());
    plan.set_cert_ttl(CERT_TTL);
    let set = match plan.launch().await {
        Ok(set) => set,
        Err(e) => panic!("cluster-set did not start: {e}"),
    };
    let mut run = Running { set, scratch };
    let east_dir = state.join("us-east");
    let old_ca = ClusterCa::load(&east_dir, "us-east.mesh").expect("us-east's CA");
    let old_root = fingerprints(old_ca.cert_pem());
    let east_admin = run.admin("us-east");
    let west_admin = run.admin("us-west");
    assert_eq!(rotation(east_admin).await.phase, None);

    let to_west = start_load(run.proxy("us-east"), TO_WEST, RATE);
    let to_east = start_load(run.proxy("us-west"), TO_EAST, RATE);
    eventually(Duration::from_secs(15), "answers both ways", || {
        let n = (to_west.snapshot().len(), to_east.snapshot().len());
        async move { n.0 >= RATE as usize && n.1 >= RATE as usize }
    })
    .await;

    let out = ca_rotate_us_east(east_admin, &state, &["--timeout", "3m"]).await;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "mesh ca rotate failed:\n{printed}\n{}",
        run.logs()
    );
    assert!(printed.contains("root rotated"), "{printed}");
    eprintln!("mesh ca rotate:\n{printed}");

    // A couple more seconds of load after the last step, then the verdict.
    let more = tokio::time::Instant::now();
    eventually(
        Duration::from_secs(5),
        "load after the rotation",
        || async move { more.elapsed() >= Duration::from_secs(2) },
    )
    .await;
    let to_west = to_west.finish().await;
    let to_east = to_east.finish().await;
    let logs = format!("mesh ca rotate:\n{printed}\n{}", run.logs());
    assert_failures_at_most(&to_west, 0.0, "from us-east while its root rotated", &logs);
    assert_failures_at_most(&to_east, 0.0, "to us-east while its root rotated", &logs);

    // The controller's report: retired, complete, one root, the new one.
    let status = rotation(east_admin).await;
    assert_eq!(status.phase, Some(RotationPhase::Retired), "{status:?}");
    assert!(status.complete(), "{status:?}");
    let new_root = status.new_root.clone().expect("the new root");
    assert_eq!(
        status
            .roots
            .iter()
            .map(|r| &r.fingerprint)
            .collect::<Vec<_>>(),
        vec![&new_root]
    );
    assert_ne!(vec![new_root.clone()], old_root);
    // `--status` tells the same to a person.
    let shown = ca_rotate_us_east(east_admin, &state, &["--status"]).await;
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.contains("rotation phase retire, complete")
            && shown.contains(&format!("new root {} (signing)", &new_root[..16]))
            && shown
                .lines()
                .any(|l| l.contains("us-west") && l.contains(&new_root[..16])),
        "{shown}"
    );
    // ca.crt and the key hold the new root only.
    let new_ca = ClusterCa::load(&east_dir, "us-east.mesh").expect("the rotated CA");
    assert_eq!(fingerprints(new_ca.trusted_pem()), vec![new_root.clone()]);
    // us-west learned it on the link, without `mesh link`, and persisted it.
    let links: Vec<LinkInfo> = mesh_launcher::admin_client::get_json(west_admin, PATH_LINKS)
        .await
        .expect("us-west's links");
    let held = links
        .iter()
        .find(|l| l.cluster == "us-east")
        .expect("us-west still links us-east");
    assert_eq!(
        fingerprints(&held.trust_bundle.ca_pem),
        vec![new_root.clone()]
    );
    let saved = std::fs::read_to_string(state.join("us-west").join("links.json")).unwrap();
    assert!(saved.contains(new_ca.cert_pem().lines().nth(1).unwrap()));

    // Every us-east component presents a certificate of the new root: a handshake trusting
    // only the new root succeeds, one trusting only the old root is refused.
    let probe = SpiffeId::workload("us-east.mesh", "demo", "probe");
    let new_id = new_ca.issue(&probe, Duration::from_secs(60)).unwrap();
    let new_only = [bundle("us-east", new_ca.cert_pem())];
    let old_only = [bundle("us-east", old_ca.cert_pem())];
    let listeners = east_listeners(&run);
    assert_eq!(
        listeners.len(),
        3,
        "controller, gateway, echo sidecar: {listeners:?}"
    );
    for (name, addr) in &listeners {
        if let Err(e) = handshake(*addr, &new_id, &new_only).await {
            panic!("{name} does not present a certificate of the new root: {e}\n{logs}");
        }
        let err = handshake(*addr, &new_id, &old_only)
            .await
            .expect_err("a certificate of the new root does not verify against the old");
        assert!(err.contains("does not chain"), "{name}: {err}");
    }

    // A certificate signed by the old root is refused at handshake, here and at us-west, with
    // a message naming the trust domain.
    let old_id = old_ca.issue(&probe, Duration::from_secs(60)).unwrap();
    let west_ca = std::fs::read_to_string(state.join("us-west").join("ca.crt")).unwrap();
    let west_echo = run
        .set
        .process("us-west", "sidecar-echo-0")
        .and_then(|p| p.ready.as_ref())
        .and_then(|r| r.addr("inbound"))
        .expect("us-west's echo sidecar");
    let trusted = [bundle("us-west", &west_ca), new_only[0].clone()];
    assert!(handshake(west_echo, &old_id, &trusted).await.is_err());
    assert!(handshake(west_echo, &new_id, &trusted).await.is_ok());
    let west_log = run
        .set
        .process("us-west", "sidecar-echo-0")
        .unwrap()
        .log
        .clone();
    refused_naming_the_domain(&west_log).await;

    // The QUIC link was never re-dialled by the rotation.
    for cluster in ["us-east", "us-west"] {
        let log = std::fs::read_to_string(&run.set.process(cluster, "gateway").unwrap().log)
            .expect("gateway log");
        let downs: Vec<&str> = log.lines().filter(|l| l.contains("link down")).collect();
        assert!(downs.is_empty(), "{cluster}'s link went down: {downs:?}");
    }
    run.stop().await;
}

/// The sidecar logged the refusal with the trust domain and what is wrong.
async fn refused_naming_the_domain(log: &Path) {
    let log = log.to_path_buf();
    eventually(
        Duration::from_secs(5),
        "the refusal of the old root's certificate logged",
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move {
                text.lines().any(|l| {
                    l.contains("TLS handshake refused")
                        && l.contains("claims trust domain us-east.mesh")
                        && l.contains("does not chain to that domain's root")
                })
            }
        },
    )
    .await;
}
