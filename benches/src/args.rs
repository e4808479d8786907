//! The command line of `mesh-bench compare`, and its check into a [`BenchConfig`].

use std::path::PathBuf;
use std::time::Duration;

use crate::error::BenchError;

/// A path of the end-to-end comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PathId {
    /// Client straight to the upstream: the floor.
    Direct,
    /// Client -> client sidecar -> plaintext upstream.
    Sidecar,
    /// The same hop to a service whose `HTTPRoute` has 100 rules (the policy stack's cost).
    SidecarRoutes,
    /// Client -> client sidecar -> mTLS HTTP/2 -> endpoint sidecar -> upstream.
    SidecarPair,
    /// Client -> sidecar -> gateway -> QUIC -> gateway -> sidecar -> upstream.
    CrossCluster,
    /// Client -> nginx -> upstream.
    Nginx,
    /// Client -> HAProxy -> upstream.
    Haproxy,
}

impl PathId {
    /// The id used in the report.
    pub fn id(self) -> &'static str {
        match self {
            PathId::Direct => "direct",
            PathId::Sidecar => "sidecar",
            PathId::SidecarRoutes => "sidecar-routes",
            PathId::SidecarPair => "sidecar-pair",
            PathId::CrossCluster => "cross-cluster",
            PathId::Nginx => "nginx",
            PathId::Haproxy => "haproxy",
        }
    }
}

/// A part of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Latency, throughput, CPU and memory of every path.
    E2e,
    /// QUIC gateway pair against a TCP+TLS tunnel.
    Link,
    /// Propagation of a registration change across clusters.
    ControlPlane,
    /// DNS throughput with dnsperf, the mesh's DNS against CoreDNS (not run by default: it
    /// needs dnsperf and a CoreDNS build; `benches/run.sh` adds it).
    Dns,
}

/// `mesh-bench compare`: runs the end-to-end comparison and writes the report.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The `mesh` binary to measure. Default: `mesh` beside this program (target/<profile>/).
    #[arg(long)]
    pub mesh_bin: Option<PathBuf>,
    /// Directory for `results.json`, `results.md` and `latency.svg`.
    #[arg(long, default_value = "benches/results")]
    pub out: PathBuf,
    /// Scratch directory for CA material, configurations and logs. Default: a new directory
    /// under the system's temporary directory, removed after a successful run.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the scratch directory (logs of every process) after a successful run.
    #[arg(long)]
    pub keep_work_dir: bool,
    /// Parts to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "e2e,link,control-plane"
    )]
    pub parts: Vec<Part>,
    /// Paths to measure (the direct path is the baseline of "added latency").
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "direct,sidecar,sidecar-routes,sidecar-pair,cross-cluster,nginx,haproxy"
    )]
    pub paths: Vec<PathId>,
    /// Fixed rates for HTTP/1.1 runs, requests per second; the first one also gives CPU and
    /// memory under load.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    pub rates: Vec<f64>,
    /// Fixed rates for HTTP/2 (prior knowledge) runs; empty to skip HTTP/2.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub h2_rates: Vec<f64>,
    /// Client connections per fixed-rate run.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Unmeasured warm-up at the start of each run, in ms.
    #[arg(long, default_value_t = 1000)]
    pub warmup_ms: u64,
    /// Measured time of each fixed-rate run, in ms.
    #[arg(long, default_value_t = 5000)]
    pub duration_ms: u64,
    /// Rounds of fixed-rate runs: each round runs every path at every rate in turn, and the
    /// rounds' histograms are merged, so noise on a shared machine hits all paths alike.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Request body in bytes (the upstream echoes it back); 0 sends GETs.
    #[arg(long, default_value_t = 1024)]
    pub body_bytes: usize,
    /// Closed-loop HTTP/1.1 connections of the maximum-throughput runs.
    #[arg(long, default_value_t = 32)]
    pub max_connections: usize,
    /// Measured time of each maximum-throughput run (proxies pinned to core 0), in ms; 0 skips.
    #[arg(long, default_value_t = 5000)]
    pub max_duration_ms: u64,
    /// The load dispatcher spins this many microseconds before each send instead of sleeping
    /// (OS sleeps overshoot; the overshoot would count as latency).
    #[arg(long, default_value_t = 60)]
    pub spin_us: u64,
    /// Payload of each QUIC / TCP+TLS throughput run, in MiB.
    #[arg(long, default_value_t = 64)]
    pub link_mib: u64,
    /// Tunnel set-up latency samples per kind.
    #[arg(long, default_value_t = 30)]
    pub link_setup_samples: usize,
    /// Catalog sizes (endpoints) of the control-plane runs.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000")]
    pub cp_sizes: Vec<usize>,
    /// Propagation trials per catalog size.
    #[arg(long, default_value_t = 5)]
    pub cp_trials: usize,
    /// DNS part: services in the mesh's catalog, each one name in the zone and the query file.
    #[arg(long, default_value_t = 100)]
    pub dns_services: usize,
    /// DNS part: measured time of each dnsperf run, in ms.
    #[arg(long, default_value_t = 10_000)]
    pub dns_duration_ms: u64,
    /// DNS part: queries in flight at most (dnsperf `-q`).
    #[arg(long, default_value_t = 100)]
    pub dns_outstanding: usize,
    /// DNS part: the fixed rate of the latency runs, queries per second (dnsperf `-Q`).
    #[arg(long, default_value_t = 10_000)]
    pub dns_rate: u64,
    /// DNS part: the CoreDNS binary. Default: `target/k8s/bin/coredns` (built by
    /// `tools/k8s-testenv/coredns/build.sh`).
    #[arg(long)]
    pub coredns_bin: Option<PathBuf>,
}

