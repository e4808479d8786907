//! DNS throughput (`--parts dns`): `dnsperf` against the mesh controller's DNS server and
//! against CoreDNS serving an equivalent zone, in the same run with the same query file.
//!
//! The controller (`bench-dns`) holds `--dns-services` services in its static services file,
//! so its zone has one A record per service (`svc-<i>.bench.svc.clusterset.local`). CoreDNS
//! (its `file` plugin: an authoritative zone from a zone file) serves the same names with the
//! same addresses, read back from the mesh before the runs, the same TTL and an SOA. Neither
//! caches (the mesh has no cache; CoreDNS runs without its `cache` plugin). The controller's
//! per-client rate limit is off (`--dns-client-qps 0`): dnsperf is one client.
//!
//! Per server: a run as fast as answers come (dnsperf's `-q` queries in flight), then a run at a
//! fixed rate for the latency under moderate load. The server is pinned to core 0 and dnsperf
//! to core 1 when there are two cores, as in the HTTP paths.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use mesh_federation::ControllerArgs;
use mesh_launcher::cluster_set::ComponentArgs;
use serde::{Deserialize, Serialize};

use crate::args::BenchConfig;
use crate::dnsperf::{self, DnsperfResult, DnsperfRun};
use crate::error::BenchError;
use crate::procstat;
use crate::topology::{MeshPair, NAMESPACE};

/// The cluster of the DNS benchmark's controller.
const CLUSTER: &str = "bench-dns";
/// TTL of both servers' answers.
const TTL: u32 = 5;
/// How long CoreDNS may take to answer its first query.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One server's runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsServerReport {
    /// `mesh` or `coredns`.
    pub server: String,
    /// What exactly ran.
    pub title: String,
    /// As fast as answers come.
    pub max: DnsperfResult,
    /// At the fixed rate.
    pub fixed: DnsperfResult,
    /// CPU seconds of the server per 1,000 answered queries, during the max run.
    pub cpu_s_per_1000_queries: f64,
    /// Server RSS after the runs, bytes.
    pub rss_bytes: u64,
}

/// The DNS part of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsReport {
    /// Names in the zone and in the query file.
    pub names: usize,
    /// Queries in flight at most (dnsperf `-q`).
    pub outstanding: usize,
    /// The fixed rate, queries per second.
    pub fixed_rate: u64,
    /// Measured time of each run, seconds.
    pub duration_s: f64,
    /// The servers, mesh first.
    pub servers: Vec<DnsServerReport>,
}

/// Where CoreDNS is looked for when `--coredns-bin` is not given: `target/k8s/bin/coredns`,
/// beside the `target/<profile>/` folder this program runs from (where
/// `tools/k8s-testenv/coredns/build.sh` puts it).
pub fn default_coredns_bin(bench_bin: &Path) -> PathBuf {
    bench_bin
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("k8s/bin/coredns"))
        .unwrap_or_else(|| PathBuf::from("coredns"))
}

/// The query file: every name once, type A.
pub fn query_file(names: &[String]) -> String {
    names.iter().map(|n| format!("{n} A\n")).collect()
}

/// An RFC 1035 zone file for `clusterset.local` with `records` (name, address).
pub fn zone_file(records: &[(String, Ipv4Addr)]) -> String {
    let mut out = format!(
        "$ORIGIN clusterset.local.\n$TTL {TTL}\n\
         @ IN SOA ns.clusterset.local. hostmaster.clusterset.local. 1 7200 1800 86400 {TTL}\n\
         @ IN NS ns.clusterset.local.\nns IN A 127.0.0.1\n"
    );
    for (name, ip) in records {
        out.push_str(&format!("{name}. IN A {ip}\n"));
    }
    out
}

/// The static services file: `count` services `svc-<i>.bench`, one endpoint each (loopback
/// addresses nothing listens on; never dialled).
pub fn services_yaml(count: usize) -> String {
    (0..count)
        .map(|i| {
            let (hi, lo) = (i / 250 % 250 + 1, i % 250 + 1);
            format!(
                "- service: svc-{i}.{NAMESPACE}\n  address: 127.11.{hi}.{lo}:10000\n  identity: spiffe://{CLUSTER}.mesh/ns/{NAMESPACE}/sa/dns\n"
            )
        })
        .collect()
}

/// The name of service `i` in the zone.
fn name_of(i: usize) -> String {
    format!("svc-{i}.{NAMESPACE}.svc.clusterset.local")
}

