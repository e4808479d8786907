//! Bounded resources on a link (issue 12, part 5): a peer may hold at most
//! `MAX_CONTROL_STREAMS` (2) control streams at once on one connection, since each may buffer
//! a catalog frame; the next is refused with a reason and counted, and the link goes on.

mod common;

use anyhow::Result;
use common::{Cluster, TestGateway, control_frame, dial_as_peer, exports, within};
use mesh_core::catalog::CatalogMessage;
use mesh_core::wire::{StreamHeader, TunnelRefusal, TunnelReply};

/// One control-stream frame holding `message`.
fn frame(message: &CatalogMessage) -> Result<Vec<u8>> {
    control_frame(&serde_json::to_vec(message)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_control_stream_on_one_connection_is_refused_and_the_link_goes_on() -> Result<()> {
    // "aardvark" sorts lower than "bravo", so the hand-driven peer is the one that dials.
    let (peer, bravo) = (Cluster::new("aardvark")?, Cluster::new("bravo")?);
    let mut gb = TestGateway::start(&bravo, None).await?;
    let (_endpoint, conn) = dial_as_peer(&peer, &bravo, &gb).await?;

    let header = StreamHeader::control("aardvark").encode()?;
    let v1 = exports("aardvark", 1, &[]);
    let (mut first, _first_recv) = conn.open_bi().await?;
    first.write_all(&header).await?;
    first
        .write_all(&frame(&CatalogMessage::Snapshot { catalog: v1 })?)
        .await?;
    let (from, _) = gb.next_catalog().await?;
    assert_eq!(from, "aardvark");
    // Two more: one is held (a sender reopening its stream overlaps the old one), the other
    // refused; which is which depends on which header the gateway reads first.
    let (mut second, mut second_recv) = conn.open_bi().await?;
    second.write_all(&header).await?;
    let (mut third, mut third_recv) = conn.open_bi().await?;
    third.write_all(&header).await?;
    let reply = within("the refusal", async {
        let (mut a, mut b) = ([0u8; 2], [0u8; 2]);
        let (head, refused) = tokio::select! {
            read = second_recv.read_exact(&mut a) => { read?; (a, &mut second_recv) }
            read = third_recv.read_exact(&mut b) => { read?; (b, &mut third_recv) }
        };
        let mut msg = vec![0u8; usize::from(head[1])];
        refused.read_exact(&mut msg).await?;
        Ok(TunnelReply::decode(head[0], &msg)?)
    })
    .await?;
    let TunnelReply::Refused(kind, msg) = reply else {
        panic!("a third control stream must be refused");
    };
    assert_eq!(kind, TunnelRefusal::BadHeader);
    assert!(msg.contains("2 control streams are open"), "{msg}");
    let series = "mesh_gateway_stream_rejected_total{reason=\"too_many_control_streams\"}";
    assert_eq!(gb.metric(series), Some(1.0), "{}", gb.metrics());

    // The first stream still carries the catalog.
    let v2 = exports("aardvark", 2, &[]);
    let delta = exports("aardvark", 1, &[]).diff(&v2);
    first
        .write_all(&frame(&CatalogMessage::Delta { delta })?)
        .await?;
    let (from, message) = gb.next_catalog().await?;
    assert_eq!(from, "aardvark");
    assert!(
        matches!(message, CatalogMessage::Delta { .. }),
        "{message:?}"
    );
    Ok(())
}
