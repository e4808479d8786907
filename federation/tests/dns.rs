//! The controller's DNS server against the real `dig` (dnsutils): a controller holding a
//! local static service and a linked peer's catalog with a named port, queried over UDP and
//! TCP for every kind of answer, fed garbage, and restarted to check VIPs stay put.
//!
//! Without `dig` the test is skipped with a message, except under `CI=true`, where it fails.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use http::{Method, StatusCode};
use mesh_core::api::{PATH_FEDERATION, ReadyFile};
use mesh_core::catalog::{CatalogMessage, ServicePort};
use mesh_core::identity::SpiffeId;
use mesh_federation::{ControllerArgs, start};

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
    let gateway = h.client(&SpiffeId::gateway("us-east.mesh")).await?;
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let set = loop {
        let answer = short(dns, &["echo.demo.svc.clusterset.local"])?;
        if let [ip] = answer.as_slice() {
            break ip.clone();
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no A record: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
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