/// Asks `server` for the A record of `name` (one UDP query).
fn resolve(server: SocketAddr, name: &str) -> Result<Option<Ipv4Addr>, String> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let mut query = Message::query();
    query.metadata.id = rand_id(name);
    let qname = Name::from_ascii(format!("{name}.")).map_err(|e| e.to_string())?;
    query.add_query(Query::query(qname, RecordType::A));
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    socket.send_to(&bytes, server).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1232];
    let (len, _) = socket.recv_from(&mut buf).map_err(|e| e.to_string())?;
    let response = Message::from_vec(&buf[..len]).map_err(|e| e.to_string())?;
    Ok(response.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0),
        _ => None,
    }))
}

/// A message id that differs per name (no randomness needed: one query per socket).
fn rand_id(name: &str) -> u16 {
    name.bytes()
        .fold(0x9e37u16, |h, b| h.rotate_left(5) ^ u16::from(b))
}

/// Runs the DNS part: the mesh's controller, then CoreDNS, each under dnsperf.
pub async fn run(cfg: &BenchConfig) -> Result<DnsReport, BenchError> {
    let coredns_bin = cfg
        .args
        .coredns_bin
        .clone()
        .unwrap_or_else(|| default_coredns_bin(&cfg.bench_bin));
    if !coredns_bin.exists() {
        return Err(BenchError::Reference {
            proxy: "coredns",
            reason: format!(
                "{} does not exist: build it with tools/k8s-testenv/coredns/build.sh \
                 (benches/run.sh does) or pass --coredns-bin",
                coredns_bin.display()
            ),
        });
    }
    let dir = cfg.work_dir.join("dns");
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::io(&dir, e))?;
    let names: Vec<String> = (0..cfg.args.dns_services).map(name_of).collect();
    let queries = dir.join("queries.txt");
    std::fs::write(&queries, query_file(&names)).map_err(|e| BenchError::io(&queries, e))?;
    let duration = Duration::from_millis(cfg.args.dns_duration_ms);
    let two_cores = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    let perf = |server| DnsperfRun {
        server,
        queries: &queries,
        duration,
        outstanding: cfg.args.dns_outstanding,
        rate: None,
        cpus: two_cores.then_some("1"),
    };

    // The mesh.
    let mut mesh = MeshPair::empty(&dir);
    let result = async {
        let services = dir.join("services.yaml");
        std::fs::write(&services, services_yaml(names.len()))
            .map_err(|e| BenchError::io(&services, e))?;
        let state = dir.join(CLUSTER);
        mesh_launcher::ca::ensure_cluster_ca(CLUSTER, &state, false)
            .map_err(mesh_launcher::cluster_set::LaunchError::from)?;
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let controller = ControllerArgs {
            control: any,
            admin: any,
            dns: any,
            dns_client_qps: 0,
            dns_ttl: Duration::from_secs(u64::from(TTL)),
            services_file: Some(services),
            ..ControllerArgs::new(CLUSTER, &state)
        };
        mesh.spawn(
            &cfg.mesh_bin,
            "controller",
            ComponentArgs::Controller(controller),
        )
        .await?;
        let server = mesh.need("controller", "dns")?;
        let pid = mesh
            .pid("controller")
            .ok_or_else(|| BenchError::NotReady("the DNS controller has no pid".into()))?;
        // Every name resolves before measuring, and its address is what CoreDNS will serve.
        let records = wait_all_resolve(server, &names).await?;
        let report = measure(
            "mesh",
            &format!(
                "mesh controller ({} build), {} services, --dns-client-qps 0",
                cfg.mesh_bin
                    .parent()
                    .and_then(Path::file_name)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                names.len()
            ),
            pid,
            two_cores,
            &perf(server),
            cfg.args.dns_rate,
        )
        .await?;
        Ok::<_, BenchError>((report, records))
    }
    .await;
    mesh.stop().await;
    let (mesh_report, records) = result?;

    // CoreDNS with the same zone.
    let zone = dir.join("clusterset.local.zone");
    std::fs::write(&zone, zone_file(&records)).map_err(|e| BenchError::io(&zone, e))?;
    let port = free_port()?;
    let corefile = dir.join("Corefile");
    std::fs::write(
        &corefile,
        format!(
            "clusterset.local:{port} {{\n    bind 127.0.0.1\n    file {}\n}}\n",
            zone.display()
        ),
    )
    .map_err(|e| BenchError::io(&corefile, e))?;
    let log = dir.join("coredns.log");
    let log_file = std::fs::File::create(&log).map_err(|e| BenchError::io(&log, e))?;
    let log_err = log_file.try_clone().map_err(|e| BenchError::io(&log, e))?;
    let mut child = tokio::process::Command::new(&coredns_bin)
        .arg("-conf")
        .arg(&corefile)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::io(&coredns_bin, e))?;
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let result = async {
        let started = Instant::now();
        while resolve(server, &names[0]).ok().flatten().is_none() {
            if started.elapsed() > START_TIMEOUT || child.try_wait().ok().flatten().is_some() {
                return Err(BenchError::Reference {
                    proxy: "coredns",
                    reason: format!(
                        "did not answer within {START_TIMEOUT:?}; log {}:\n{}",
                        log.display(),
                        std::fs::read_to_string(&log).unwrap_or_default()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let version = crate::machine::tool_version(&coredns_bin.to_string_lossy(), &["-version"])
            .unwrap_or_else(|| "CoreDNS".into());
        let pid = child
            .id()
            .ok_or_else(|| BenchError::NotReady("CoreDNS has no pid".into()))?;
        measure(
            "coredns",
            &format!("{version}, plugin file (zone file of the same records), no cache"),
            pid,
            two_cores,
            &perf(server),
            cfg.args.dns_rate,
        )
        .await
    }
    .await;
    let _ = child.kill().await;
    let coredns_report = result?;

    Ok(DnsReport {
        names: names.len(),
        outstanding: cfg.args.dns_outstanding,
        fixed_rate: cfg.args.dns_rate,
        duration_s: duration.as_secs_f64(),
        servers: vec![mesh_report, coredns_report],
    })
}

/// Waits until every name resolves at `server`; the records.
async fn wait_all_resolve(
    server: SocketAddr,
    names: &[String],
) -> Result<Vec<(String, Ipv4Addr)>, BenchError> {
    let started = Instant::now();
    let mut records = Vec::with_capacity(names.len());
    for name in names {
        loop {
            match resolve(server, name) {
                Ok(Some(ip)) => {
                    records.push((name.clone(), ip));
                    break;
                }
                other if started.elapsed() > START_TIMEOUT => {
                    return Err(BenchError::NotReady(format!(
                        "{name} did not resolve at the mesh DNS {server} within \
                         {START_TIMEOUT:?}: {other:?}"
                    )));
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    Ok(records)
}

/// The max run and the fixed-rate run of one server (pid `pid`).
async fn measure(
    id: &str,
    title: &str,
    pid: u32,
    pin: bool,
    spec: &DnsperfRun<'_>,
    fixed_rate: u64,
) -> Result<DnsServerReport, BenchError> {
    if pin {
        procstat::pin(pid, "0")?;
    }
    let before = procstat::sample(pid)?;
    let max = dnsperf::run(spec).await?;
    let after = procstat::sample(pid)?;
    let fixed = dnsperf::run(&DnsperfRun {
        rate: Some(fixed_rate),
        ..spec.clone()
    })
    .await?;
    let rss = procstat::sample(pid)?.rss_bytes;
    let cpu = (after.cpu_seconds - before.cpu_seconds).max(0.0);
    Ok(DnsServerReport {
        server: id.to_string(),
        title: title.to_string(),
        cpu_s_per_1000_queries: if max.completed > 0 {
            cpu * 1000.0 / max.completed as f64
        } else {
            0.0
        },
        max,
        fixed,
        rss_bytes: rss,
    })
}

/// A loopback port free for UDP right now (CoreDNS binds it; TCP too, so check both).
fn free_port() -> Result<u16, BenchError> {
    for _ in 0..32 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| BenchError::io("binding a UDP port", e))?;
        let port = udp
            .local_addr()
            .map_err(|e| BenchError::io("binding a UDP port", e))?
            .port();
        if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(BenchError::NotReady(
        "no loopback port free for both UDP and TCP".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_and_the_queries_name_the_same_records() {
        let records = vec![
            (name_of(0), Ipv4Addr::new(240, 240, 0, 1)),
            (name_of(1), Ipv4Addr::new(240, 240, 0, 2)),
        ];
        let zone = zone_file(&records);
        assert!(zone.contains("svc-1.bench.svc.clusterset.local. IN A 240.240.0.2\n"));
        assert!(zone.contains("IN SOA") && zone.contains("$TTL 5"));
        let names: Vec<String> = records.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(
            query_file(&names),
            "svc-0.bench.svc.clusterset.local A\nsvc-1.bench.svc.clusterset.local A\n"
        );
        let services = services_yaml(2);
        assert!(services.contains("- service: svc-1.bench\n"), "{services}");
        assert_eq!(
            services
                .matches("identity: spiffe://bench-dns.mesh/")
                .count(),
            2
        );
        assert_eq!(
            default_coredns_bin(Path::new("/w/target/release/mesh-bench")),
            Path::new("/w/target/k8s/bin/coredns")
        );
    }
}
