//! `mesh-bench compare`: the whole end-to-end comparison in one run. It starts the mesh pair
//! and the reference proxies around one upstream, measures every path (see [`paths`]), then the
//! QUIC link and the control plane on fresh topologies, checks the targets and writes
//! the report. Every process it starts is stopped before it returns, also on failure.

mod paths;

use std::time::Instant;

use mesh_core::identity::ClusterCa;
use mesh_launcher::cluster_set::ComponentArgs;

use crate::args::{BenchArgs, BenchConfig, Part};
use crate::control_plane::{Propagation, summarise};
use crate::error::BenchError;
use crate::link::{LinkReport, LinkSetup, TunnelClient, bootstrap};
use crate::machine::Machine;
use crate::procstat;
use crate::report::{self, Conditions, ControlPlaneReport, PathReport, RunReport};
use crate::servers::relay::{RELAY_TRUST_DOMAIN, RelayTls};
use crate::topology::{
    CLUSTER_A, CLUSTER_B, ECHO_ACCOUNT, ECHO_SERVICE, Layout, MeshPair, NAMESPACE, SINK_SERVICE,
    authority,
};

/// Runs the comparison and writes the report into `--out`.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    let started = Instant::now();
    let cfg = args.validate()?;
    if !cfg.mesh_bin.exists() {
        return Err(BenchError::MissingMeshBinary(cfg.mesh_bin.clone()));
    }
    std::fs::create_dir_all(&cfg.work_dir).map_err(|e| BenchError::io(&cfg.work_dir, e))?;
    let profile = profile_of(&cfg);
    let machine = Machine::detect(&profile);
    tracing::info!(work_dir = %cfg.work_dir.display(), mesh = %cfg.mesh_bin.display(), "benchmark starting");

    let mut notes = vec![
        format!(
            "All processes share this machine's {} cores with the load generator; numbers compare paths within this run, not across machines.",
            machine.cores
        ),
        "The sidecars and gateways run with their default settings (tokio runtime with one worker per core); nginx runs one worker without a master, HAProxy one thread; both keep connections to the upstream alive.".into(),
        "Sidecar to plaintext upstream speaks HTTP/2 prior knowledge (the sidecar's pool); nginx and HAProxy speak HTTP/1.1 to the upstream.".into(),
    ];
    if profile != "release" {
        notes.push(format!(
            "The measured mesh binary is a {profile} build: its own code is not optimised, so its numbers are pessimistic; run benches/run.sh for a release build."
        ));
    }
    let mut paths = Vec::new();
    let mut link = None;
    if cfg.runs(Part::E2e) || cfg.runs(Part::Link) {
        let (p, l) = data_path(&cfg).await?;
        paths = p;
        link = l;
    }
    let control_plane = if cfg.runs(Part::ControlPlane) {
        Some(control_plane(&cfg).await?)
    } else {
        None
    };
    let dns = if cfg.runs(Part::Dns) {
        Some(crate::dns::run(&cfg).await?)
    } else {
        None
    };
    report::compute_added(&mut paths);
    let mut run = RunReport {
        machine,
        conditions: Conditions {
            rates: cfg.args.rates.clone(),
            h2_rates: cfg.args.h2_rates.clone(),
            connections: cfg.args.connections,
            warmup_s: cfg.warmup.as_secs_f64(),
            duration_s: cfg.duration.as_secs_f64(),
            rounds: cfg.args.rounds.max(1),
            body_bytes: cfg.args.body_bytes,
            max_connections: cfg.args.max_connections,
            max_duration_s: cfg.max_duration.as_secs_f64(),
            pinning: pinning_note(),
            notes,
        },
        paths,
        link,
        control_plane,
        dns,
        targets: Vec::new(),
        wall_s: 0.0,
    };
    run.targets = report::check_targets(&run);
    run.wall_s = started.elapsed().as_secs_f64();
    report::write(&run, &cfg.args.out)?;
    println!("{}", report::markdown(&run));
    println!("report written to {}", cfg.args.out.display());
    if !cfg.args.keep_work_dir && cfg.args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&cfg.work_dir);
    }
    Ok(())
}

/// `release` or `debug`, from where the mesh binary lives (`target/<profile>/mesh`).
fn profile_of(cfg: &BenchConfig) -> String {
    cfg.mesh_bin
        .parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn pinning_note() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores >= 2 {
        "every proxy process of the path pinned to core 0 with taskset, the load generator and the upstream to core 1".into()
    } else {
        "not pinned: this machine has one core".into()
    }
}

