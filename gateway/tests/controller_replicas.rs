//! One cluster whose controller runs as two replicas, real ones (`mesh_federation::start`)
//! sharing one state directory (the same CA and links), on two loopback addresses with the same
//! port: 127.0.0.1:P and 127.0.0.2:P. The gateway (`mesh_gateway::run_with_resolver`) is given
//! `--controller controllers.test:P`, a name its resolver turns into both addresses (what DNS
//! does for a headless Service in Kubernetes; no name can be added to the system's resolver in
//! a test). The linked peer is a real gateway core fed hand-made snapshots. Everything is real
//! sockets, TLS and QUIC.
//!
//! Shown: both replicas get the gateway's reports and the peer's catalog; stopping the replica
//! the snapshot stream follows leaves the other fully served (reports, the peer's next
//! catalog, the stream); restarting it brings it up to date although the peer changes nothing
//! (the gateway asks the peer for a snapshot when the replica is back).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use common::{Cluster, DEADLINE, TestGateway, exports};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mesh_core::api::{ControllerStatus, LinkInfo, ReadyFile};
use mesh_core::host_port::HostPort;
use mesh_core::member_args::ClusterMemberArgs;
use mesh_federation::{ControllerArgs, RunningController};
use mesh_gateway::{GatewayArgs, ResolveControllers, ResolveFuture};

const TOKEN: &str = "join-secret";
const NAME: &str = "controllers.test";

/// Resolves [`NAME`] to the given loopback addresses, with the port asked for.
struct Replicas(Vec<IpAddr>);

impl ResolveControllers for Replicas {
    fn resolve<'a>(&'a self, target: &'a HostPort) -> ResolveFuture<'a> {
        Box::pin(async move {
            if target.host() != NAME {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} is not known here", target.host()),
                ));
            }
            Ok(self
                .0
                .iter()
                .map(|ip| SocketAddr::new(*ip, target.port()))
                .collect())
        })
    }
}

/// A state directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn controller_args(state: &Path, control: SocketAddr) -> ControllerArgs {
    ControllerArgs {
        region: Some("us".into()),
        control,
        ..ControllerArgs::new("alpha", state)
    }
}

