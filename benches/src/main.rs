//! `mesh-bench`: the end-to-end benchmark harness of the mesh. `mesh-bench compare` runs the
//! whole comparison and writes the report; the other subcommands are the helper servers it
//! starts as separate processes.

use clap::{Parser, Subcommand};
use mesh_benches::servers::{relay, sink, upstream};
use mesh_benches::{BenchArgs, BenchError};

/// The end-to-end benchmark of the mesh: every hop against direct, nginx and HAProxy.
#[derive(Debug, Parser)]
#[command(name = "mesh-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole comparison (paths, QUIC link, control plane, DNS when asked) and write the
    /// report.
    Compare(Box<BenchArgs>),
    /// The upstream server every path ends at (started by `compare`).
    Upstream(upstream::UpstreamArgs),
    /// The TCP sink at the end of tunnels (started by `compare`).
    TcpSink(sink::SinkArgs),
    /// One relay of the TCP+TLS tunnel baseline (started by `compare`).
    TlsRelay(relay::RelayArgs),
    /// Render results.md and latency.svg again from a results.json (targets re-checked).
    Report(mesh_benches::report::RenderArgs),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let component = match &cli.command {
        Command::Compare(_) => "bench",
        Command::Upstream(_) => "bench-upstream",
        Command::TcpSink(_) => "bench-sink",
        Command::TlsRelay(_) => "bench-relay",
        Command::Report(_) => "bench-report",
    };
    mesh_core::telemetry::init_tracing(component, "bench");
    let result: Result<(), BenchError> = match cli.command {
        Command::Compare(args) => mesh_benches::run(*args).await,
        Command::Upstream(args) => upstream::run(args).await,
        Command::TcpSink(args) => sink::run(args).await,
        Command::TlsRelay(args) => relay::run(args).await,
        Command::Report(args) => mesh_benches::report::render(args),
    };
    if let Err(e) = result {
        eprintln!("mesh-bench: {e}");
        std::process::exit(1);
    }
}
