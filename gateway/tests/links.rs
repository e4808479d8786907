//! QUIC links between in-process gateways: mTLS, RTT, refusal of unlinked trust domains,
//! unlinking and reconnection.

mod common;

use anyhow::Result;
use common::{Cluster, TestGateway, exports, link_pair, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_comes_up_with_mtls_and_reports_rtt() -> Result<()> {
    let (alpha, bravo) = (Cluster::new("alpha")?, Cluster::new("bravo")?);
    let ga = TestGateway::start(&alpha, None).await?;
    let gb = TestGateway::start(&bravo, None).await?;
    let changes = ga.core.board().changes();
    link_pair(
        (&alpha, &ga, exports("alpha", 1, &[])),
        (&bravo, &gb, exports("bravo", 1, &[])),
    );
    wait_until("both sides report the link up", || {
        ga.link_up("bravo") && gb.link_up("alpha")
    })
    .await?;

    for (board, peer) in [(ga.core.board(), "bravo"), (gb.core.board(), "alpha")] {
        let status = board.status(peer).expect("linked peer has a status");
        let rtt = status.rtt_seconds.expect("an up link has an RTT");
        assert!(rtt > 0.0 && rtt < 1.0, "loopback RTT {rtt}");
        assert!((0.0..=1.0).contains(&status.loss));
        assert_eq!(status.last_error, None);
        let report = board.report();
        assert_eq!(report.quic_addr, board.quic_addr());
        assert_eq!(report.tunnel_addr, board.tunnel_addr());
        assert_eq!(report.peers.len(), 1);
        assert_eq!(report.peers[0].cluster, peer);
        assert!(report.peers[0].up);
    }
    // Link state changes are signalled so the report goes out at once.
    assert!(changes.has_changed()?, "link up must signal a change");
    wait_until("the link gauge shows up", || {
        ga.metric("mesh_gateway_link_up{peer=\"bravo\"}") == Some(1.0)
            && ga
                .metric("mesh_gateway_link_rtt_seconds{peer=\"bravo\"}")
                .is_some_and(|v| v > 0.0)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_of_an_unlinked_trust_domain_is_refused_in_the_handshake() -> Result<()> {
    // "aardvark" sorts lower than "bravo", so it dials; bravo does not list it as a peer.
    let (rogue, alpha, bravo) = (
        Cluster::new("aardvark")?,
        Cluster::new("alpha")?,
        Cluster::new("bravo")?,
    );
    let gr = TestGateway::start(&rogue, None).await?;
    let gb = TestGateway::start(&bravo, None).await?;
    gb.publish(bravo.snapshot(
        1,
        vec![alpha.peer("127.0.0.1:9".parse()?)],
        exports("bravo", 1, &[]),
    ));
    gr.publish(rogue.snapshot(
        1,
        vec![bravo.peer(gb.core.quic_addr())],
        exports("aardvark", 1, &[]),
    ));

    wait_until("bravo counts the refused handshake", || {
        gb.metric("mesh_gateway_handshake_failures_total{reason=\"untrusted_peer\"}")
            .is_some_and(|v| v >= 1.0)
    })
    .await?;
    wait_until("the rogue records why", || {
        gr.core
            .board()
            .status("bravo")
            .and_then(|s| s.last_error)
            .is_some_and(|e| e.contains("not linked") && e.contains("mesh link"))
    })
    .await?;
    let status = gr.core.board().status("bravo").expect("configured peer");
    assert!(!status.up, "a refused link must not be up: {status:?}");
    assert!(
        gr.metric("mesh_gateway_handshake_failures_total{reason=\"refused_by_peer\"}")
            .is_some_and(|v| v >= 1.0),
        "{}",
        gr.metrics()
    );
    assert!(!gb.link_up("aardvark") && gb.core.board().status("aardvark").is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinking_closes_the_connection_and_a_restarted_peer_is_relinked() -> Result<()> {
    let (alpha, bravo) = (Cluster::new("alpha")?, Cluster::new("bravo")?);
    let ga = TestGateway::start(&alpha, None).await?;
    let gb = TestGateway::start(&bravo, None).await?;
    link_pair(
        (&alpha, &ga, exports("alpha", 1, &[])),
        (&bravo, &gb, exports("bravo", 1, &[])),
    );
    wait_until("link up", || ga.link_up("bravo") && gb.link_up("alpha")).await?;

    // Restart bravo on the same UDP port: alpha (the dialer) notices the close and redials.
    let bravo_addr = gb.core.quic_addr();
    gb.core.shutdown().await;
    wait_until("alpha sees the link down", || !ga.link_up("bravo")).await?;
    let down = ga.core.board().status("bravo").expect("still linked");
    assert!(down.last_error.is_some(), "{down:?}");
    // The old endpoint lets go of its UDP socket once its last connection is drained.
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    let gb = loop {
        match TestGateway::start(&bravo, Some(bravo_addr)).await {
            Ok(g) => break g,
            Err(e)
                if tokio::time::Instant::now() < deadline && e.to_string().contains("in use") =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    };
    gb.publish(bravo.snapshot(
        2,
        vec![alpha.peer(ga.core.quic_addr())],
        exports("bravo", 1, &[]),
    ));
    wait_until("link back up after the restart", || {
        ga.link_up("bravo") && gb.link_up("alpha")
    })
    .await?;

    // Unlink on alpha's side: its connection closes and bravo sees the link go down.
    ga.publish(alpha.snapshot(3, vec![], exports("alpha", 1, &[])));
    wait_until("bravo sees the link down", || !gb.link_up("alpha")).await?;
    assert!(ga.core.board().status("bravo").is_none());
    assert!(ga.core.board().report().peers.is_empty());
    wait_until("the per-peer series is gone", || {
        ga.metric("mesh_gateway_link_up{peer=\"bravo\"}").is_none()
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_peer_is_declared_down_within_the_idle_timeout_and_relinked_after()
-> Result<()> {
    let (alpha, bravo) = (Cluster::new("alpha")?, Cluster::new("bravo")?);
    let ga = TestGateway::start(&alpha, None).await?;
    let gb = TestGateway::start(&bravo, None).await?;
    let relay = common::UdpRelay::start(gb.core.quic_addr()).await?;
    // alpha dials bravo through the relay.
    ga.publish(alpha.snapshot(1, vec![bravo.peer(relay.addr)], exports("alpha", 1, &[])));
    gb.publish(bravo.snapshot(
        1,
        vec![alpha.peer(ga.core.quic_addr())],
        exports("bravo", 1, &[]),
    ));
    wait_until("link up through the relay", || {
        ga.link_up("bravo") && gb.link_up("alpha")
    })
    .await?;

    relay.partition(true);
    let cut_at = std::time::Instant::now();
    wait_until("both sides declare the link down", || {
        !ga.link_up("bravo") && !gb.link_up("alpha")
    })
    .await?;
    let detected = cut_at.elapsed();
    // Idle timeout 3 s: frames left unacknowledged for 2/3 of it (2 s) close the link first,
    // well inside the 5 s failover promise, and not before that limit.
    assert!(
        detected < std::time::Duration::from_millis(3500),
        "took {detected:?}"
    );
    assert!(
        detected > std::time::Duration::from_millis(1900),
        "declared down too early: {detected:?}"
    );
    let status = ga.core.board().status("bravo").expect("still linked");
    assert!(
        status
            .last_error
            .is_some_and(|e| e.contains("acknowledged nothing") || e.contains("timed out")),
        "{:?}",
        ga.core.board().status("bravo")
    );

    relay.partition(false);
    wait_until("relinked after the partition heals", || {
        ga.link_up("bravo") && gb.link_up("alpha")
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertised_addresses_are_what_the_controller_is_told() -> Result<()> {
    let alpha = Cluster::new("alpha")?;
    let mut settings = TestGateway::settings(&alpha, None);
    settings.advertise_quic = Some("203.0.113.7:4433".parse()?);
    settings.advertise_tunnel = Some("10.0.0.7:15008".parse()?);
    let ga = TestGateway::start_with(&alpha, settings).await?;
    let report = ga.core.board().report();
    assert_eq!(report.quic_addr, "203.0.113.7:4433".parse()?);
    assert_eq!(report.tunnel_addr, "10.0.0.7:15008".parse()?);
    // Still bound where it was asked to be.
    assert!(ga.core.board().quic_addr().ip().is_loopback());
    Ok(())
}
