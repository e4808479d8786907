//! The paths of the comparison and how each is measured: idle memory, then fixed-rate runs
//! (HTTP/1.1 at every rate, HTTP/2 at its rates) in interleaved rounds, with CPU and peak
//! memory of every proxy process over the first rate's runs, then maximum throughput with the path's proxies pinned to core 0
//! and the load generator and upstream to core 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::args::{BenchConfig, PathId};
use crate::error::BenchError;
use hdrhistogram::Histogram;

use crate::latency::{LatencySummary, new_histogram};
use crate::load::{LoadResult, LoadSpec, Pace, Protocol, Target, run_load};
use crate::procstat::{self, ProcSample};
use crate::reference::{ProxyKind, ReferenceProxy};
use crate::report::{PathReport, ProcessReport, RateRun, ThroughputRun};
use crate::topology::{
    CLUSTER_A, CLUSTER_B, ECHO_SERVICE, MeshPair, PLAIN_SERVICE, ROUTED_PATH, ROUTED_SERVICE,
    authority,
};

/// One path to measure.
struct PathDef {
    id: PathId,
    title: &'static str,
    /// HTTP/1.1 and HTTP/2 targets.
    h1: Target,
    h2: Target,
    /// The proxy processes on the path: (label, pid).
    proxies: Vec<(String, u32)>,
}

fn target(addr: std::net::SocketAddr, authority: Option<String>) -> Target {
    Target {
        addr,
        absolute_form: authority.is_some(),
        authority: authority.unwrap_or_else(|| addr.to_string()),
        path: "/".into(),
    }
}

/// Measures every selected path; starts and stops the reference proxies.
pub(super) async fn measure_all(
    cfg: &BenchConfig,
    pair: &MeshPair,
) -> Result<Vec<PathReport>, BenchError> {
    let upstream = pair.need("upstream", "listen")?;
    let upstream_pid = pair.pid("upstream");
    let client = pair.need(&format!("client-{CLUSTER_A}"), "outbound")?;
    let pid = |name: &str| {
        pair.pid(name)
            .ok_or_else(|| BenchError::NotReady(format!("{name} is not running")))
    };
    let mesh =
        |service: &str, cluster: Option<&str>| target(client, Some(authority(service, cluster)));
    let mut defs = Vec::new();
    if cfg.measures(PathId::Direct) {
        defs.push(PathDef {
            id: PathId::Direct,
            title: "direct (no proxy)",
            h1: target(upstream, None),
            h2: target(upstream, None),
            proxies: Vec::new(),
        });
    }
    let client_sidecar = (
        "client sidecar".to_string(),
        pid(&format!("client-{CLUSTER_A}"))?,
    );
    if cfg.measures(PathId::Sidecar) {
        defs.push(PathDef {
            id: PathId::Sidecar,
            title: "one sidecar hop",
            h1: mesh(PLAIN_SERVICE, None),
            h2: mesh(PLAIN_SERVICE, None),
            proxies: vec![client_sidecar.clone()],
        });
    }
    if cfg.measures(PathId::SidecarRoutes) {
        let routed = Target {
            path: ROUTED_PATH.into(),
            ..mesh(ROUTED_SERVICE, None)
        };
        defs.push(PathDef {
            id: PathId::SidecarRoutes,
            title: "one sidecar hop, 100 routes",
            h1: routed.clone(),
            h2: routed,
            proxies: vec![client_sidecar.clone()],
        });
    }
    if cfg.measures(PathId::SidecarPair) {
        defs.push(PathDef {
            id: PathId::SidecarPair,
            title: "sidecar pair (mTLS)",
            h1: mesh(ECHO_SERVICE, Some(CLUSTER_A)),
            h2: mesh(ECHO_SERVICE, Some(CLUSTER_A)),
            proxies: vec![
                client_sidecar.clone(),
                (
                    "endpoint sidecar".into(),
                    pid(&format!("sidecar-echo-{CLUSTER_A}"))?,
                ),
            ],
        });
    }
    if cfg.measures(PathId::CrossCluster) {
        defs.push(PathDef {
            id: PathId::CrossCluster,
            title: "cross-cluster (QUIC)",
            h1: mesh(ECHO_SERVICE, Some(CLUSTER_B)),
            h2: mesh(ECHO_SERVICE, Some(CLUSTER_B)),
            proxies: vec![
                client_sidecar.clone(),
                (
                    format!("gateway {CLUSTER_A}"),
                    pid(&format!("gateway-{CLUSTER_A}"))?,
                ),
                (
                    format!("gateway {CLUSTER_B}"),
                    pid(&format!("gateway-{CLUSTER_B}"))?,
                ),
                (
                    format!("endpoint sidecar {CLUSTER_B}"),
                    pid(&format!("sidecar-echo-{CLUSTER_B}"))?,
                ),
            ],
        });
    }
    // The reference proxies run alongside, idle while other paths are measured.
    let mut references = Vec::new();
    let mut started = Ok(());
    for (id, kind, title) in [
        (PathId::Nginx, ProxyKind::Nginx, "nginx"),
        (PathId::Haproxy, ProxyKind::Haproxy, "HAProxy"),
    ] {
        if !cfg.measures(id) {
            continue;
        }
        match ReferenceProxy::start(kind, &cfg.work_dir, upstream).await {
            Ok(proxy) => {
                if let Some(pid) = proxy.pid() {
                    defs.push(PathDef {
                        id,
                        title,
                        h1: target(proxy.h1, None),
                        h2: target(proxy.h2, None),
                        proxies: vec![(kind.name().to_string(), pid)],
                    });
                }
                references.push(proxy);
            }
            Err(e) => {
                started = Err(e);
                break;
            }
        }
    }
    let reports = match started {
        Ok(()) => measure_paths(cfg, &defs, upstream_pid).await,
        Err(e) => Err(e),
    };
    for mut proxy in references {
        proxy.stop().await;
    }
    reports
}

