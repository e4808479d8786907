//! `mesh`: a multi-cluster gateway and failover mesh. One binary for every component.

use clap::{Parser, Subcommand};
use mesh_cli::commands::{ca, check, link, status, up};
use mesh_cli::demo_app;

/// A multi-cluster gateway and failover mesh: sidecars route locally, QUIC gateways join
/// clusters, controllers fail traffic over between regions and back.
///
/// Start here: `mesh up` runs three linked clusters on this machine and prints requests to try.
#[derive(Debug, Parser)]
#[command(name = "mesh", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: boxing the controller's larger flags would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole cluster-set locally (controller, gateway, echo replicas behind sidecars and a
    /// client sidecar per cluster), linked and ready; Ctrl-C stops it.
    Up(up::UpArgs),
    /// Link two clusters, by their controllers' admin addresses (local mode) or by their
    /// kubeconfigs or contexts (Kubernetes): trust bundles and gateway addresses are exchanged
    /// both ways; idempotent.
    Link(link::LinkArgs),
    /// Undo `mesh link`: revoke trust and withdraw imported endpoints on both sides.
    Unlink(link::LinkArgs),
    /// Show links (state, RTT), services per cluster with healthy endpoints, breakers and
    /// active failovers.
    Status(status::StatusArgs),
    /// Check a cluster-set (Kubernetes: `--kubeconfig` per cluster; local: `mesh up`'s) and say
    /// what is wrong and what to do.
    Check(check::CheckArgs),
    /// Create a cluster's root CA and join token in the state directory; `mesh ca rotate`
    /// rotates the root across the linked clusters.
    Ca(ca::CaCommand),
    /// Run a cluster's federation controller (registry, CA, federation, failover, discovery).
    Controller(mesh_federation::ControllerArgs),
    /// Run a cluster's east-west gateway (QUIC links to other clusters, tunnels).
    Gateway(mesh_gateway::GatewayArgs),
    /// Run a sidecar proxy next to one workload (outbound proxy, mTLS inbound).
    Sidecar(mesh_sidecar::SidecarArgs),
    /// Set up transparent capture in this network namespace (iptables rules that send the
    /// workload's TCP to its sidecar); `--dry-run` prints them, `--cleanup` removes them.
    Init(mesh_sidecar::capture::InitArgs),
    /// Run the demo echo app (answers with its cluster and replica, echoes bodies).
    DemoApp(demo_app::DemoAppArgs),
    /// Prove failover: run chaos scenarios (faults on a timeline under load, SLO checks, report).
    Chaos(mesh_chaos::ChaosArgs),
}

fn component_of(cmd: &Command) -> Option<(&'static str, &str)> {
    match cmd {
        Command::Controller(a) => Some(("controller", &a.cluster)),
        Command::Gateway(a) => Some(("gateway", &a.member.cluster)),
        Command::Sidecar(a) => Some(("sidecar", &a.member.cluster)),
        Command::DemoApp(a) => Some(("demo-app", &a.cluster)),
        _ => None,
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match component_of(&cli.command) {
        Some((component, cluster)) => mesh_core::telemetry::init_tracing(component, cluster),
        None => {
            // Operator commands log only warnings unless asked, so their output stays readable.
            if std::env::var_os("RUST_LOG").is_none() {
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
                    .with_writer(std::io::stderr)
                    .try_init();
            } else {
                mesh_core::telemetry::init_tracing("mesh", "-");
            }
        }
    }
    // `mesh up` spawns children with a parent-death signal, which fires when the spawning
    // *thread* exits: a current-thread runtime keeps every spawn on the main thread.
    let runtime = match &cli.command {
        Command::Up(_)
        | Command::Link(_)
        | Command::Unlink(_)
        | Command::Status(_)
        | Command::Check(_)
        | Command::Init(_)
        | Command::Ca(_)
        | Command::Chaos(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mesh: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: Result<(), String> = runtime.block_on(async move {
        match cli.command {
            Command::Up(a) => up::run(a).await.map_err(|e| e.to_string()),
            Command::Link(a) => link::run_link(a).await,
            Command::Unlink(a) => link::run_unlink(a).await,
            Command::Status(a) => status::run(a).await.map_err(|e| e.to_string()),
            Command::Check(a) => check::run(a).await,
            Command::Ca(a) => ca::run(a).await,
            Command::Controller(a) => mesh_federation::run(a).await.map_err(|e| e.to_string()),
            Command::Gateway(a) => mesh_gateway::run(a).await.map_err(|e| e.to_string()),
            Command::Sidecar(a) => mesh_sidecar::run(a).await.map_err(|e| e.to_string()),
            Command::Init(a) => mesh_sidecar::capture::run(&a).map_err(|e| e.to_string()),
            Command::DemoApp(a) => demo_app::run(a).await.map_err(|e| e.to_string()),
            Command::Chaos(a) => mesh_chaos::run(a).await.map_err(|e| e.to_string()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