/// The checked configuration of a run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The flags as given.
    pub args: BenchArgs,
    /// The `mesh` binary.
    pub mesh_bin: PathBuf,
    /// This program (it runs the helper servers).
    pub bench_bin: PathBuf,
    /// Scratch directory.
    pub work_dir: PathBuf,
    /// Warm-up per run.
    pub warmup: Duration,
    /// Measured time per run.
    pub duration: Duration,
    /// Maximum-throughput run time (zero: skipped).
    pub max_duration: Duration,
    /// Dispatcher spin.
    pub spin: Duration,
}

impl BenchConfig {
    /// Whether `part` runs.
    pub fn runs(&self, part: Part) -> bool {
        self.args.parts.contains(&part)
    }

    /// Whether `path` is measured.
    pub fn measures(&self, path: PathId) -> bool {
        self.args.paths.contains(&path)
    }
}

impl BenchArgs {
    /// Checks the flags together and resolves the binaries and directories.
    pub fn validate(self) -> Result<BenchConfig, BenchError> {
        let invalid = |m: &str| Err(BenchError::InvalidArgs(m.to_string()));
        if self
            .rates
            .iter()
            .chain(&self.h2_rates)
            .any(|r| !(r.is_finite() && *r > 0.0))
        {
            return invalid("--rates and --h2-rates must be positive numbers");
        }
        if self.parts.contains(&Part::E2e) && self.rates.is_empty() {
            return invalid("--rates needs at least one rate");
        }
        if self.connections == 0 || self.max_connections == 0 {
            return invalid("--connections and --max-connections must be at least 1");
        }
        if self.duration_ms == 0 {
            return invalid("--duration-ms must be above 0");
        }
        if self.cp_sizes.contains(&0) || self.cp_trials == 0 {
            return invalid("--cp-sizes must be at least 1 and --cp-trials at least 1");
        }
        if self.dns_services == 0
            || self.dns_duration_ms == 0
            || self.dns_outstanding == 0
            || self.dns_rate == 0
        {
            return invalid(
                "--dns-services, --dns-duration-ms, --dns-outstanding and --dns-rate must be above 0",
            );
        }
        let bench_bin = std::env::current_exe().map_err(|e| BenchError::io("current_exe", e))?;
        let mesh_bin = match &self.mesh_bin {
            Some(p) => p.clone(),
            None => bench_bin.with_file_name("mesh"),
        };
        let work_dir = match &self.work_dir {
            Some(p) => p.clone(),
            None => std::env::temp_dir().join(format!("mesh-bench-{}", std::process::id())),
        };
        Ok(BenchConfig {
            warmup: Duration::from_millis(self.warmup_ms),
            duration: Duration::from_millis(self.duration_ms),
            max_duration: Duration::from_millis(self.max_duration_ms),
            spin: Duration::from_micros(self.spin_us),
            mesh_bin,
            bench_bin,
            work_dir,
            args: self,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[test]
    fn defaults_run_everything_and_explain_themselves() {
        let cfg = Cli::parse_from(["mesh-bench"]).args.validate().unwrap();
        assert_eq!(cfg.args.rates, [1000.0, 5000.0]);
        assert_eq!(cfg.args.paths.len(), 7);
        assert!(cfg.runs(Part::ControlPlane) && cfg.runs(Part::Link) && cfg.runs(Part::E2e));
        // The DNS part needs dnsperf and CoreDNS: asked for by name (benches/run.sh does).
        assert!(!cfg.runs(Part::Dns));
        assert_eq!(cfg.mesh_bin.file_name().unwrap(), "mesh");
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for flag in [
            "--rates",
            "--connections",
            "--body-bytes",
            "--mesh-bin",
            "--cp-sizes",
        ] {
            assert!(help.contains(flag), "{flag}");
        }
    }

    #[test]
    fn nonsense_is_refused() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["mesh-bench"];
            argv.extend_from_slice(extra);
            Cli::parse_from(argv).args.validate()
        };
        assert!(parse(&["--rates", "0"]).is_err());
        assert!(parse(&["--connections", "0"]).is_err());
        assert!(parse(&["--cp-trials", "0"]).is_err());
        assert!(parse(&["--dns-services", "0"]).is_err());
        assert!(parse(&["--dns-rate", "0"]).is_err());
        let dns = parse(&["--parts", "dns"]).unwrap();
        assert!(dns.runs(Part::Dns) && !dns.runs(Part::E2e));
        let only = parse(&["--parts", "link", "--paths", "direct,haproxy"]).unwrap();
        assert!(!only.runs(Part::E2e));
        assert!(only.measures(PathId::Haproxy) && !only.measures(PathId::Nginx));
    }
}
