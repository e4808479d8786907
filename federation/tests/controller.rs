//! The controller in-process on real sockets: bootstrap with the join token, registration and
//! expiry seen on a discovery stream, linking a fake peer and seeing its catalog in the
//! locality order, and links surviving a restart.

mod support;

use std::time::Duration;

use anyhow::{Context, ensure};
use http::{Method, StatusCode};
use mesh_core::api::{
    BreakerObservation, BreakerReport, ControllerStatus, GatewaySnapshot, LinkInfo,
    PATH_BREAKER_REPORTS, PATH_DISCOVERY, PATH_FEDERATION, PATH_GATEWAY_REPORT,
    PATH_GATEWAY_STREAM, PATH_WORKLOADS, ReadyFile, SidecarSnapshot,
};
use mesh_core::breaker::BreakerState;
use mesh_core::catalog::CatalogMessage;
use mesh_core::identity::SpiffeId;
use mesh_federation::start;

use support::control::CallError;
use support::{
    Harness, TOKEN, anonymous_control, args, echo, gateway_report, localities, next_until,
    peer_catalog, peer_link_info, registration, status_of,
};

const WAIT: Duration = Duration::from_secs(10);
const NO_BODY: Option<&()> = None;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_register_and_expire() -> anyhow::Result<()> {
    let h = Harness::start("register", "us-east").await?;
    let ready = ReadyFile::read(&h.state.path().join("ready.json"))?;
    ensure!(
        ready.addr("control") == Some(h.ctl.control_addr),
        "ready file: {ready:?}"
    );
    ensure!(
        ready.addr("admin") == Some(h.ctl.admin_addr),
        "ready file: {ready:?}"
    );
    let (status, body) = h.admin_get("/readyz").await?;
    ensure!(status == StatusCode::OK, "readyz: {status} {body}");

    // A good token gets a certificate; a bad one a 401 that says why; the controller's own
    // identity is never issued.
    let echo_id = SpiffeId::workload("us-east.mesh", "demo", "echo");
    let err = h
        .bootstrap(&echo_id, "nope")
        .await
        .err()
        .context("bad token accepted")?;
    ensure!(
        err.status() == Some(StatusCode::UNAUTHORIZED),
        "bad token: {err:?}"
    );
    ensure!(
        err.body().contains("join token"),
        "401 explains itself: {err:?}"
    );
    let refused = h
        .bootstrap(&SpiffeId::controller("us-east.mesh"), TOKEN)
        .await;
    ensure!(
        status_of(&refused) == Some(StatusCode::FORBIDDEN),
        "controller id: {:?}",
        refused.err()
    );
    let (sidecar, own_bundle) = h
        .bootstrap(&echo_id, TOKEN)
        .await
        .map_err(CallError::into_anyhow)?;

    // Without a client certificate only the CSR call is open; bad service names are named.
    let query = "/v1/discovery?services=echo.demo";
    let (status, body) =
        anonymous_control(h.ctl.control_addr, &own_bundle, Method::GET, query).await?;
    ensure!(
        status == StatusCode::UNAUTHORIZED,
        "anonymous discovery: {status} {body}"
    );
    let bad = sidecar
        .stream::<SidecarSnapshot>("/v1/discovery?services=echo.demo,Bad_Name")
        .await;
    let err = bad.err().context("bad names accepted")?;
    ensure!(
        err.status() == Some(StatusCode::BAD_REQUEST) && err.body().contains("Bad_Name"),
        "{err:?}"
    );

    // Unknown at first, then the registered endpoint, then gone once the TTL passed.
    let path = format!("{PATH_DISCOVERY}?services=echo.demo");
    let mut stream = sidecar
        .stream::<SidecarSnapshot>(&path)
        .await
        .map_err(CallError::into_anyhow)?;
    let first = next_until(&mut stream, WAIT, "first snapshot", |_| true).await?;
    ensure!(
        first.unknown == vec![echo()] && first.services.is_empty(),
        "{first:?}"
    );
    ensure!(first.trust_bundles == vec![own_bundle.clone()] && first.cluster == "us-east");
    let reg = registration(&echo_id)?;
    let workload = format!("{PATH_WORKLOADS}echo-0");
    sidecar
        .send_json(Method::PUT, &workload, Some(&reg))
        .await
        .map_err(CallError::into_anyhow)?;
    let seen = next_until(&mut stream, WAIT, "the endpoint", |s| {
        localities(s) == ["us-east"]
    })
    .await?;
    let route = &seen.services[&echo()].localities[0];
    ensure!(
        route.endpoints[0].address == reg.address && route.entry.health == 1.0,
        "{route:?}"
    );
    ensure!(seen.version > first.version, "versions grow");
    let gone = next_until(&mut stream, WAIT, "expiry", |s| s.unknown == vec![echo()]).await?;
    ensure!(gone.services.is_empty(), "{gone:?}");

    // Malformed and foreign registrations are refused.
    let malformed = sidecar
        .send_json(
            Method::PUT,
            &workload,
            Some(&serde_json::json!({"id": "echo-0"})),
        )
        .await;
    ensure!(
        status_of(&malformed) == Some(StatusCode::BAD_REQUEST),
        "{:?}",
        malformed.err()
    );
    let mut other = reg.clone();
    other.identity = "spiffe://us-east.mesh/ns/demo/sa/other".into();
    let foreign = sidecar
        .send_json(Method::PUT, &workload, Some(&other))
        .await;
    ensure!(
        status_of(&foreign) == Some(StatusCode::FORBIDDEN),
        "{:?}",
        foreign.err()
    );
    let wrong_method = sidecar.send_json(Method::POST, &workload, Some(&reg)).await;
    ensure!(
        status_of(&wrong_method) == Some(StatusCode::METHOD_NOT_ALLOWED),
        "{:?}",
        wrong_method.err()
    );

    let (_, metrics) = h.admin_get("/metrics").await?;
    for needle in [
        "mesh_controller_csrs_signed_total 1",
        "mesh_controller_csrs_refused_total{reason=\"token\"} 1",
        "mesh_controller_csrs_refused_total{reason=\"policy\"} 1",
        "mesh_controller_discovery_subscribers{stream=\"sidecar\"} 1",
        // Both listeners are capped (nothing refused here).
        "mesh_controller_connections_refused_total{listener=\"control\"} 0",
        "mesh_controller_connections_refused_total{listener=\"admin\"} 0",
    ] {
        ensure!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }

    // Shutdown ends the stream cleanly, so clients reconnect to the next controller.
    h.ctl.shutdown().await;
    let end = tokio::time::timeout(WAIT, async {
        while stream.next().await?.is_some() {}
        Ok::<_, anyhow::Error>(())
    });
    end.await.context("the stream did not end on shutdown")??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_peers_catalog_joins_the_locality_order() -> anyhow::Result<()> {
    let h = Harness::start("link", "us-east").await?;
    let echo_id = SpiffeId::workload("us-east.mesh", "demo", "echo");
    let sidecar = h.client(&echo_id).await?;
    let gateway = h.gateway_client().await?;
    let path = format!("{PATH_DISCOVERY}?services=echo.demo");
    let mut stream = sidecar
        .stream::<SidecarSnapshot>(&path)
        .await
        .map_err(CallError::into_anyhow)?;

    // Link info waits for the gateway's first report, which the test gateway keeps sending.
    let (status, body) = h.admin_get("/v1/link-info").await?;
    ensure!(
        status == StatusCode::SERVICE_UNAVAILABLE && body.contains("gateway has not reported yet"),
        "{status} {body}"
    );
    let report = gateway_report(0.012)?;
    let reporter = {
        let (gateway, report) = (gateway.clone(), report.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(300));
            loop {
                every.tick().await;
                let _ = gateway
                    .send_json(Method::PUT, PATH_GATEWAY_REPORT, Some(&report))
                    .await;
            }
        })
    };
    next_until(&mut stream, WAIT, "the gateway address", |s| {
        s.gateway == Some(report.tunnel_addr)
    })
    .await?;
    let (status, body) = h.admin_get("/v1/link-info").await?;
    ensure!(status == StatusCode::OK, "link-info: {status} {body}");
    let own_info: LinkInfo = serde_json::from_str(&body)?;
    ensure!(
        own_info.gateway_addr == report.quic_addr && own_info.region == "us",
        "{own_info:?}"
    );

    // Linking is idempotent and refuses nonsense.
    let peer = peer_link_info()?;
    let (status, body) = h.admin(Method::POST, "/v1/links", Some(&peer)).await?;
    ensure!(status == StatusCode::CREATED, "link: {status} {body}");
    let (status, body) = h.admin(Method::POST, "/v1/links", Some(&peer)).await?;
    ensure!(
        status == StatusCode::OK && body.contains("unchanged"),
        "relink: {status} {body}"
    );
    let (status, body) = h
        .admin(Method::POST, "/v1/links", Some(&"{\"cluster\":"))
        .await?;
    ensure!(
        status == StatusCode::BAD_REQUEST && body.contains("JSON"),
        "malformed: {status} {body}"
    );
    let (status, body) = h.admin(Method::POST, "/v1/links", Some(&own_info)).await?;
    ensure!(
        status == StatusCode::BAD_REQUEST && body.contains("itself"),
        "self link: {status} {body}"
    );
    let (status, _) = h.admin(Method::PUT, "/v1/links", NO_BODY).await?;
    ensure!(status == StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = h.admin_get("/v1/nothing").await?;
    ensure!(status == StatusCode::NOT_FOUND);
    let linked = next_until(&mut stream, WAIT, "the peer's bundle", |s| {
        s.trust_bundles.len() == 2
    })
    .await?;
    ensure!(
        linked
            .trust_bundles
            .iter()
            .any(|b| b.cluster == "eu-central")
    );

    // The gateway learns the peer; only the gateway may post a linked peer's catalog.
    let mut gw_stream = gateway
        .stream::<GatewaySnapshot>(PATH_GATEWAY_STREAM)
        .await
        .map_err(CallError::into_anyhow)?;
    let gw = next_until(&mut gw_stream, WAIT, "the peer for the gateway", |g| {
        g.peers.len() == 1
    })
    .await?;
    ensure!(gw.peers[0].gateway_addr == peer.gateway_addr && gw.trust_bundle.cluster == "us-east");
    let federation = format!("{PATH_FEDERATION}eu-central");
    let snapshot = CatalogMessage::Snapshot {
        catalog: peer_catalog(3)?,
    };
    let denied = sidecar
        .send_json(Method::POST, &federation, Some(&snapshot))
        .await;
    ensure!(
        status_of(&denied) == Some(StatusCode::FORBIDDEN),
        "workload posted a catalog: {:?}",
        denied.err()
    );
    let stranger = gateway
        .send_json(
            Method::POST,
            &format!("{PATH_FEDERATION}ap-south"),
            Some(&snapshot),
        )
        .await;
    ensure!(
        status_of(&stranger) == Some(StatusCode::FORBIDDEN),
        "unlinked peer: {:?}",
        stranger.err()
    );

    // The peer's catalog appears in the locality order; a delta on another base is a 409.
    gateway
        .send_json(Method::POST, &federation, Some(&snapshot))
        .await
        .map_err(CallError::into_anyhow)?;
    let remote = next_until(&mut stream, WAIT, "the peer's locality", |s| {
        localities(s) == ["eu-central"]
    })
    .await?;
    let loc = &remote.services[&echo()].localities[0];
    ensure!(
        loc.endpoints[0].identity == "spiffe://eu-central.mesh/ns/demo/sa/echo",
        "{loc:?}"
    );
    ensure!(
        loc.entry.reason == "region priority 1, rtt 12.0ms",
        "reason: {}",
        loc.entry.reason
    );
    let gap = CatalogMessage::Delta {
        delta: peer_catalog(7)?.diff(&peer_catalog(8)?),
    };
    let conflict = gateway
        .send_json(Method::POST, &federation, Some(&gap))
        .await;
    ensure!(
        status_of(&conflict) == Some(StatusCode::CONFLICT),
        "{:?}",
        conflict.err()
    );

    // A local endpoint (kept alive by heartbeats) goes first; the gateway exports it.
    let reg = registration(&echo_id)?;
    let workload = format!("{PATH_WORKLOADS}echo-0");
    sidecar
        .send_json(Method::PUT, &workload, Some(&reg))
        .await
        .map_err(CallError::into_anyhow)?;
    let heartbeat = {
        let sidecar = sidecar.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(300));
            loop {
                every.tick().await;
                let _ = sidecar.send_json(Method::PUT, &workload, Some(&reg)).await;
            }
        })
    };
    let both = next_until(&mut stream, WAIT, "local, then remote", |s| {
        localities(s) == ["us-east", "eu-central"]
    })
    .await?;
    ensure!(both.services[&echo()].localities[0].entry.reason == "local");
    let exported = next_until(&mut gw_stream, WAIT, "the export", |g| {
        g.exports.services.contains_key(&echo())
    })
    .await?;
    ensure!(exported.exports.services[&echo()].healthy);

    let (status, body) = h.admin_get("/v1/status").await?;
    ensure!(status == StatusCode::OK, "status: {status} {body}");
    let status: ControllerStatus = serde_json::from_str(&body)?;
    ensure!(
        status.gateway_connected && status.links.len() == 1,
        "{status:?}"
    );
    ensure!(
        status.links[0].state == "up" && status.links[0].catalog_version == Some(3),
        "{status:?}"
    );
    ensure!(status.links[0].rtt_seconds == Some(0.012), "{status:?}");
    ensure!(
        status.services[0].endpoints.len() == 2 && !status.services[0].failover_active,
        "{status:?}"
    );
    let (_, metrics) = h.admin_get("/metrics").await?;
    for needle in [
        "mesh_controller_peer_link_up{peer=\"eu-central\"} 1",
        "mesh_controller_peer_catalog_endpoints{peer=\"eu-central\"} 1",
        "mesh_controller_catalog_messages_total{peer=\"eu-central\",kind=\"snapshot\",result=\"applied\"} 1",
        "mesh_controller_catalog_messages_total{peer=\"eu-central\",kind=\"delta\",result=\"version_gap\"} 1",
        "mesh_controller_discovery_subscribers{stream=\"gateway\"} 1",
        "mesh_controller_failover_active{service=\"echo.demo\"} 0",
    ] {
        ensure!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }

    // A quorum of own workload identities reporting the local breaker open fails the service
    // over and tells peers (through the exports) to stay away. Two reporter ids of one
    // identity are one vote.
    for reporter in ["client-0", "client-1"] {
        let report = BreakerReport {
            reporter: reporter.into(),
            breakers: vec![BreakerObservation {
                service: echo(),
                cluster: "us-east".into(),
                state: BreakerState::Open.into(),
            }],
        };
        sidecar
            .send_json(Method::PUT, PATH_BREAKER_REPORTS, Some(&report))
            .await
            .map_err(CallError::into_anyhow)?;
    }
    let failed = next_until(&mut stream, WAIT, "the local breaker quorum", |s| {
        s.services
            .get(&echo())
            .is_some_and(|r| r.localities[0].entry.reason.contains("breaker open (1/1"))
    })
    .await?;
    let local = &failed.services[&echo()].localities[0].entry;
    ensure!(
        local.health == 0.0 && local.cluster == "us-east",
        "{failed:?}"
    );
    let sick = next_until(&mut gw_stream, WAIT, "the unhealthy export", |g| {
        g.exports.services.get(&echo()).is_some_and(|e| !e.healthy)
    })
    .await?;
    ensure!(
        sick.exports.version > exported.exports.version,
        "export version bumped"
    );

    // Unlinking drops the peer's trust and catalog at once.
    let (status, body) = h
        .admin(Method::DELETE, "/v1/links/eu-central", NO_BODY)
        .await?;
    ensure!(status == StatusCode::OK, "unlink: {status} {body}");
    let (status, _) = h
        .admin(Method::DELETE, "/v1/links/eu-central", NO_BODY)
        .await?;
    ensure!(status == StatusCode::NOT_FOUND);
    let unlinked = next_until(&mut stream, WAIT, "the peer gone", |s| {
        s.trust_bundles.len() == 1
    })
    .await?;
    ensure!(localities(&unlinked) == ["us-east"], "{unlinked:?}");
    reporter.abort();
    heartbeat.abort();
    h.ctl.shutdown().await;
    Ok(())
}

