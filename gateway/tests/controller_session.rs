//! `mesh_gateway::run` against a fake controller: bootstrap with the join token, ready file and
//! admin port, reports, snapshots that link it with a peer, federation POSTs with a 409 resync,
//! and riding out a controller outage on the last snapshot.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::fake_controller::FakeController;
use common::{Cluster, TestGateway, exports, wait_until, within};
use mesh_core::api::{GatewayReport, ReadyFile};
use mesh_core::catalog::CatalogMessage;
use mesh_core::member_args::ClusterMemberArgs;
use mesh_gateway::GatewayArgs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("mesh-gateway-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A plain HTTP/1.1 GET on the admin port; returns status and body.
async fn admin_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    within("admin GET", async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await?;
        let status = raw.get(9..12).context("short answer")?.parse()?;
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    })
    .await
}

/// The body of a chunked or plain HTTP/1.1 answer holding one JSON document.
fn json_in(body: &str) -> &str {
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map(|i| i + 1).unwrap_or(body.len());
    &body[start..end]
}

fn bravo_up(report: &Option<GatewayReport>) -> bool {
    report.as_ref().is_some_and(|r| {
        r.peers
            .iter()
            .any(|p| p.cluster == "bravo" && p.up && p.rtt_seconds.is_some())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_bootstraps_reports_links_and_rides_out_a_controller_outage() -> Result<()> {
    let (alpha, bravo) = (Cluster::new("alpha")?, Cluster::new("bravo")?);
    let scratch = Scratch::new("run")?;
    let ca_file = scratch.0.join("ca.crt");
    let token_file = scratch.0.join("join-token");
    let ready_file = scratch.0.join("gateway.ready");
    std::fs::write(&ca_file, alpha.ca.cert_pem())?;
    std::fs::write(&token_file, "join-secret\n")?;
    let mut ctl = FakeController::start(&alpha, "join-secret").await?;
    let gb = TestGateway::start(&bravo, None).await?;

    let args = GatewayArgs {
        member: ClusterMemberArgs {
            cluster: "alpha".into(),
            controller: ctl.addr.into(),
            ca_file,
            token_file,
            admin: "127.0.0.1:0".parse()?,
            ready_file: Some(ready_file.clone()),
        },
        quic: "127.0.0.1:0".parse()?,
        tunnel: "127.0.0.1:0".parse()?,
        advertise_quic: None,
        advertise_tunnel: None,
        keep_alive: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(3),
        renew_at: Default::default(),
    };
    let gateway = tokio::spawn(mesh_gateway::run(args));

    wait_until("the ready file is written", || {
        ReadyFile::read(&ready_file).is_ok()
    })
    .await?;
    let ready = ReadyFile::read(&ready_file)?;
    assert_eq!(
        (ready.component.as_str(), ready.cluster.as_str()),
        ("gateway", "alpha")
    );
    assert_eq!(ready.pid, std::process::id());
    let (quic, tunnel, admin) = (
        ready.addr("quic").context("quic role")?,
        ready.addr("tunnel").context("tunnel role")?,
        ready.addr("admin").context("admin role")?,
    );
    assert!(quic.port() != 0 && tunnel.port() != 0 && admin.port() != 0);
    assert_eq!(admin_get(admin, "/readyz").await?.0, 200);
    let (status, body) = admin_get(admin, "/v1/status").await?;
    assert_eq!(status, 200);
    let report: GatewayReport = serde_json::from_str(json_in(&body))?;
    assert_eq!((report.quic_addr, report.tunnel_addr), (quic, tunnel));

    // Reports flow before any peer exists, carrying the real addresses.
    wait_until("a report reaches the controller", || {
        ctl.last_report()
            .is_some_and(|r| r.quic_addr == quic && r.tunnel_addr == tunnel)
    })
    .await?;

    // The controller links alpha with bravo.
    let echo: SocketAddr = "127.0.0.1:7001".parse()?;
    ctl.publish(alpha.snapshot(
        1,
        vec![bravo.peer(gb.core.quic_addr())],
        exports("alpha", 1, &[]),
    ));
    gb.publish(bravo.snapshot(
        1,
        vec![alpha.peer(quic)],
        exports("bravo", 1, &[("echo.demo", &[echo])]),
    ));
    wait_until("the report shows bravo up", || bravo_up(&ctl.last_report())).await?;
    wait_until("bravo's catalog reaches alpha's controller", || {
        ctl.federation().iter().any(|(peer, m)| {
            peer == "bravo"
                && matches!(m, CatalogMessage::Snapshot { catalog } if catalog.version == 1)
        })
    })
    .await?;

    // A delta the controller cannot apply (409) is answered by a resync: bravo sends a snapshot.
    *ctl.state.conflict_next.lock().unwrap() = true;
    let v2 = exports("bravo", 2, &[("echo.demo", &[echo]), ("new.demo", &[echo])]);
    gb.publish(bravo.snapshot(2, vec![alpha.peer(quic)], v2.clone()));
    wait_until("a snapshot of v2 follows the refused delta", || {
        let fed = ctl.federation();
        fed.len() >= 3
            && matches!(&fed[fed.len() - 2].1, CatalogMessage::Delta { delta } if delta.to_version == 2)
            && matches!(&fed[fed.len() - 1].1, CatalogMessage::Snapshot { catalog } if *catalog == v2)
    })
    .await?;

    // The controller dies: the gateway keeps its link and keeps the peer's news until it is back.
    ctl.stop();
    let v3 = exports("bravo", 3, &[("echo.demo", &[echo])]);
    gb.publish(bravo.snapshot(3, vec![alpha.peer(quic)], v3.clone()));
    let series = "mesh_gateway_catalog_delivery_failures_total{peer=\"bravo\"}";
    mesh_test_support::wait_for(
        "alpha to fail delivering v3 to the absent controller",
        common::DEADLINE,
        async || admin_metric(admin, series).await.is_some_and(|v| v >= 1.0),
    )
    .await?;
    assert!(
        gb.link_up("alpha"),
        "the link must survive the controller's absence"
    );
    let subscriptions = ctl.subscriptions();
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    loop {
        match ctl.restart(&alpha).await {
            Ok(()) => break,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e),
        }
    }
    wait_until("v3 is delivered once the controller is back", || {
        ctl.federation().last().is_some_and(|(_, m)| match m {
            CatalogMessage::Delta { delta } => delta.to_version == 3,
            CatalogMessage::Snapshot { catalog } => *catalog == v3,
            CatalogMessage::ResyncRequest | CatalogMessage::Unknown => false,
        })
    })
    .await?;
    wait_until("the gateway resubscribes and reports again", || {
        ctl.subscriptions() > subscriptions && bravo_up(&ctl.last_report())
    })
    .await?;

    if gateway.is_finished() {
        bail!("run ended early: {:?}", gateway.await?);
    }
    gateway.abort();
    Ok(())
}

/// Reads one sample from the admin port's /metrics.
async fn admin_metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let (_, body) = admin_get(admin, "/metrics").await.ok()?;
    body.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_join_token_stops_run_with_the_controllers_reason() -> Result<()> {
    let alpha = Cluster::new("alpha")?;
    let scratch = Scratch::new("token")?;
    std::fs::write(scratch.0.join("ca.crt"), alpha.ca.cert_pem())?;
    std::fs::write(scratch.0.join("join-token"), "wrong")?;
    let ctl = FakeController::start(&alpha, "join-secret").await?;
    let args = GatewayArgs {
        member: ClusterMemberArgs {
            cluster: "alpha".into(),
            controller: ctl.addr.into(),
            ca_file: scratch.0.join("ca.crt"),
            token_file: scratch.0.join("join-token"),
            admin: "127.0.0.1:0".parse()?,
            ready_file: None,
        },
        quic: "127.0.0.1:0".parse()?,
        tunnel: "127.0.0.1:0".parse()?,
        advertise_quic: None,
        advertise_tunnel: None,
        keep_alive: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(3),
        renew_at: Default::default(),
    };
    let err = within("run fails", async {
        Ok(mesh_gateway::run(args.clone()).await)
    })
    .await?
    .expect_err("a refused token is final");
    assert!(err.to_string().contains("bad join token"), "{err}");

    let mut missing = args;
    missing.member.ca_file = scratch.0.join("absent.crt");
    let err = mesh_gateway::run(missing)
        .await
        .expect_err("missing CA file");
    assert!(err.to_string().contains("absent.crt"), "{err}");
    Ok(())
}
