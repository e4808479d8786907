//! Catalog sync over control streams: a snapshot on connect, deltas on change, a snapshot again
//! when the controller answers 409 or a controller replica must catch up, only the latest state
//! while the controller is away, and a peer of the next release whose messages carry what this
//! release does not know.

mod common;

use std::net::SocketAddr;

use anyhow::{Result, bail, ensure};
use common::{
    Cluster, SinkMode, TestGateway, control_frame, dial_as_peer, exports, link_pair, wait_until,
};
use mesh_core::catalog::{CatalogMessage, ExportCatalog};
use mesh_core::wire::{PREFIX_LEN, StreamHeader, VERSION_MAJOR, VERSION_MINOR};

/// The next message bravo's controller received from alpha (bravo's own traffic to alpha's
/// controller goes to alpha's sink, not here).
async fn next_from_alpha(gb: &mut TestGateway) -> Result<CatalogMessage> {
    let (peer, msg) = gb.next_catalog().await?;
    if peer != "alpha" {
        bail!("message attributed to {peer}");
    }
    Ok(msg)
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_then_deltas_arrive_and_a_conflict_triggers_a_resync() -> Result<()> {
    let (alpha, bravo) = (Cluster::new("alpha")?, Cluster::new("bravo")?);
    let ga = TestGateway::start(&alpha, None).await?;
    let mut gb = TestGateway::start(&bravo, None).await?;
    let v1 = exports("alpha", 1, &[("echo.demo", &[addr(7001)])]);
    link_pair(
        (&alpha, &ga, v1.clone()),
        (&bravo, &gb, exports("bravo", 1, &[])),
    );
    let peers = |g: &TestGateway| vec![bravo.peer(g.core.quic_addr())];

    // On connect: the whole catalog.
    let CatalogMessage::Snapshot { catalog } = next_from_alpha(&mut gb).await? else {
        bail!("the first message on a new link must be a snapshot");
    };
    assert_eq!(catalog, v1);
    let mut held: ExportCatalog = catalog;

    // On change: a delta from the held version.
    let v2 = exports(
        "alpha",
        2,
        &[
            ("echo.demo", &[addr(7001), addr(7002)]),
            ("new.demo", &[addr(7003)]),
        ],
    );
    ga.publish(alpha.snapshot(2, peers(&gb), v2.clone()));
    let CatalogMessage::Delta { delta } = next_from_alpha(&mut gb).await? else {
        bail!("a change must travel as a delta");
    };
    assert_eq!((delta.from_version, delta.to_version), (1, 2));
    assert_eq!(delta.upserts.len(), 2);
    held.apply(&delta)?;
    assert_eq!(held, v2);

    // The controller cannot apply the next delta (409): the peer is asked for a snapshot.
    gb.sink.set_mode(SinkMode::ConflictOnce);
    let v3 = exports("alpha", 3, &[("new.demo", &[addr(7003)])]);
    ga.publish(alpha.snapshot(3, peers(&gb), v3.clone()));
    let CatalogMessage::Delta { delta } = next_from_alpha(&mut gb).await? else {
        bail!("expected the delta the controller refuses");
    };
    assert_eq!(delta.removals.len(), 1);
    let CatalogMessage::Snapshot { catalog } = next_from_alpha(&mut gb).await? else {
        bail!("a 409 must be answered with a snapshot");
    };
    assert_eq!(catalog, v3);
    wait_until("the resync request is counted on both sides", || {
        gb.metric("mesh_gateway_catalog_messages_total{peer=\"alpha\",direction=\"sent\",kind=\"resync_request\"}") == Some(1.0)
            && ga.metric("mesh_gateway_catalog_messages_total{peer=\"bravo\",direction=\"received\",kind=\"resync_request\"}") == Some(1.0)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_must_catch_up_gets_a_snapshot_although_nothing_changed() -> Result<()> {
    let (alpha, bravo) = (Cluster::new("alpha")?, Cluster::new("bravo")?);
    let ga = TestGateway::start(&alpha, None).await?;
    let mut gb = TestGateway::start(&bravo, None).await?;
    let v1 = exports("alpha", 1, &[("echo.demo", &[addr(7001)])]);
    link_pair(
        (&alpha, &ga, v1.clone()),
        (&bravo, &gb, exports("bravo", 1, &[])),
    );
    let CatalogMessage::Snapshot { .. } = next_from_alpha(&mut gb).await? else {
        bail!("the first message on a new link must be a snapshot");
    };

    // A replica of bravo's controller came back (and later another one): each time alpha is
    // asked for its whole catalog, although it changed nothing.
    for round in 1..=2 {
        gb.sink.catch_up.send_modify(|n| *n += 1);
        let CatalogMessage::Snapshot { catalog } = next_from_alpha(&mut gb).await? else {
            bail!("a replica that must catch up gets a snapshot");
        };
        assert_eq!(catalog, v1, "round {round}");
        wait_until("the resync request is counted", || {
            gb.metric("mesh_gateway_catalog_messages_total{peer=\"alpha\",direction=\"sent\",kind=\"resync_request\"}") == Some(f64::from(round))
        })
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_controller_is_away_only_the_latest_state_is_kept_and_delivered() -> Result<()> {
    let (alpha, bravo) = (Cluster::new("alpha")?, Cluster::new("bravo")?);
    let ga = TestGateway::start(&alpha, None).await?;
    let mut gb = TestGateway::start(&bravo, None).await?;
    let v1 = exports("alpha", 1, &[("echo.demo", &[addr(7001)])]);
    link_pair(
        (&alpha, &ga, v1.clone()),
        (&bravo, &gb, exports("bravo", 1, &[])),
    );
    let CatalogMessage::Snapshot { catalog: mut held } = next_from_alpha(&mut gb).await? else {
        bail!("first message must be a snapshot");
    };
    let peers = vec![bravo.peer(gb.core.quic_addr())];

    gb.sink.set_mode(SinkMode::Fail);
    let v2 = exports("alpha", 2, &[("echo.demo", &[addr(7001), addr(7002)])]);
    ga.publish(alpha.snapshot(2, peers.clone(), v2));
    wait_until("delivery of v2 fails", || gb.sink.failed() >= 1).await?;
    let v3 = exports(
        "alpha",
        3,
        &[("echo.demo", &[addr(7002)]), ("more.demo", &[addr(7004)])],
    );
    ga.publish(alpha.snapshot(3, peers, v3.clone()));
    wait_until("bravo received v3 while still failing", || {
        gb.metric("mesh_gateway_catalog_messages_total{peer=\"alpha\",direction=\"received\",kind=\"delta\"}") == Some(2.0)
    })
    .await?;
    let failed_before = gb.sink.failed();
    wait_until("it keeps retrying", || gb.sink.failed() > failed_before).await?;
    assert!(
        gb.metric("mesh_gateway_catalog_delivery_failures_total{peer=\"alpha\"}")
            .is_some_and(|v| v >= 2.0)
    );

    // The controller is back: one message carries everything that changed.
    gb.sink.set_mode(SinkMode::Apply);
    let CatalogMessage::Delta { delta } = next_from_alpha(&mut gb).await? else {
        bail!("pending deltas that line up are delivered as one delta");
    };
    assert_eq!((delta.from_version, delta.to_version), (1, 3));
    held.apply(&delta)?;
    assert_eq!(held, v3);
    assert!(
        gb.received.try_recv().is_err(),
        "nothing else must be pending"
    );
    Ok(())
}

/// One control-stream frame holding `json` as it is, whatever this release thinks of it.
fn raw_frame(json: &serde_json::Value) -> Result<Vec<u8>> {
    control_frame(&serde_json::to_vec(json)?)
}

/// A control-stream header as the next minor release would send it: minor bumped, a field
/// appended to the body.
fn next_minor_control_header(cluster: &str) -> Result<Vec<u8>> {
    let mut header = StreamHeader::control(cluster).encode()?;
    header[4] = (VERSION_MAJOR << 4) | (VERSION_MINOR + 1);
    header.extend_from_slice(&[4, b'z', b'o', b'n', b'e']);
    let len = u16::try_from(header.len() - PREFIX_LEN)?;
    header[5..7].copy_from_slice(&len.to_be_bytes());
    Ok(header)
}

/// A peer gateway of the next release links with this one: its control stream opens with a
/// header of a newer minor version, its catalog messages carry fields this release does not
/// know, and it sends a kind of message this release does not know. The link comes up, the
/// snapshot and delta reach the controller, the unknown kind is counted and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_the_next_release_links_and_its_catalog_is_applied() -> Result<()> {
    // "aardvark" sorts lower than "bravo", so the fake next-release peer is the one that dials.
    let (next, bravo) = (Cluster::new("aardvark")?, Cluster::new("bravo")?);
    let mut gb = TestGateway::start(&bravo, None).await?;
    let (_endpoint, conn) = dial_as_peer(&next, &bravo, &gb).await?;
    let (mut send, _recv) = conn.open_bi().await?;
    send.write_all(&next_minor_control_header("aardvark")?)
        .await?;

    let v1 = exports("aardvark", 1, &[("echo.demo", &[addr(7001)])]);
    let mut snapshot = serde_json::to_value(CatalogMessage::Snapshot {
        catalog: v1.clone(),
    })?;
    snapshot["origin_epoch"] = 7.into();
    snapshot["catalog"]["generation"] = "b".into();
    snapshot["catalog"]["services"]["echo.demo"]["weight"] = 3.into();
    snapshot["catalog"]["services"]["echo.demo"]["endpoints"][0]["zone"] = "a".into();
    send.write_all(&raw_frame(&snapshot)?).await?;
    send.write_all(&raw_frame(
        &serde_json::json!({"type": "load_hint", "share": 0.5}),
    )?)
    .await?;
    let v2 = exports("aardvark", 2, &[("echo.demo", &[addr(7001), addr(7002)])]);
    let mut delta = serde_json::to_value(CatalogMessage::Delta {
        delta: v1.diff(&v2),
    })?;
    delta["delta"]["reason"] = "scaled up".into();
    send.write_all(&raw_frame(&delta)?).await?;

    let (peer, first) = gb.next_catalog().await?;
    ensure!(peer == "aardvark", "attributed to {peer}");
    let CatalogMessage::Snapshot { catalog } = first else {
        bail!("the snapshot must reach the controller first, got {first:?}");
    };
    ensure!(catalog == v1, "{catalog:?}");
    let mut held = catalog;
    let (_, second) = gb.next_catalog().await?;
    let CatalogMessage::Delta { delta } = second else {
        bail!("the unknown kind must not reach the controller, got {second:?}");
    };
    held.apply(&delta)?;
    ensure!(held == v2, "{held:?}");
    wait_until("the link is up and the unknown kind counted", || {
        gb.link_up("aardvark")
            && gb.metric("mesh_gateway_catalog_messages_total{peer=\"aardvark\",direction=\"received\",kind=\"unknown\"}") == Some(1.0)
    })
    .await?;
    conn.close(0u32.into(), b"done");
    Ok(())
}