/// Adds `field: value` to the JSON object at `path` (object keys) inside `root`: how a message
/// of the next release differs from today's.
fn add_field(root: &mut serde_json::Value, path: &[&str], field: &str, value: serde_json::Value) {
    let mut at = root;
    for key in path {
        at = &mut at[*key];
    }
    at.as_object_mut()
        .expect("the path names an object")
        .insert(field.into(), value);
}

/// A cluster-set may run two consecutive releases: a gateway and a peer of the next release send
/// messages with fields and kinds this controller does not know, and it still federates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_and_a_peer_of_the_next_release_still_federate() -> anyhow::Result<()> {
    let h = Harness::start("skew", "us-east").await?;
    let sidecar = h.workload_client("client").await?;
    let gateway = h.gateway_client().await?;
    let mut stream = sidecar
        .stream::<SidecarSnapshot>(&format!("{PATH_DISCOVERY}?services=echo.demo"))
        .await
        .map_err(CallError::into_anyhow)?;

    let mut report = serde_json::json!({
        "quic_addr": "127.0.0.1:4500",
        "tunnel_addr": "127.0.0.1:4501",
        "peers": [{"cluster": "eu-central", "up": true, "rtt_seconds": 0.012, "loss": 0.0,
                   "last_error": null}],
    });
    add_field(&mut report, &[], "build", "next".into());
    add_field(&mut report["peers"][0], &[], "jitter_seconds", 0.001.into());
    let reporter = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(300));
            loop {
                every.tick().await;
                let _ = gateway
                    .send_json(Method::PUT, PATH_GATEWAY_REPORT, Some(&report))
                    .await;
            }
        })
    };
    let mut link = serde_json::to_value(peer_link_info()?)?;
    add_field(&mut link, &[], "zone", "eu-central-1".into());
    add_field(&mut link, &["trust_bundle"], "kid", 2.into());
    let (status, body) = h.admin(Method::POST, "/v1/links", Some(&link)).await?;
    ensure!(status == StatusCode::CREATED, "link: {status} {body}");

    // The peer's snapshot, with a field added at every level, is applied.
    let federation = format!("{PATH_FEDERATION}eu-central");
    let mut snapshot = serde_json::to_value(CatalogMessage::Snapshot {
        catalog: peer_catalog(3)?,
    })?;
    add_field(&mut snapshot, &[], "origin_epoch", 7.into());
    add_field(&mut snapshot, &["catalog"], "generation", "b".into());
    add_field(
        &mut snapshot,
        &["catalog", "services", "echo.demo"],
        "weight",
        3.into(),
    );
    add_field(
        &mut snapshot["catalog"]["services"]["echo.demo"]["endpoints"][0],
        &[],
        "zone",
        "eu-central-1a".into(),
    );
    gateway
        .send_json(Method::POST, &federation, Some(&snapshot))
        .await
        .map_err(CallError::into_anyhow)?;
    // A kind of message this release does not know is accepted and changes nothing.
    gateway
        .send_json(
            Method::POST,
            &federation,
            Some(&serde_json::json!({"type": "load_hint", "share": 0.5})),
        )
        .await
        .map_err(CallError::into_anyhow)?;
    next_until(&mut stream, WAIT, "the peer's locality", |s| {
        localities(s) == ["eu-central"]
    })
    .await?;

    // A delta with an added field continues the same catalog.
    let mut newer = peer_catalog(4)?;
    let mut second = newer.services[&echo()].endpoints[0].clone();
    second.address = "10.1.0.8:15006".parse()?;
    newer
        .services
        .get_mut(&echo())
        .context("echo is exported")?
        .endpoints
        .push(second);
    let mut delta = serde_json::to_value(CatalogMessage::Delta {
        delta: peer_catalog(3)?.diff(&newer),
    })?;
    add_field(&mut delta, &["delta"], "reason", "scaled up".into());
    gateway
        .send_json(Method::POST, &federation, Some(&delta))
        .await
        .map_err(CallError::into_anyhow)?;
    next_until(&mut stream, WAIT, "the peer's second endpoint", |s| {
        s.services
            .get(&echo())
            .is_some_and(|r| r.localities.first().is_some_and(|l| l.endpoints.len() == 2))
    })
    .await?;
    let (status, body) = h.admin_get("/v1/status").await?;
    ensure!(status == StatusCode::OK, "status: {status} {body}");
    let status: ControllerStatus = serde_json::from_str(&body)?;
    ensure!(
        status.links[0].state == "up" && status.links[0].catalog_version == Some(4),
        "{:?}",
        status.links
    );
    reporter.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_survive_a_restart() -> anyhow::Result<()> {
    let h = Harness::start("restart", "us-west").await?;
    let peer = peer_link_info()?;
    let (status, body) = h.admin(Method::POST, "/v1/links", Some(&peer)).await?;
    ensure!(status == StatusCode::CREATED, "{status} {body}");
    let Harness { ctl, state, .. } = h;
    ctl.shutdown().await;

    let ctl = start(args("us-west", state.path())).await?;
    let (status, body) = support::admin(ctl.admin_addr, Method::GET, "/v1/links", None).await?;
    ensure!(status == StatusCode::OK, "{status} {body}");
    let links: Vec<LinkInfo> = serde_json::from_str(&body)?;
    ensure!(links == vec![peer], "links after restart: {links:?}");
    ctl.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_missing_state_dir_says_what_to_run() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "mesh-fed-it-missing-{}/us-east",
        std::process::id()
    ));
    let err = start(args("us-east", &dir))
        .await
        .err()
        .context("start must fail")?;
    let msg = err.to_string();
    ensure!(
        msg.contains("ca.crt") && msg.contains("mesh ca --cluster us-east"),
        "{msg}"
    );
    Ok(())
}
