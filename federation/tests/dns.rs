//! The controller's DNS server against the real `dig` (dnsutils): a controller holding a
//! local static service and a linked peer's catalog with a named port, queried over UDP and
//! TCP for every kind of answer, fed garbage, and restarted to check VIPs stay put; and
//! controllers forwarding names outside the zone to a small upstream of the test's own
//! (`support/upstream.rs`): ids, TCP, TC, an upstream that never answers, too many at once.
//!
//! Without `dig` the test is skipped with a message, except under `CI=true`, where it fails.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use http::{Method, StatusCode};
use mesh_core::api::{PATH_FEDERATION, ReadyFile};
use mesh_core::catalog::{CatalogMessage, ServicePort};
use mesh_federation::{ControllerArgs, RunningController, start};

use support::upstream::FakeUpstream;
use support::{Harness, StateDir, args, echo, peer_catalog, peer_link_info};

/// Whether `dig` can run here; under `CI=true` its absence is an error.
fn have_dig() -> anyhow::Result<bool> {
    let found = std::process::Command::new("dig")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        ensure!(
            std::env::var("CI").as_deref() != Ok("true"),
            "`dig` is missing (install dnsutils); CI must run the DNS tests"
        );
        eprintln!("skipping: `dig` is not installed (apt-get install dnsutils)");
    }
    Ok(found)
}

