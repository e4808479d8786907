//! `mesh status`: links with state and RTT, services per cluster with healthy endpoint counts,
//! breaker states and active failovers, as a table or as JSON.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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

/// The controllers' admin addresses: `admins` when given, else those of the cluster-set
/// `mesh up` runs in `state_dir`.
pub fn controller_admins(
    admins: &[SocketAddr],
    state_dir: &Path,
) -> Result<Vec<SocketAddr>, StatusError> {
    if !admins.is_empty() {
        return Ok(admins.to_vec());
    }
    let manifest = read_manifest(state_dir)
        .map_err(|e| StatusError::NoClusterSet(state_dir.to_path_buf(), e.to_string()))?;
    Ok(manifest
        .clusters
        .iter()
        .filter_map(|c| c.controller_admin)
        .collect())
}

/// Collects the status of every controller.
pub async fn collect(args: &StatusArgs) -> Result<Vec<ControllerStatus>, StatusError> {
    let admins = controller_admins(&args.admins, &args.state_dir)?;
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

/// Rows of cells printed with each column as wide as its widest cell.
struct Table(Vec<Vec<String>>);

impl Table {
    fn new(header: &[&str]) -> Self {
        Self(vec![header.iter().map(|h| h.to_string()).collect()])
    }

    fn row(&mut self, cells: Vec<String>) {
        self.0.push(cells);
    }

    fn render(&self, out: &mut String) {
        let columns = self.0.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.0
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.0 {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
    }
}

/// Renders statuses as tables for people.
pub fn render(statuses: &[ControllerStatus]) -> String {
    let mut out = String::from("LINKS\n");
    let mut links = Table::new(&[
        "CLUSTER",
        "PEER",
        "PEER REGION",
        "STATE",
        "RTT",
        "LOSS",
        "CATALOG",
        "LAST ERROR",
    ]);
    for s in statuses {
        if s.links.is_empty() {
            links.row(vec![s.cluster.clone(), "(no links)".into()]);
        }
        for l in &s.links {
            links.row(vec![
                s.cluster.clone(),
                l.cluster.clone(),
                l.region.clone(),
                l.state.clone(),
                ms(l.rtt_seconds),
                format!("{:.1}%", l.loss * 100.0),
                l.catalog_version
                    .map(|v| format!("v{v}"))
                    .unwrap_or_else(|| "-".into()),
                l.last_error.clone().unwrap_or_default(),
            ]);
        }
    }
    links.render(&mut out);
    for s in statuses.iter().filter(|s| !s.gateway_connected) {
        let _ = writeln!(
            out,
            "{}: the gateway has not reported recently, so every link counts as down",
            s.cluster
        );
    }
    out.push_str("\nSERVICES (as routed from each cluster)\n");
    let mut services = Table::new(&[
        "FROM",
        "SERVICE",
        "FAILOVER",
        "LOCALITY ORDER (health)",
        "ENDPOINTS healthy/total",
        "BREAKERS",
    ]);
    for s in statuses {
        for svc in &s.services {
            let order: Vec<String> = svc
                .localities
                .iter()
                .map(|l| format!("{}({:.2})", l.cluster, l.health))
                .collect();
            let endpoints: Vec<String> = svc
                .endpoints
                .iter()
                .map(|e| format!("{} {}/{}", e.cluster, e.healthy, e.total))
                .collect();
            let breakers: Vec<String> = svc
                .breakers
                .iter()
                .filter(|b| b.open > 0)
                .map(|b| format!("{} open {}/{}", b.cluster, b.open, b.reporters))
                .collect();
            services.row(vec![
                s.cluster.clone(),
                svc.service.to_string(),
                if svc.failover_active { "ACTIVE" } else { "no" }.into(),
                if order.is_empty() {
                    "(no reachable locality)".into()
                } else {
                    order.join(" > ")
                },
                endpoints.join(", "),
                if breakers.is_empty() {
                    "all closed".into()
                } else {
                    breakers.join(", ")
                },
            ]);
        }
    }
    services.render(&mut out);
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

#[cfg(test)]
mod tests {
    use mesh_core::api::{BreakerSummary, EndpointCount, LinkStatusView, ServiceStatusView};
    use mesh_core::locality::LocalityEntry;

    use super::*;

    #[test]
    fn tables_show_links_failovers_and_open_breakers() {
        let status = ControllerStatus {
            cluster: "us-east".into(),
            region: "us-east".into(),
            version: 7,
            gateway_connected: false,
            links: vec![LinkStatusView {
                cluster: "eu-central".into(),
                region: "eu-central".into(),
                state: "down".into(),
                rtt_seconds: Some(0.0123),
                loss: 0.05,
                catalog_version: Some(3),
                last_error: Some("idle timeout".into()),
            }],
            services: vec![ServiceStatusView {
                service: "echo.demo".parse().unwrap(),
                localities: vec![LocalityEntry {
                    cluster: "eu-central".into(),
                    health: 1.0,
                    reason: "rtt 12.3ms".into(),
                }],
                endpoints: vec![EndpointCount {
                    cluster: "us-east".into(),
                    healthy: 0,
                    total: 2,
                }],
                breakers: vec![BreakerSummary {
                    cluster: "us-east".into(),
                    open: 1,
                    reporters: 1,
                }],
                failover_active: true,
            }],
            workloads: 2,
        };
        let text = render(&[status]);
        let link = text
            .lines()
            .find(|l| l.starts_with("us-east") && l.contains("eu-central"))
            .unwrap();
        for part in ["down", "12.3ms", "5.0%", "v3", "idle timeout"] {
            assert!(link.contains(part), "{part} missing in {link}");
        }
        assert!(text.contains("gateway has not reported recently"), "{text}");
        let svc = text.lines().find(|l| l.contains("echo.demo")).unwrap();
        for part in [
            "ACTIVE",
            "eu-central(1.00)",
            "us-east 0/2",
            "us-east open 1/1",
        ] {
            assert!(svc.contains(part), "{part} missing in {svc}");
        }
        // Columns line up: every row of the services table starts its SERVICE cell at one offset.
        let header = text.lines().find(|l| l.starts_with("FROM")).unwrap();
        assert_eq!(header.find("SERVICE"), svc.find("echo.demo"));
    }
}
