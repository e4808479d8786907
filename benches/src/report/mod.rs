//! The report of one run: everything measured, as JSON (`results.json`), a Markdown table
//! (`results.md`) and a picture of the latency distributions (`latency.svg`), plus the check of
//! each target of the issue against the numbers.

mod markdown;
mod svg;
mod targets;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use markdown::markdown;
pub use svg::latency_svg;
pub use targets::{TargetCheck, check_targets};

use crate::control_plane::PropagationRun;
use crate::dns::DnsReport;
use crate::error::BenchError;
use crate::latency::LatencySummary;
use crate::link::LinkReport;
use crate::load::Protocol;
use crate::machine::Machine;

/// The settings of a run, recorded with its numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conditions {
    /// Fixed rates measured with HTTP/1.1, requests per second.
    pub rates: Vec<f64>,
    /// Fixed rates measured with HTTP/2.
    pub h2_rates: Vec<f64>,
    /// Client connections per fixed-rate run.
    pub connections: usize,
    /// Unmeasured warm-up per run, seconds.
    pub warmup_s: f64,
    /// Measured time per run, seconds.
    pub duration_s: f64,
    /// Interleaved rounds of fixed-rate runs, merged.
    pub rounds: usize,
    /// Request body bytes (echoed back by the upstream; 0 means GET).
    pub body_bytes: usize,
    /// Closed-loop connections of the maximum-throughput runs.
    pub max_connections: usize,
    /// Measured time of the maximum-throughput runs, seconds.
    pub max_duration_s: f64,
    /// How processes were placed on cores for the maximum-throughput runs.
    pub pinning: String,
    /// Anything else a reader must know.
    pub notes: Vec<String>,
}

/// One fixed-rate run of one path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateRun {
    /// HTTP version.
    pub protocol: Protocol,
    /// Requests per second asked for.
    pub target_rps: f64,
    /// Successful requests per second achieved.
    pub achieved_rps: f64,
    /// Successful requests measured.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Why the first failure failed.
    pub first_error: Option<String>,
    /// Latency from intended send time.
    pub latency: LatencySummary,
    /// p50, p90, p99, p99.9 added over the direct path in the same run (same protocol and
    /// rate), µs.
    pub added_us: Option<[f64; 4]>,
}

/// A maximum-throughput run (closed loop, proxies pinned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThroughputRun {
    /// Successful requests per second.
    pub rps: f64,
    /// Failed requests.
    pub errors: u64,
    /// Median latency under saturation, µs.
    pub p50_us: f64,
    /// p99 latency under saturation, µs.
    pub p99_us: f64,
}

/// CPU and memory of one proxy process of a path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    /// Which process (`client sidecar`, `gateway bench-a`, `nginx`, ...).
    pub label: String,
    /// RSS before the path's first run, bytes.
    pub rss_idle_bytes: u64,
    /// Largest RSS seen during the first fixed-rate run, bytes.
    pub rss_load_bytes: u64,
    /// CPU seconds per 1,000 requests during the first fixed-rate run (equal to vCPU per
    /// 1,000 requests/s).
    pub cpu_s_per_1000_requests: f64,
}

/// Everything measured on one path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathReport {
    /// Short id: `direct`, `sidecar`, `sidecar-pair`, `cross-cluster`, `nginx`, `haproxy`.
    pub id: String,
    /// What the path is.
    pub title: String,
    /// Fixed-rate runs.
    pub runs: Vec<RateRun>,
    /// Maximum throughput, when measured.
    pub max_throughput: Option<ThroughputRun>,
    /// The path's proxy processes.
    pub processes: Vec<ProcessReport>,
}

impl PathReport {
    /// The run at `rate` with `protocol`, if measured.
    pub fn run(&self, protocol: Protocol, rate: f64) -> Option<&RateRun> {
        self.runs
            .iter()
            .find(|r| r.protocol == protocol && (r.target_rps - rate).abs() < 1e-9)
    }
}

/// Control-plane measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlPlaneReport {
    /// Per catalog size.
    pub sizes: Vec<PropagationRun>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Machine and versions.
    pub machine: Machine,
    /// Settings.
    pub conditions: Conditions,
    /// Every path measured.
    pub paths: Vec<PathReport>,
    /// QUIC link against TCP+TLS.
    pub link: Option<LinkReport>,
    /// Control plane.
    pub control_plane: Option<ControlPlaneReport>,
    /// DNS throughput (dnsperf), mesh and CoreDNS.
    #[serde(default)]
    pub dns: Option<DnsReport>,
    /// The targets against these numbers.
    pub targets: Vec<TargetCheck>,
    /// Wall time of the whole run, seconds.
    pub wall_s: f64,
}

impl RunReport {
    /// The path with `id`.
    pub fn path(&self, id: &str) -> Option<&PathReport> {
        self.paths.iter().find(|p| p.id == id)
    }
}

/// Fills in each run's latency added over the direct path of the same protocol and rate.
pub fn compute_added(paths: &mut [PathReport]) {
    let direct: Vec<RateRun> = paths
        .iter()
        .find(|p| p.id == "direct")
        .map(|p| p.runs.clone())
        .unwrap_or_default();
    for path in paths.iter_mut().filter(|p| p.id != "direct") {
        for run in &mut path.runs {
            run.added_us = direct
                .iter()
                .find(|d| {
                    d.protocol == run.protocol && (d.target_rps - run.target_rps).abs() < 1e-9
                })
                .map(|d| {
                    [
                        run.latency.p50_us - d.latency.p50_us,
                        run.latency.p90_us - d.latency.p90_us,
                        run.latency.p99_us - d.latency.p99_us,
                        run.latency.p999_us - d.latency.p999_us,
                    ]
                });
        }
    }
}

/// Writes `results.json`, `results.md` and `latency.svg` into `dir`.
pub fn write(report: &RunReport, dir: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| BenchError::measure("encoding the report", e))?;
    let files = [
        ("results.json", json + "\n"),
        ("results.md", markdown(report)),
        ("latency.svg", latency_svg(report)),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| BenchError::io(&path, e))?;
    }
    Ok(())
}

/// `mesh-bench report`: renders a report again from its JSON.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// The `results.json` of a run.
    #[arg(long, default_value = "benches/results/results.json")]
    pub from: std::path::PathBuf,
    /// Directory for the rendered files (default: beside `--from`).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

/// Reads a run's JSON, checks the targets again and writes all three files.
pub fn render(args: RenderArgs) -> Result<(), BenchError> {
    let bytes = std::fs::read(&args.from).map_err(|e| BenchError::io(&args.from, e))?;
    let mut report: RunReport = serde_json::from_slice(&bytes)
        .map_err(|e| BenchError::measure(args.from.display().to_string(), e))?;
    report.targets = check_targets(&report);
    let out = match args.out {
        Some(dir) => dir,
        None => args
            .from
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    write(&report, &out)
}

#[cfg(test)]
pub(crate) mod tests;