/// Starts a replica on `control`, retrying while the port is still held by its predecessor.
async fn start_replica(state: &Path, control: SocketAddr) -> Result<RunningController> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match mesh_federation::start(controller_args(state, control)).await {
            Ok(c) => return Ok(c),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "replica not started yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One plain HTTP/1.1 request to an admin port; status and body.
async fn admin(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, String)> {
    admin_with(addr, None, method, path, body).await
}

/// An admin request carrying the admin token (`Bearer`), when given.
async fn admin_with(
    addr: SocketAddr,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header(
            "authorization",
            token.map(|t| format!("Bearer {t}")).unwrap_or_default(),
        )
        .body(Full::new(Bytes::from(body)))?;
    let rsp = sender.send_request(req).await?;
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn status(admin_addr: SocketAddr) -> Result<ControllerStatus> {
    let (code, body) = admin(admin_addr, Method::GET, "/v1/status", Vec::new()).await?;
    ensure!(code == 200, "status: {code} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// The value of the sample whose line starts with `series` on an admin port's /metrics.
async fn metric(admin_addr: SocketAddr, series: &str) -> Option<f64> {
    let (_, body) = admin(admin_addr, Method::GET, "/metrics", Vec::new())
        .await
        .ok()?;
    body.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// Whether a replica holds bravo's catalog at `version`, with the link up and the gateway
/// reporting, and imports its `echo.demo` endpoint.
async fn serves_bravo(admin_addr: SocketAddr, version: u64) -> bool {
    let Ok(s) = status(admin_addr).await else {
        return false;
    };
    let link = s.links.iter().find(|l| l.cluster == "bravo");
    let echo = s
        .services
        .iter()
        .find(|v| v.service.to_string() == "echo.demo");
    s.gateway_connected
        && link.is_some_and(|l| l.state == "up" && l.catalog_version == Some(version))
        && echo.is_some_and(|e| {
            e.endpoints
                .iter()
                .any(|c| c.cluster == "bravo" && c.total == 1)
        })
}

async fn wait_for(what: &str, cond: impl AsyncFnMut() -> bool) -> Result<()> {
    mesh_test_support::wait_for(what, DEADLINE, cond).await?;
    Ok(())
}

const GATEWAY_STREAMS: &str = "mesh_controller_discovery_subscribers{stream=\"gateway\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_is_served_and_one_that_returns_catches_up() -> Result<()> {
    let (alpha, bravo) = (Cluster::new("alpha")?, Cluster::new("bravo")?);
    let state =
        Scratch(std::env::temp_dir().join(format!("mesh-gw-replicas-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&state.0);
    alpha.ca.write_to(&state.0)?;
    std::fs::write(state.0.join("join-token"), format!("{TOKEN}\n"))?;

    // Two replicas of alpha's controller on one port, two loopback addresses.
    let first = start_replica(&state.0, "127.0.0.1:0".parse()?).await?;
    let port = first.control_addr.port();
    let second_addr = SocketAddr::new("127.0.0.2".parse()?, port);
    let second = start_replica(&state.0, second_addr).await?;
    let mut replicas = [Some(first), Some(second)];
    let controls = [SocketAddr::new("127.0.0.1".parse()?, port), second_addr];
    let admins = [
        replicas[0].as_ref().context("first")?.admin_addr,
        replicas[1].as_ref().context("second")?.admin_addr,
    ];

    // Alpha's gateway, told the name of the set.
    let ready_file = state.0.join("gateway.ready");
    let args = GatewayArgs {
        member: ClusterMemberArgs {
            cluster: "alpha".into(),
            controller: format!("{NAME}:{port}").parse()?,
            ca_file: state.0.join("ca.crt"),
            token_file: state.0.join("join-token"),
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
    let resolver = Arc::new(Replicas(controls.iter().map(SocketAddr::ip).collect()));
    let gateway = tokio::spawn(mesh_gateway::run_with_resolver(args, resolver));
    wait_for("the gateway's ready file", async || {
        ReadyFile::read(&ready_file).is_ok()
    })
    .await?;
    let ready = ReadyFile::read(&ready_file)?;
    let (gw_quic, gw_admin) = (
        ready.addr("quic").context("quic")?,
        ready.addr("admin").context("admin")?,
    );
    let replicas_gauge =
        |state: &str| format!("mesh_gateway_controller_replicas{{state=\"{state}\"}}");
    wait_for("the gateway knows and reaches both replicas", async || {
        metric(gw_admin, &replicas_gauge("known")).await == Some(2.0)
            && metric(gw_admin, &replicas_gauge("reachable")).await == Some(2.0)
    })
    .await?;

    // Bravo's gateway, exporting echo.demo, linked with alpha's gateway.
    let echo: SocketAddr = "127.0.0.1:7001".parse()?;
    let gb = TestGateway::start(&bravo, None).await?;
    let publish_bravo = |version: u64, services: &[(&str, &[SocketAddr])]| {
        gb.publish(bravo.snapshot(
            version,
            vec![alpha.peer(gw_quic)],
            exports("bravo", version, services),
        ));
    };
    publish_bravo(1, &[("echo.demo", &[echo])]);

    // Both replicas learn the link (in Kubernetes both watch the same Link object).
    let link = LinkInfo {
        cluster: "bravo".into(),
        region: "eu".into(),
        trust_bundle: bravo.bundle.clone(),
        gateway_addr: gb.core.quic_addr(),
    };
    // Both replicas share the state directory, so the token the first one created.
    let token = std::fs::read_to_string(state.0.join("admin-token"))?;
    for admin_addr in admins {
        let (code, body) = admin_with(
            admin_addr,
            Some(token.trim()),
            Method::POST,
            "/v1/links",
            serde_json::to_vec(&link)?,
        )
        .await?;
        ensure!(code == 200 || code == 201, "link: {code} {body}");
    }

    for (i, admin_addr) in admins.iter().enumerate() {
        wait_for(
            &format!("replica {i} holds bravo's catalog v1 and gets reports"),
            async || serves_bravo(*admin_addr, 1).await,
        )
        .await?;
    }

    // Stop the replica the snapshot stream follows.
    let mut followed = None;
    wait_for(
        "one replica serves the gateway's snapshot stream",
        async || {
            for (i, a) in admins.iter().enumerate() {
                if metric(*a, GATEWAY_STREAMS).await == Some(1.0) {
                    followed = Some(i);
                    return true;
                }
            }
            false
        },
    )
    .await?;
    let stopped = followed.context("followed replica")?;
    let other = 1 - stopped;
    replicas[stopped]
        .take()
        .context("running")?
        .shutdown()
        .await;
    wait_for(
        "the gateway sees one replica reachable of two",
        async || {
            metric(gw_admin, &replicas_gauge("known")).await == Some(2.0)
                && metric(gw_admin, &replicas_gauge("reachable")).await == Some(1.0)
        },
    )
    .await?;

    // The other replica stays fully served: the stream moves to it, the peer's next catalog
    // reaches it, and reports keep it knowing the gateway and the link.
    wait_for(
        "the snapshot stream moves to the other replica",
        async || metric(admins[other], GATEWAY_STREAMS).await == Some(1.0),
    )
    .await?;
    publish_bravo(2, &[("echo.demo", &[echo]), ("new.demo", &[echo])]);
    wait_for("the other replica gets bravo's v2", async || {
        serves_bravo(admins[other], 2).await
    })
    .await?;
    // Longer than the controller waits for a report before declaring the gateway gone (3 s).
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        ensure!(
            serves_bravo(admins[other], 2).await,
            "the other replica stopped being served: {:?}",
            status(admins[other]).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The stopped replica comes back empty-handed (no peer catalog), and bravo changes nothing:
    // it is brought up to date by the snapshot the gateway asks bravo for.
    let resyncs_before = gb
        .metric("mesh_gateway_catalog_messages_total{peer=\"alpha\",direction=\"received\",kind=\"resync_request\"}")
        .unwrap_or(0.0);
    let restarted = start_replica(&state.0, controls[stopped]).await?;
    let restarted_admin = restarted.admin_addr;
    replicas[stopped] = Some(restarted);
    wait_for("the restarted replica holds bravo's v2 again", async || {
        serves_bravo(restarted_admin, 2).await
    })
    .await?;
    ensure!(
        gb.metric("mesh_gateway_catalog_messages_total{peer=\"alpha\",direction=\"received\",kind=\"resync_request\"}")
            .unwrap_or(0.0)
            > resyncs_before,
        "bravo was asked for a snapshot"
    );
    wait_for("the gateway reaches both replicas again", async || {
        metric(gw_admin, &replicas_gauge("reachable")).await == Some(2.0)
    })
    .await?;
    ensure!(
        serves_bravo(admins[other], 2).await,
        "the other replica is unaffected"
    );

    if gateway.is_finished() {
        bail!("the gateway stopped: {:?}", gateway.await?);
    }
    gateway.abort();
    for r in replicas.into_iter().flatten() {
        r.shutdown().await;
    }
    Ok(())
}
