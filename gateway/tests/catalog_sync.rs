//! Catalog sync over control streams: a snapshot on connect, deltas on change, a snapshot again
//! when the controller answers 409, and only the latest state while the controller is away.

mod common;

use std::net::SocketAddr;

use anyhow::{Result, bail};
use common::{Cluster, SinkMode, TestGateway, exports, link_pair, wait_until};
use mesh_core::catalog::{CatalogMessage, ExportCatalog};

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
