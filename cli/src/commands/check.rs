//! `mesh check`: what is wrong with a cluster-set and what to do about it.
//!
//! - Kubernetes (`--kubeconfig` / `--context`, once per cluster): CRDs, controller and leader,
//!   gateway, links from both sides, trust bundles, root expiry, RBAC of the user and of the
//!   controller ([`mesh_k8s::check`]).
//! - Local mode (default: the cluster-set `mesh up` runs in `--state-dir`, or `--admin`
//!   addresses): each controller ready, its gateway reporting, every link up from both sides,
//!   each side trusting the peer's current bundle.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use mesh_core::api::{ControllerStatus, LinkInfo, PATH_LINK_INFO, PATH_LINKS, PATH_STATUS};
use mesh_k8s::check::{Finding, check_clusters};
use mesh_launcher::admin_client;

use super::clusters::KubeClusters;
use super::status::controller_admins;

/// Arguments of `mesh check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The Kubernetes clusters to check (repeat `--kubeconfig` to check links from both sides).
    #[command(flatten)]
    pub kube: KubeClusters,
    /// Local mode: controller admin addresses; by default those of the cluster-set `mesh up`
    /// runs in the state directory.
    #[arg(long = "admin", conflicts_with_all = ["kubeconfig", "context"])]
    pub admins: Vec<SocketAddr>,
    /// Local mode: state directory of a running `mesh up`.
    #[arg(long, default_value = ".mesh")]
    pub state_dir: PathBuf,
    /// Print the findings as JSON (an array of {cluster, check, ok, detail, fix}).
    #[arg(long)]
    pub json: bool,
}

/// Runs `mesh check`: prints the findings, fails when any check fails.
pub async fn run(args: CheckArgs) -> Result<(), String> {
    let findings = match args.kube.sources()? {
        Some(sources) => check_clusters(&sources, &args.kube.namespace).await,
        None => check_local(&args).await?,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&findings).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", render(&findings));
    }
    let failed = findings.iter().filter(|f| !f.ok).count();
    if failed > 0 {
        return Err(format!("{failed} check(s) failed"));
    }
    Ok(())
}

/// Findings as lines a person reads: `ok` or `FAIL`, the cluster, the check, and the fix.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let mark = if f.ok { "ok  " } else { "FAIL" };
        let _ = writeln!(out, "{mark} {:<12} {:<28} {}", f.cluster, f.check, f.detail);
        if let Some(fix) = &f.fix {
            let _ = writeln!(out, "     {:<12} {:<28} -> {fix}", "", "");
        }
    }
    out
}

fn finding(cluster: &str, check: &str, ok: bool, detail: String, fix: Option<String>) -> Finding {
    Finding {
        cluster: cluster.to_string(),
        check: check.to_string(),
        ok,
        detail,
        fix,
    }
}

/// Local mode: asks every controller's admin API.
async fn check_local(args: &CheckArgs) -> Result<Vec<Finding>, String> {
    let admins = controller_admins(&args.admins, &args.state_dir).map_err(|e| {
        format!("{e}; or name Kubernetes clusters to check with --kubeconfig or --context")
    })?;
    let mut findings = Vec::new();
    let mut seen: Vec<(ControllerStatus, Vec<LinkInfo>, Option<LinkInfo>)> = Vec::new();
    for admin in admins {
        let label = admin.to_string();
        let status: ControllerStatus = match admin_client::get_json(admin, PATH_STATUS).await {
            Ok(s) => s,
            Err(e) => {
                findings.push(finding(
                    &label,
                    "controller",
                    false,
                    e.to_string(),
                    Some("start the cluster's controller (or check its log)".into()),
                ));
                continue;
            }
        };
        let name = status.cluster.clone();
        findings.push(finding(
            &name,
            "controller",
            true,
            format!("answering at {admin}"),
            None,
        ));
        findings.push(if status.gateway_connected {
            finding(
                &name,
                "gateway",
                true,
                "reporting to its controller".into(),
                None,
            )
        } else {
            finding(
                &name,
                "gateway",
                false,
                "has not reported for a few seconds".into(),
                Some("start the cluster's gateway (or check its log)".into()),
            )
        });
        for link in &status.links {
            let ok = link.state == "up";
            findings.push(finding(
                &name,
                &format!("link {}", link.cluster),
                ok,
                match (&link.last_error, link.rtt_seconds) {
                    (_, Some(rtt)) if ok => format!("up, RTT {:.1}ms", rtt * 1000.0),
                    (Some(e), _) => format!("{}: {e}", link.state),
                    _ => link.state.clone(),
                },
                (!ok).then(|| {
                    format!(
                        "check that {}'s gateway runs and links back to {name}; `mesh link` again",
                        link.cluster
                    )
                }),
            ));
        }
        let links: Vec<LinkInfo> = admin_client::get_json(admin, PATH_LINKS)
            .await
            .unwrap_or_default();
        let info: Option<LinkInfo> = admin_client::get_json(admin, PATH_LINK_INFO).await.ok();
        seen.push((status, links, info));
    }
    let infos: BTreeMap<&str, &LinkInfo> = seen
        .iter()
        .filter_map(|(s, _, i)| Some((s.cluster.as_str(), i.as_ref()?)))
        .collect();
    for (status, links, _) in &seen {
        for link in links {
            let back = seen
                .iter()
                .find(|(s, _, _)| s.cluster == link.cluster)
                .map(|(_, l, _)| l.iter().any(|l| l.cluster == status.cluster));
            if back == Some(false) {
                findings.push(finding(
                    &status.cluster,
                    &format!("link {}", link.cluster),
                    false,
                    format!(
                        "{} links to {}, but {} has no link back",
                        status.cluster, link.cluster, link.cluster
                    ),
                    Some(format!(
                        "run `mesh link` for {} and {} again",
                        status.cluster, link.cluster
                    )),
                ));
            }
            if let Some(peer) = infos.get(link.cluster.as_str()) {
                let same = peer.trust_bundle.ca_pem == link.trust_bundle.ca_pem;
                findings.push(finding(
                    &status.cluster,
                    &format!("trust {}", link.cluster),
                    same,
                    if same {
                        "holds the peer's current trust bundle".into()
                    } else {
                        "holds an old trust bundle of the peer".into()
                    },
                    (!same).then(|| {
                        format!(
                            "run `mesh link` for {} and {} again",
                            status.cluster, link.cluster
                        )
                    }),
                ));
            }
        }
    }
    Ok(findings)
}