/// Runs `dig @addr -p port <args>` and returns its output.
fn dig(server: SocketAddr, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .context("running dig")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `+short` answer lines.
fn short(server: SocketAddr, args: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut all = vec!["+short"];
    all.extend_from_slice(args);
    Ok(dig(server, &all)?
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

fn controller_args(state: &StateDir, services: &std::path::Path) -> ControllerArgs {
    ControllerArgs {
        services_file: Some(services.to_path_buf()),
        vip_range_v6: Some("fd00:240::/64".into()),
        ..args("us-east", state.path())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_gets_every_kind_of_answer() -> anyhow::Result<()> {
    if !have_dig()? {
        return Ok(());
    }
    let (state, ca) = StateDir::new("dns", "us-east")?;
    let services = state.path().join("services.yaml");
    std::fs::write(
        &services,
        "- service: local.demo\n  address: 127.0.0.1:9\n  identity: spiffe://us-east.mesh/ns/demo/sa/local\n",
    )?;
    let ctl = start(controller_args(&state, &services)).await?;
    let h = Harness {
        ctl,
        ca,
        cluster: "us-east".into(),
        state,
    };
    let dns = h.ctl.dns_addr;
    let ready: ReadyFile =
        serde_json::from_slice(&std::fs::read(h.state.path().join("ready.json"))?)?;
    ensure!(ready.addrs.get("dns") == Some(&dns), "{ready:?}");

    // A linked peer exports echo.demo with a named port.
    let (status, body) = h
        .admin(Method::POST, "/v1/links", Some(&peer_link_info()?))
        .await?;
    ensure!(status == StatusCode::CREATED, "link: {status} {body}");
    let gateway = h.gateway_client().await?;
    let mut catalog = peer_catalog(3)?;
    if let Some(svc) = catalog.services.get_mut(&echo()) {
        svc.ports = vec![ServicePort {
            name: "http".into(),
            protocol: "TCP".into(),
            port: 8080,
            app_protocol: None,
        }];
    }
    gateway
        .send_json(
            Method::POST,
            &format!("{PATH_FEDERATION}eu-central"),
            Some(&CatalogMessage::Snapshot { catalog }),
        )
        .await
        .map_err(support::control::CallError::into_anyhow)?;

    // A: the cluster-set VIP, once the zone has the peer's service.
    mesh_test_support::wait_for("the A record", Duration::from_secs(10), async || {
        short(dns, &["echo.demo.svc.clusterset.local"]).is_ok_and(|a| a.len() == 1)
    })
    .await?;
    let answer = short(dns, &["echo.demo.svc.clusterset.local"])?;
    let [set] = answer.as_slice() else {
        anyhow::bail!("no single A record: {answer:?}");
    };
    let set = set.clone();
    ensure!(
        set.starts_with("240.240."),
        "VIP {set} outside the default range"
    );
    let full = dig(dns, &["echo.demo.svc.clusterset.local"])?;
    ensure!(
        full.contains("status: NOERROR") && full.contains(" aa"),
        "{full}"
    );
    ensure!(
        full.contains("IN\tSOA"),
        "SOA in the authority section: {full}"
    );
    let record = [
        "echo.demo.svc.clusterset.local.",
        "5",
        "IN",
        "A",
        set.as_str(),
    ];
    ensure!(
        full.lines()
            .any(|l| l.split_whitespace().eq(record.iter().copied())),
        "TTL 5: {full}"
    );

    // AAAA mirrors the IPv4 offset in the configured IPv6 range.
    let aaaa = short(dns, &["AAAA", "echo.demo.svc.clusterset.local"])?;
    ensure!(
        aaaa.len() == 1 && aaaa[0].starts_with("fd00:240::"),
        "{aaaa:?}"
    );

    // Per-cluster names: the peer's and this cluster's own.
    let peer = short(dns, &["echo.demo.svc.eu-central.clusterset.local"])?;
    ensure!(peer.len() == 1 && peer[0] != set, "{peer:?} vs {set}");
    let local = short(dns, &["local.demo.svc.us-east.clusterset.local"])?;
    ensure!(local.len() == 1, "{local:?}");
    let local_set = short(dns, &["local.demo.svc.clusterset.local"])?;
    ensure!(local_set.len() == 1, "{local_set:?}");

    // SRV for the named port.
    let srv = short(dns, &["SRV", "_http._tcp.echo.demo.svc.clusterset.local"])?;
    ensure!(
        srv == ["0 100 8080 echo.demo.svc.clusterset.local."],
        "{srv:?}"
    );

    // TCP answers the same.
    let tcp = short(dns, &["+tcp", "echo.demo.svc.clusterset.local"])?;
    ensure!(tcp == [set.clone()], "{tcp:?}");

    // NXDOMAIN and NODATA, both with the SOA.
    let nx = dig(dns, &["nope.demo.svc.clusterset.local"])?;
    ensure!(
        nx.contains("status: NXDOMAIN") && nx.contains("IN\tSOA"),
        "{nx}"
    );
    let nx = dig(dns, &["echo.demo.svc.ap-south.clusterset.local"])?;
    ensure!(nx.contains("status: NXDOMAIN"), "{nx}");
    let nodata = dig(dns, &["TXT", "echo.demo.svc.clusterset.local"])?;
    ensure!(
        nodata.contains("status: NOERROR")
            && nodata.contains("ANSWER: 0")
            && nodata.contains("AUTHORITY: 1"),
        "{nodata}"
    );

    // Outside the zone and zone transfers: refused.
    let refused = dig(dns, &["example.com"])?;
    ensure!(refused.contains("status: REFUSED"), "{refused}");
    let axfr = dig(dns, &["AXFR", "clusterset.local"])?;
    ensure!(
        axfr.contains("Transfer failed") || axfr.contains("REFUSED"),
        "{axfr}"
    );

    // Garbage, a name of 300 bytes, and a claimed 500 questions: FORMERR or silence, counted,
    // and the server keeps answering.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let mut noise: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    noise[2] = 0x01;
    socket.send_to(&noise, dns).await?;
    let mut long = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..5 {
        long.push(60);
        long.extend([b'a'; 60]);
    }
    long.extend([0, 0, 1, 0, 1]);
    socket.send_to(&long, dns).await?;
    let mut buf = [0u8; 512];
    let answered = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let (n, _) = socket.recv_from(&mut buf).await?;
            if n >= 12 && buf[0] == 0x12 && buf[1] == 0x34 {
                return Ok::<_, std::io::Error>(buf[3] & 0x0f);
            }
        }
    })
    .await
    .context("no answer to the 300-byte name")??;
    ensure!(
        answered == 1,
        "rcode {answered} for a 300-byte name, expected FORMERR (1)"
    );
    let mut many = vec![0x00, 0x07, 0x01, 0x00, 0x01, 0xf4, 0, 0, 0, 0, 0, 0];
    many.extend([0, 0, 1, 0, 1]);
    socket.send_to(&many, dns).await?;
    let again = short(dns, &["echo.demo.svc.clusterset.local"])?;
    ensure!(again == [set.clone()], "after garbage: {again:?}");

    // Recursion desired is answered authoritatively, without recursion available.
    let rd = dig(dns, &["+recurse", "echo.demo.svc.clusterset.local"])?;
    ensure!(rd.contains(" rd") && !rd.contains(" ra"), "{rd}");

    // Every kind of query is counted.
    let (_, metrics) = h.admin_get("/metrics").await?;
    for series in [
        "mesh_dns_queries_total{type=\"A\",rcode=\"NOERROR\"}",
        "mesh_dns_queries_total{type=\"A\",rcode=\"NXDOMAIN\"}",
        "mesh_dns_queries_total{type=\"TXT\",rcode=\"NOERROR\"}",
        "mesh_dns_queries_total{type=\"A\",rcode=\"REFUSED\"}",
        "mesh_dns_queries_total{type=\"AXFR\",rcode=\"REFUSED\"}",
        "mesh_dns_queries_total{type=\"malformed\",rcode=\"FORMERR\"}",
        "mesh_dns_query_duration_seconds_count",
    ] {
        ensure!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }

    // Restarted, the controller gives the local service the VIPs it recorded.
    let Harness { ctl, state, .. } = h;
    ctl.shutdown().await;
    ensure!(state.path().join("dns-vips.json").exists());
    let ctl = start(controller_args(&state, &services)).await?;
    let after = short(ctl.dns_addr, &["local.demo.svc.clusterset.local"])?;
    ensure!(
        after == local_set,
        "{after:?} after a restart, {local_set:?} before"
    );
    ctl.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_is_dropped_then_answered_again() -> anyhow::Result<()> {
    let (state, _ca) = StateDir::new("dns-rate", "us-east")?;
    let ctl = start(ControllerArgs {
        dns_client_qps: 5,
        ..args("us-east", state.path())
    })
    .await?;
    let query = |id: u16| {
        let mut q = id.to_be_bytes().to_vec();
        q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in ["clusterset", "local"] {
            q.push(u8::try_from(label.len()).unwrap_or(0));
            q.extend(label.as_bytes());
        }
        q.extend([0, 0, 6, 0, 1]);
        q
    };
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    for id in 0..40 {
        socket.send_to(&query(id), ctl.dns_addr).await?;
    }
    let mut answered = 0;
    let mut buf = [0u8; 512];
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await
    {
        answered += 1;
    }
    ensure!(
        (5..=12).contains(&answered),
        "{answered} of 40 answered at 5/s, burst 10"
    );
    let (_, metrics) = support::admin(ctl.admin_addr, Method::GET, "/metrics", None).await?;
    ensure!(
        metrics.contains("mesh_dns_queries_total{type=\"unknown\",rcode=\"ratelimited\"}"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    socket.send_to(&query(99), ctl.dns_addr).await?;
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
        .await
        .context("answered again after refilling")??;
    ensure!(n >= 12 && buf[..2] == [0, 99], "another answer");
    ctl.shutdown().await;
    Ok(())
}

/// A UDP query for `name` (type A) under `id`, as raw bytes.
fn a_query(id: u16, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    Ok(m.to_vec()?)
}

/// Sends `query` from a fresh socket and waits (at most `wait`) for the response.
async fn ask_raw(server: SocketAddr, query: &[u8], wait: Duration) -> anyhow::Result<Message> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.send_to(query, server).await?;
    let mut buf = vec![0u8; 4096];
    let (len, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .with_context(|| format!("no response from {server} within {wait:?}"))??;
    Ok(Message::from_vec(&buf[..len])?)
}

/// A controller forwarding to `upstreams` with a forward `timeout`.
async fn forwarding_controller(
    state: &StateDir,
    upstreams: &[SocketAddr],
    timeout: Duration,
    max_inflight: usize,
) -> anyhow::Result<RunningController> {
    let list: Vec<String> = upstreams.iter().map(SocketAddr::to_string).collect();
    Ok(start(ControllerArgs {
        dns_upstream: Some(list.join(",").parse()?),
        dns_forward_timeout: timeout,
        dns_forward_max_inflight: max_inflight,
        ..args("us-east", state.path())
    })
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_the_zone_are_forwarded_to_the_upstreams() -> anyhow::Result<()> {
    if !have_dig()? {
        return Ok(());
    }
    let upstream = FakeUpstream::answering().await?;
    // A port nothing listens on, first: refused at once, so the next upstream answers.
    let dead = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let dead_addr = dead.local_addr()?;
    drop(dead);
    let (state, _ca) = StateDir::new("dns-forward", "us-east")?;
    let ctl = forwarding_controller(
        &state,
        &[dead_addr, upstream.addr],
        Duration::from_secs(2),
        64,
    )
    .await?;
    let dns = ctl.dns_addr;

    // dig gets the upstream's answer (dig itself refuses a response under another id).
    let out = dig(dns, &["example.com"])?;
    ensure!(out.contains("status: NOERROR"), "{out}");
    ensure!(
        out.lines()
            .any(|l| l.starts_with("example.com.") && l.ends_with("192.0.2.1")),
        "{out}"
    );
    ensure!(
        !out.contains(" aa"),
        "a forwarded answer is not authoritative: {out}"
    );

    // The client's id comes back; the upstream saw fresh ids, not the client's.
    for _ in 0..3 {
        let m = ask_raw(
            dns,
            &a_query(0x4d2e, "ids.example.com.")?,
            Duration::from_secs(5),
        )
        .await?;
        ensure!(m.metadata.id == 0x4d2e, "response id {}", m.metadata.id);
        ensure!(m.answers.len() == 1, "{m:?}");
    }
    let ids: Vec<u16> = upstream
        .seen()
        .iter()
        .filter(|s| s.name == "ids.example.com.")
        .map(|s| s.id)
        .collect();
    ensure!(ids.len() == 3, "upstream saw {ids:?}");
    ensure!(
        ids.iter().any(|id| *id != 0x4d2e),
        "every upstream query reused the client's id: {ids:?}"
    );

    // Over TCP from the client: over TCP to the upstream.
    let tcp = short(dns, &["+tcp", "tcp.example.com"])?;
    ensure!(tcp == ["192.0.2.1"], "{tcp:?}");
    ensure!(
        upstream
            .seen()
            .iter()
            .any(|s| s.name == "tcp.example.com." && s.transport == "tcp"),
        "{:?}",
        upstream.seen()
    );

    // The upstream answers TC over UDP: asked again over TCP, and the whole answer (30
    // records, over 512 bytes) reaches a client that takes 1232 bytes over UDP.
    let big = short(dns, &["+bufsize=1232", "+ignore", "big.example.com"])?;
    ensure!(big.len() == 30, "{big:?}");
    let seen: Vec<&'static str> = upstream
        .seen()
        .iter()
        .filter(|s| s.name == "big.example.com.")
        .map(|s| s.transport)
        .collect();
    ensure!(seen == ["udp", "tcp"], "{seen:?}");
    // A client without EDNS takes 512 bytes: it gets TC, and dig retries over TCP itself.
    let small = dig(dns, &["+noedns", "+ignore", "big.example.com"])?;
    ensure!(small.contains(" tc"), "{small}");

    // The zone is still answered here, authoritatively, and never asked upstream.
    let soa = dig(dns, &["SOA", "clusterset.local"])?;
    ensure!(
        soa.contains("status: NOERROR") && soa.contains(" aa"),
        "{soa}"
    );
    let nx = dig(dns, &["nope.demo.svc.clusterset.local"])?;
    ensure!(nx.contains("status: NXDOMAIN"), "{nx}");
    ensure!(
        !upstream
            .seen()
            .iter()
            .any(|s| s.name.ends_with("clusterset.local.")),
        "{:?}",
        upstream.seen()
    );

    let (_, metrics) = support::admin(ctl.admin_addr, Method::GET, "/metrics", None).await?;
    for series in [
        "mesh_dns_forwards_total{result=\"answered\"}".to_string(),
        format!("mesh_dns_upstream_tries_total{{upstream=\"{dead_addr}\",result=\"error\"}}"),
        format!(
            "mesh_dns_upstream_tries_total{{upstream=\"{}\",result=\"truncated\"}}",
            upstream.addr
        ),
        "mesh_dns_queries_total{type=\"A\",rcode=\"NOERROR\"}".to_string(),
    ] {
        ensure!(
            metrics.contains(&series),
            "{series} missing from:\n{metrics}"
        );
    }
    ctl.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_gets_servfail_within_the_bound() -> anyhow::Result<()> {
    if !have_dig()? {
        return Ok(());
    }
    let silent = FakeUpstream::silent().await?;
    let (state, _ca) = StateDir::new("dns-forward-silent", "us-east")?;
    let bound = Duration::from_secs(1);
    let ctl = forwarding_controller(&state, &[silent.addr], bound, 1).await?;
    let dns = ctl.dns_addr;

    // UDP, with dig waiting far longer than the bound.
    let started = std::time::Instant::now();
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", dns.ip()))
        .args([
            "-p",
            &dns.port().to_string(),
            "+time=8",
            "+tries=1",
            "example.com",
        ])
        .output()?;
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let took = started.elapsed();
    ensure!(out.contains("status: SERVFAIL"), "{out}");
    ensure!(
        took >= bound && took < bound + Duration::from_secs(2),
        "SERVFAIL after {took:?}, bound {bound:?}"
    );
    // Both tries (one upstream: tried twice) reached it.
    ensure!(silent.seen().len() == 2, "{:?}", silent.seen());

    // TCP too.
    let started = std::time::Instant::now();
    let tcp = dig(dns, &["+tcp", "+time=8", "tcp.example.com"])?;
    ensure!(tcp.contains("status: SERVFAIL"), "{tcp}");
    ensure!(
        started.elapsed() < bound + Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // One slot (max in flight 1): while a query waits on the upstream, another gets SERVFAIL
    // at once, counted as overloaded.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket
        .send_to(&a_query(1, "first.example.com.")?, dns)
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !silent.seen().iter().any(|s| s.name == "first.example.com.") {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "first query not forwarded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    let second = ask_raw(dns, &a_query(2, "second.example.com.")?, bound).await?;
    ensure!(
        second.metadata.id == 2 && second.metadata.response_code == ResponseCode::ServFail,
        "{second:?}"
    );
    ensure!(
        started.elapsed() < bound,
        "overloaded answered after {:?}",
        started.elapsed()
    );
    let mut buf = [0u8; 512];
    let (len, _) = tokio::time::timeout(bound * 3, socket.recv_from(&mut buf)).await??;
    let first = Message::from_vec(&buf[..len])?;
    ensure!(
        first.metadata.response_code == ResponseCode::ServFail,
        "{first:?}"
    );

    let (_, metrics) = support::admin(ctl.admin_addr, Method::GET, "/metrics", None).await?;
    for series in [
        "mesh_dns_forwards_total{result=\"failed\"}".to_string(),
        "mesh_dns_forwards_total{result=\"overloaded\"}".to_string(),
        format!(
            "mesh_dns_upstream_tries_total{{upstream=\"{}\",result=\"timeout\"}}",
            silent.addr
        ),
        "mesh_dns_queries_total{type=\"A\",rcode=\"SERVFAIL\"}".to_string(),
    ] {
        ensure!(
            metrics.contains(&series),
            "{series} missing from:\n{metrics}"
        );
    }
    ctl.shutdown().await;
    Ok(())
}