/// The tally of one (path, protocol, rate) over the rounds.
struct RunTally {
    protocol: Protocol,
    rate: f64,
    histogram: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl RunTally {
    fn new(protocol: Protocol, rate: f64) -> Self {
        Self {
            protocol,
            rate,
            histogram: new_histogram(),
            ok: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
        }
    }

    fn add(&mut self, r: &LoadResult) {
        let _ = self.histogram.add(&r.histogram);
        self.ok += r.ok;
        self.errors += r.errors;
        self.elapsed += r.elapsed;
        if self.first_error.is_none() {
            self.first_error = r.first_error.clone();
        }
    }

    fn report(&self) -> RateRun {
        let secs = self.elapsed.as_secs_f64();
        RateRun {
            protocol: self.protocol,
            target_rps: self.rate,
            achieved_rps: if secs > 0.0 {
                self.ok as f64 / secs
            } else {
                0.0
            },
            ok: self.ok,
            errors: self.errors,
            first_error: self.first_error.clone(),
            latency: LatencySummary::of(&self.histogram),
            added_us: None,
        }
    }
}

/// Fixed-rate runs in interleaved rounds (every path at one rate, then the next rate, then the
/// next round), so a burst of noise on this shared machine hits all paths alike; the rounds'
/// histograms are merged. Then each path's maximum throughput.
async fn measure_paths(
    cfg: &BenchConfig,
    defs: &[PathDef],
    upstream_pid: Option<u32>,
) -> Result<Vec<PathReport>, BenchError> {
    let keys: Vec<(Protocol, f64)> = cfg
        .args
        .rates
        .iter()
        .map(|r| (Protocol::Http1, *r))
        .chain(cfg.args.h2_rates.iter().map(|r| (Protocol::Http2, *r)))
        .collect();
    let mut idle = Vec::new();
    for def in defs {
        let samples: Vec<ProcSample> = def
            .proxies
            .iter()
            .map(|(_, pid)| procstat::sample(*pid))
            .collect::<Result<_, _>>()?;
        idle.push(samples);
    }
    let mut tallies: Vec<Vec<RunTally>> = defs
        .iter()
        .map(|_| keys.iter().map(|(p, r)| RunTally::new(*p, *r)).collect())
        .collect();
    // Per path and proxy: CPU seconds and peak RSS over the first key's runs.
    let mut usage: Vec<Vec<(f64, u64)>> = defs
        .iter()
        .map(|d| vec![(0.0, 0); d.proxies.len()])
        .collect();
    let rounds = cfg.args.rounds.max(1);
    for round in 0..rounds {
        for (k, (protocol, rate)) in keys.iter().enumerate() {
            for (d, def) in defs.iter().enumerate() {
                tracing::info!(path = def.id.id(), %protocol, rate, round, "measuring");
                let target = match protocol {
                    Protocol::Http1 => &def.h1,
                    Protocol::Http2 => &def.h2,
                };
                let s = spec(
                    cfg,
                    target,
                    *protocol,
                    Pace::Rate(*rate),
                    cfg.args.connections,
                    cfg.duration,
                );
                let watch = k == 0;
                let pids: Vec<u32> = if watch {
                    def.proxies.iter().map(|(_, p)| *p).collect()
                } else {
                    Vec::new()
                };
                let before: Vec<ProcSample> = pids
                    .iter()
                    .map(|p| procstat::sample(*p))
                    .collect::<Result<_, _>>()?;
                let watcher = RssWatcher::start(pids.clone());
                let result = run_load(&s).await?;
                let peaks = watcher.stop().await;
                check_ran(def, &format!("{protocol} at {rate} req/s"), &result)?;
                for (j, pid) in pids.iter().enumerate() {
                    let after = procstat::sample(*pid)?;
                    usage[d][j].0 += (after.cpu_seconds - before[j].cpu_seconds).max(0.0);
                    usage[d][j].1 = usage[d][j].1.max(peaks[j]).max(after.rss_bytes);
                }
                tallies[d][k].add(&result);
            }
        }
    }
    // Every request of the first key's runs, warm-ups included, was paid for in that CPU time.
    let requests = keys.first().map_or(0.0, |(_, rate)| {
        rate * (cfg.warmup + cfg.duration).as_secs_f64() * rounds as f64
    });
    let mut reports = Vec::new();
    for (d, def) in defs.iter().enumerate() {
        let max_throughput = if cfg.max_duration.is_zero() {
            None
        } else {
            Some(max_throughput(cfg, def, upstream_pid).await?)
        };
        let processes = def
            .proxies
            .iter()
            .enumerate()
            .map(|(j, (label, _))| ProcessReport {
                label: label.clone(),
                rss_idle_bytes: idle[d][j].rss_bytes,
                rss_load_bytes: usage[d][j].1,
                cpu_s_per_1000_requests: if requests > 0.0 {
                    usage[d][j].0 / requests * 1000.0
                } else {
                    0.0
                },
            })
            .collect();
        reports.push(PathReport {
            id: def.id.id().to_string(),
            title: def.title.to_string(),
            runs: tallies[d].iter().map(RunTally::report).collect(),
            max_throughput,
            processes,
        });
    }
    Ok(reports)
}

fn spec(
    cfg: &BenchConfig,
    target: &Target,
    protocol: Protocol,
    pace: Pace,
    connections: usize,
    duration: Duration,
) -> LoadSpec {
    LoadSpec {
        target: target.clone(),
        protocol,
        pace,
        connections,
        warmup: cfg.warmup,
        duration,
        body_bytes: cfg.args.body_bytes,
        spin: cfg.spin,
    }
}

fn check_ran(def: &PathDef, what: &str, r: &LoadResult) -> Result<(), BenchError> {
    if r.ok == 0 {
        return Err(BenchError::measure(
            format!("{} {what}", def.id.id()),
            r.first_error
                .clone()
                .unwrap_or_else(|| "no request succeeded".into()),
        ));
    }
    Ok(())
}

async fn max_throughput(
    cfg: &BenchConfig,
    def: &PathDef,
    upstream_pid: Option<u32>,
) -> Result<ThroughputRun, BenchError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all = format!("0-{}", cores.saturating_sub(1));
    let me = std::process::id();
    let pinned = cores >= 2;
    if pinned {
        // With no proxy (direct), the upstream is what is measured: it gets core 0.
        let upstream_core = if def.proxies.is_empty() { "0" } else { "1" };
        for (_, pid) in &def.proxies {
            procstat::pin(*pid, "0")?;
        }
        if let Some(pid) = upstream_pid {
            procstat::pin(pid, upstream_core)?;
        }
        procstat::pin(me, "1")?;
    }
    let s = spec(
        cfg,
        &def.h1,
        Protocol::Http1,
        Pace::ClosedLoop { in_flight: 1 },
        cfg.args.max_connections,
        cfg.max_duration,
    );
    let started = Instant::now();
    let result = run_load(&s).await;
    tracing::debug!(path = def.id.id(), took = ?started.elapsed(), "maximum throughput measured");
    if pinned {
        for (_, pid) in &def.proxies {
            let _ = procstat::pin(*pid, &all);
        }
        if let Some(pid) = upstream_pid {
            let _ = procstat::pin(pid, &all);
        }
        let _ = procstat::pin(me, &all);
    }
    let result = result?;
    check_ran(def, "maximum throughput", &result)?;
    let l = LatencySummary::of(&result.histogram);
    Ok(ThroughputRun {
        rps: result.achieved_rps(),
        errors: result.errors,
        p50_us: l.p50_us,
        p99_us: l.p99_us,
    })
}

/// Samples the RSS of some processes every 100 ms and keeps each one's peak.
struct RssWatcher {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl RssWatcher {
    fn start(pids: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut peaks = vec![0u64; pids.len()];
            while !flag.load(Ordering::Relaxed) {
                for (peak, pid) in peaks.iter_mut().zip(&pids) {
                    if let Ok(s) = procstat::sample(*pid) {
                        *peak = (*peak).max(s.rss_bytes);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peaks
        });
        Self { stop, task }
    }

    async fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}
