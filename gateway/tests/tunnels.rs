//! Tunnels: a sidecar-like client opens HTTP/2 CONNECT tunnels on gateway alpha to endpoints of
//! cluster bravo; raw QUIC streams with bad headers are refused.

mod common;

use std::sync::Arc;

use anyhow::{Context, Result};
use common::{
    Cluster, EchoEndpoint, TestGateway, TunnelClient, exports, link_pair, round_trip, wait_until,
    within,
};
use http::StatusCode;
use mesh_core::api::ALPN_MESH_LINK;
use mesh_core::identity::TrustStore;
use mesh_core::wire::{StreamHeader, TunnelRefusal, TunnelReply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Pair {
    alpha: Cluster,
    bravo: Cluster,
    ga: TestGateway,
    gb: TestGateway,
    echo: EchoEndpoint,
}

/// alpha and bravo linked; bravo exports `echo.demo` served by an echo endpoint.
async fn linked_pair() -> Result<Pair> {
    let (alpha, bravo) = (Cluster::new("alpha")?, Cluster::new("bravo")?);
    let echo = EchoEndpoint::start().await?;
    let ga = TestGateway::start(&alpha, None).await?;
    let gb = TestGateway::start(&bravo, None).await?;
    link_pair(
        (&alpha, &ga, exports("alpha", 1, &[])),
        (
            &bravo,
            &gb,
            exports("bravo", 1, &[("echo.demo", &[echo.addr])]),
        ),
    );
    wait_until("link up", || ga.link_up("bravo") && gb.link_up("alpha")).await?;
    Ok(Pair {
        alpha,
        bravo,
        ga,
        gb,
        echo,
    })
}

async fn client(p: &Pair) -> Result<TunnelClient> {
    TunnelClient::connect(
        p.ga.core.tunnel_addr(),
        &p.alpha.workload_id,
        std::slice::from_ref(&p.alpha.bundle),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_round_trip_through_a_tunnel_including_one_mebibyte() -> Result<()> {
    let p = linked_pair().await?;
    let mut c = client(&p).await?;
    let (status, error, body, tunnel) = c
        .connect_tunnel(p.echo.addr, Some("bravo"), Some("echo.demo"))
        .await?;
    assert_eq!(status, StatusCode::OK, "{error:?} {body}");
    let mut tunnel = tunnel.context("a 200 CONNECT carries a tunnel")?;

    let back = within(
        "small round trip",
        round_trip(&mut tunnel, b"hello through the mesh"),
    )
    .await?;
    assert_eq!(back, b"hello through the mesh");
    let big: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let back = within("1 MiB round trip", round_trip(&mut tunnel, &big)).await?;
    assert!(back == big, "1 MiB came back corrupted");

    // Half-close travels end to end: the echo endpoint sees EOF and closes its side, so the
    // client reads EOF too.
    tunnel.shutdown().await?;
    let mut rest = Vec::new();
    within("EOF after half-close", async {
        Ok(tunnel.read_to_end(&mut rest).await?)
    })
    .await?;
    assert!(rest.is_empty());

    assert_eq!(p.echo.connections(), 1);
    wait_until("tunnel metrics on both sides", || {
        p.ga.metric(
            "mesh_gateway_tunnels_total{peer=\"bravo\",side=\"ingress\",result=\"accepted\"}",
        ) == Some(1.0)
            && p.gb.metric(
                "mesh_gateway_tunnels_total{peer=\"alpha\",side=\"egress\",result=\"accepted\"}",
            ) == Some(1.0)
            && p.ga
                .metric("mesh_gateway_tunnel_bytes_total{peer=\"bravo\",direction=\"to_peer\"}")
                .is_some_and(|v| v >= (1024 * 1024) as f64)
            && p.gb
                .metric("mesh_gateway_tunnel_bytes_total{peer=\"alpha\",direction=\"from_peer\"}")
                .is_some_and(|v| v >= (1024 * 1024) as f64)
            && p.ga.metric("mesh_gateway_tunnels_active{peer=\"bravo\"}") == Some(0.0)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_is_not_exported_is_refused_and_never_connected() -> Result<()> {
    let p = linked_pair().await?;
    let secret = TcpListener::bind("127.0.0.1:0").await?;
    let secret_addr = secret.local_addr()?;
    let mut c = client(&p).await?;

    // Listed under another service, and not listed at all: both refused by bravo.
    for (endpoint, service) in [(secret_addr, "echo.demo"), (p.echo.addr, "other.demo")] {
        let (status, error, body, tunnel) = c
            .connect_tunnel(endpoint, Some("bravo"), Some(service))
            .await?;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert_eq!(error.as_deref(), Some("not_exported"));
        assert!(body.contains("not an exported endpoint"), "{body}");
        assert!(tunnel.is_none());
    }
    assert_eq!(
        p.echo.connections(),
        0,
        "a refused tunnel must not reach the echo endpoint"
    );
    // The first connection the secret listener sees is ours, made after the refusals.
    let ours = TcpStream::connect(secret_addr).await?;
    let (_, from) = within("accept", async { Ok(secret.accept().await?) }).await?;
    assert_eq!(
        from,
        ours.local_addr()?,
        "something else connected to the unexported endpoint"
    );
    assert_eq!(
        p.gb.metric(
            "mesh_gateway_tunnels_total{peer=\"alpha\",side=\"egress\",result=\"not_exported\"}"
        ),
        Some(2.0)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_unknown_clusters_and_foreign_workloads_are_answered_with_labels()
-> Result<()> {
    let p = linked_pair().await?;
    let mut c = client(&p).await?;
    let (status, error, _, _) = c
        .connect_tunnel(p.echo.addr, None, Some("echo.demo"))
        .await?;
    assert_eq!(
        (status, error.as_deref()),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );
    let (status, error, _, _) = c
        .connect_tunnel(p.echo.addr, Some("bravo"), Some("not-a-service"))
        .await?;
    assert_eq!(
        (status, error.as_deref()),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );
    let (status, error, body, _) = c
        .connect_tunnel(p.echo.addr, Some("charlie"), Some("echo.demo"))
        .await?;
    assert_eq!(
        (status, error.as_deref()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unknown_cluster")),
        "{body}"
    );

    // A workload of bravo passes alpha's TLS (the clusters are linked) but may not open tunnels
    // through alpha's gateway.
    let mut foreign = TunnelClient::connect(
        p.ga.core.tunnel_addr(),
        &p.bravo.workload_id,
        std::slice::from_ref(&p.alpha.bundle),
    )
    .await?;
    let (status, error, body, _) = foreign
        .connect_tunnel(p.echo.addr, Some("bravo"), Some("echo.demo"))
        .await?;
    assert_eq!(
        (status, error.as_deref()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{body}"
    );
    assert!(body.contains("may not open tunnels"), "{body}");
    assert_eq!(p.echo.connections(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_streams_with_bad_headers_are_refused_and_counted() -> Result<()> {
    let (alpha, bravo) = (Cluster::new("alpha")?, Cluster::new("bravo")?);
    let gb = TestGateway::start(&bravo, None).await?;
    // bravo expects alpha to dial it ("alpha" sorts lower); the test plays alpha's gateway.
    gb.publish(bravo.snapshot(
        1,
        vec![alpha.peer("127.0.0.1:9".parse()?)],
        exports("bravo", 1, &[]),
    ));
    let trust = TrustStore::new(&[alpha.bundle.clone(), bravo.bundle.clone()])?;
    let tls =
        mesh_core::identity::client_config(Some(&alpha.gateway_id), trust, &[ALPN_MESH_LINK])?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = within("dial bravo", async {
        wait_until("bravo knows its peer", || {
            gb.core.board().status("alpha").is_some()
        })
        .await?;
        Ok(endpoint
            .connect(gb.core.quic_addr(), mesh_gateway::SERVER_NAME)?
            .await?)
    })
    .await?;

    let mut oversized = b"MSH1\x01".to_vec();
    oversized.extend_from_slice(&5000u16.to_be_bytes());
    oversized.extend_from_slice(&[0u8; 64]);
    let cases: [(&[u8], &str); 3] = [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "bad_magic"),
        (&oversized, "too_large"),
        // Major 1: this build speaks major 0 only (a newer minor of major 0 would be read).
        (b"MSH1\x19\x00\x01\x01", "unsupported_version"),
    ];
    for (bytes, label) in cases {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(bytes).await?;
        let reply = within("refusal", async {
            let mut head = [0u8; 2];
            recv.read_exact(&mut head).await?;
            let mut msg = vec![0u8; head[1] as usize];
            recv.read_exact(&mut msg).await?;
            Ok(TunnelReply::decode(head[0], &msg)?)
        })
        .await?;
        let TunnelReply::Refused(kind, msg) = reply else {
            panic!("{label}: a bad header must be refused");
        };
        assert_eq!(kind, TunnelRefusal::BadHeader, "{label}: {msg}");
        let series = format!("mesh_gateway_stream_rejected_total{{reason=\"{label}\"}}");
        assert_eq!(gb.metric(&series), Some(1.0), "{}", gb.metrics());
    }

    // A well-formed header naming another cluster's endpoint is refused too, never connected.
    let target = TcpListener::bind("127.0.0.1:0").await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&StreamHeader::tunnel("alpha", "echo.demo", target.local_addr()?).encode()?)
        .await?;
    let mut head = [0u8; 2];
    within("refusal", async { Ok(recv.read_exact(&mut head).await?) }).await?;
    assert_eq!(head[0], TunnelRefusal::NotExported as u8);
    conn.close(0u32.into(), b"done");
    Ok(())
}