/// The mesh pair for the data-path parts: paths, then the link, then everything stopped.
async fn data_path(cfg: &BenchConfig) -> Result<(Vec<PathReport>, Option<LinkReport>), BenchError> {
    let layout = Layout {
        synthetic_endpoints: 0,
        sink: cfg.runs(Part::Link),
        endpoint_b: true,
        client_a: true,
        client_b: false,
    };
    let mut pair = MeshPair::start(
        &cfg.work_dir.join("mesh"),
        &cfg.mesh_bin,
        &cfg.bench_bin,
        &layout,
    )
    .await?;
    let result = async {
        let client = pair.need(&format!("client-{CLUSTER_A}"), "outbound")?;
        pair.wait_routes(
            client,
            &[
                authority(crate::topology::PLAIN_SERVICE, None),
                authority(crate::topology::ROUTED_SERVICE, None),
                authority(ECHO_SERVICE, Some(CLUSTER_A)),
                authority(ECHO_SERVICE, Some(CLUSTER_B)),
            ],
        )
        .await?;
        let paths = if cfg.runs(Part::E2e) {
            paths::measure_all(cfg, &pair).await?
        } else {
            Vec::new()
        };
        let link = if cfg.runs(Part::Link) {
            Some(link(cfg, &mut pair).await?)
        } else {
            None
        };
        Ok::<_, BenchError>((paths, link))
    }
    .await;
    if result.is_err() {
        tracing::error!(logs = %cfg.work_dir.join("mesh").join("logs").display(), "the data-path run failed; process logs are kept there");
    }
    pair.stop().await;
    result
}

async fn link(cfg: &BenchConfig, pair: &mut MeshPair) -> Result<LinkReport, BenchError> {
    tracing::info!("measuring the QUIC link against TCP+TLS");
    let sink = pair.need("sink", "listen")?;
    let ca_dir = cfg.work_dir.join("relay-ca");
    ClusterCa::generate(RELAY_TRUST_DOMAIN)
        .and_then(|ca| ca.write_to(&ca_dir))
        .map_err(|e| BenchError::Tls(e.to_string()))?;
    let ca = ca_dir.display().to_string();
    let relay = |role: &str, forward: std::net::SocketAddr| {
        let words = [
            "tls-relay",
            "--role",
            role,
            "--listen",
            "127.0.0.1:0",
            "--forward",
        ];
        let mut argv: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        argv.extend([forward.to_string(), "--ca-dir".into(), ca.clone()]);
        ComponentArgs::Other(argv)
    };
    pair.spawn(&cfg.bench_bin, "relay-egress", relay("egress", sink))
        .await?;
    let egress = pair.need("relay-egress", "listen")?;
    pair.spawn(&cfg.bench_bin, "relay-ingress", relay("ingress", egress))
        .await?;
    let ingress = pair.need("relay-ingress", "listen")?;
    let controller = pair.need(&format!("controller-{CLUSTER_A}"), "control")?;
    let (_, tls) = bootstrap(
        controller,
        CLUSTER_A,
        &pair.state_dir(CLUSTER_A),
        NAMESPACE,
        "loadgen",
    )
    .await?;
    let gateway = pair.need(&format!("gateway-{CLUSTER_A}"), "tunnel")?;
    let setup = LinkSetup {
        mesh: TunnelClient::new(tls, gateway, CLUSTER_B, SINK_SERVICE, sink),
        relay_tls: RelayTls::from_ca_dir(&ca_dir, "client")?,
        relay_ingress: ingress,
        payload_bytes: cfg.args.link_mib.max(1) * 1024 * 1024,
        setup_samples: cfg.args.link_setup_samples.max(1),
    };
    crate::link::measure(&setup).await
}

async fn control_plane(cfg: &BenchConfig) -> Result<ControlPlaneReport, BenchError> {
    let mut sizes = Vec::new();
    for &endpoints in &cfg.args.cp_sizes {
        tracing::info!(endpoints, "measuring control-plane propagation");
        let layout = Layout {
            // bench-a's echo sidecar is the last exported endpoint.
            synthetic_endpoints: endpoints.saturating_sub(1),
            sink: false,
            endpoint_b: false,
            client_a: false,
            client_b: true,
        };
        let dir = cfg.work_dir.join(format!("control-plane-{endpoints}"));
        let mut pair = MeshPair::start(&dir, &cfg.mesh_bin, &cfg.bench_bin, &layout).await?;
        let result = async {
            let remote_proxy = pair.need(&format!("client-{CLUSTER_B}"), "outbound")?;
            pair.wait_routes(remote_proxy, &[authority(ECHO_SERVICE, Some(CLUSTER_A))])
                .await?;
            let controller = pair.need(&format!("controller-{CLUSTER_A}"), "control")?;
            let (registrar, _) = bootstrap(
                controller,
                CLUSTER_A,
                &pair.state_dir(CLUSTER_A),
                NAMESPACE,
                ECHO_ACCOUNT,
            )
            .await?;
            let propagation = Propagation {
                registrar,
                endpoint: pair.need(&format!("sidecar-echo-{CLUSTER_A}"), "inbound")?,
                remote_proxy,
            };
            let samples = propagation.run(cfg.args.cp_trials).await?;
            let rss = |name: &str| {
                pair.pid(name)
                    .and_then(|pid| procstat::sample(pid).ok())
                    .map_or(0, |s| s.rss_bytes)
            };
            Ok::<_, BenchError>(summarise(
                endpoints,
                &samples,
                rss(&format!("controller-{CLUSTER_A}")),
                rss(&format!("controller-{CLUSTER_B}")),
            ))
        }
        .await;
        pair.stop().await;
        sizes.push(result?);
    }
    Ok(ControlPlaneReport { sizes })
}
