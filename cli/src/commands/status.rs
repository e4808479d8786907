//! `mesh status`: links with state and RTT, services per cluster with healthy endpoint counts,
//! breaker states and active failovers, as a table or as JSON.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use mesh_core::api::{ControllerStatus, PATH_STATUS};

use mesh_launcher::admin_client;
use mesh_launcher::cluster_set::read_manifest;

/// Arguments of `mesh status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Controller admin addresses to ask; by default those of the cluster-set `mesh up` runs in
    /// the state directory.
    #[arg(long = "admin")]
    pub admins: Vec<SocketAddr>,
    /// State directory of a running `mesh up`.
    #[arg(long, default_value = ".mesh")]
    pub state_dir: PathBuf,
    /// Print JSON (an array of controller statuses) instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Errors of `mesh status`.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No addresses given and no running cluster-set found.
    #[error(
        "no --admin given and no running cluster-set in {0} ({1}); start one with `mesh up` or pass --admin"
    )]
    NoClusterSet(PathBuf, String),
    /// A controller could not be asked.
    #[error(transparent)]
    Admin(#[from] admin_client::AdminError),
}

/// Collects the status of every controller.
pub async fn collect(args: &StatusArgs) -> Result<Vec<ControllerStatus>, StatusError> {
    let admins = if args.admins.is_empty() {
        let manifest = read_manifest(&args.state_dir)
            .map_err(|e| StatusError::NoClusterSet(args.state_dir.clone(), e.to_string()))?;
        manifest
            .clusters
            .iter()
            .filter_map(|c| c.controller_admin)
            .collect()
    } else {
        args.admins.clone()
    };
    let mut out = Vec::new();
    for admin in admins {
        out.push(admin_client::get_json(admin, PATH_STATUS).await?);
    }
    Ok(out)
}

fn ms(rtt: Option<f64>) -> String {
    rtt.map(|s| format!("{:.1}ms", s * 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// Renders statuses as tables for people.
pub fn render(statuses: &[ControllerStatus]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "LINKS");
    let _ = writeln!(
        out,
        "{:<14} {:<14} {:<10} {:<10} {:>9} {:>6}  CATALOG",
        "CLUSTER", "PEER", "PEER-REGION", "STATE", "RTT", "LOSS"
    );
    for s in statuses {
        if s.links.is_empty() {
            let _ = writeln!(out, "{:<14} {:<14}", s.cluster, "(no links)");
        }
        for l in &s.links {
            let catalog = l
                .catalog_version
                .map(|v| format!("v{v}"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "{:<14} {:<14} {:<10} {:<10} {:>9} {:>5.1}%  {}{}",
                s.cluster,
                l.cluster,
                l.region,
                l.state,
                ms(l.rtt_seconds),
                l.loss * 100.0,
                catalog,
                l.last_error
                    .as_deref()
                    .map(|e| format!("  ({e})"))
                    .unwrap_or_default()
            );
        }
        if !s.gateway_connected {
            let _ = writeln!(
                out,
                "{:<14} gateway has not reported recently: every link counts as down",
                s.cluster
            );
        }
    }
    let _ = writeln!(out, "\nSERVICES (as routed from each cluster)");
    let _ = writeln!(
        out,
        "{:<14} {:<16} {:<9} {:<44} {:<30} BREAKERS",
        "FROM", "SERVICE", "FAILOVER", "LOCALITY ORDER (health)", "ENDPOINTS healthy/total"
    );
    for s in statuses {
        for svc in &s.services {
            let order = svc
                .localities
                .iter()
                .map(|l| format!("{}({:.2})", l.cluster, l.health))
                .collect::<Vec<_>>()
                .join(" > ");
            let endpoints = svc
                .endpoints
                .iter()
                .map(|e| format!("{} {}/{}", e.cluster, e.healthy, e.total))
                .collect::<Vec<_>>()
                .join(", ");
            let breakers = svc
                .breakers
                .iter()
                .filter(|b| b.open > 0)
                .map(|b| format!("{} open {}/{}", b.cluster, b.open, b.reporters))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "{:<14} {:<16} {:<9} {:<44} {:<30} {}",
                s.cluster,
                svc.service.to_string(),
                if svc.failover_active { "ACTIVE" } else { "no" },
                if order.is_empty() {
                    "(no reachable locality)".to_string()
                } else {
                    order
                },
                endpoints,
                if breakers.is_empty() {
                    "all closed".to_string()
                } else {
                    breakers
                }
            );
        }
    }
    out
}

/// Runs `mesh status`.
pub async fn run(args: StatusArgs) -> Result<(), StatusError> {
    let statuses = collect(&args).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&statuses).unwrap_or_default()
        );
    } else {
        print!("{}", render(&statuses));
    }
    Ok(())
}
