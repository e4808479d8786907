//! `mesh link` / `mesh unlink`: exchange (or revoke) trust bundles and gateway addresses between
//! two clusters. Idempotent.
//!
//! - Local mode: `mesh link <admin-a> <admin-b>`, through the controllers' admin APIs, with
//!   each controller's admin token (`<state-dir>/<cluster>/admin-token`, or
//!   `--admin-token-file` once per cluster for clusters whose state is elsewhere).
//! - Kubernetes: `mesh link --kubeconfig a.yaml --kubeconfig b.yaml` (or `--context a --context
//!   b` in one kubeconfig), through `Link` objects that each cluster's controller reconciles.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_k8s::client::ClusterSource;
use mesh_k8s::linking::{link_clusters, unlink_clusters};
use mesh_launcher::admin_client::AdminTokens;
use mesh_launcher::link::{link_pair, unlink_pair};

use super::clusters::KubeClusters;

/// Arguments of `mesh link` and `mesh unlink`.
#[derive(Debug, clap::Args)]
pub struct LinkArgs {
    /// Local mode: admin address of the first cluster's controller (e.g. 127.0.0.1:15000).
    #[arg(requires = "b", conflicts_with_all = ["kubeconfig", "context"])]
    pub a: Option<SocketAddr>,
    /// Local mode: admin address of the second cluster's controller.
    pub b: Option<SocketAddr>,
    /// Kubernetes: the two clusters.
    #[command(flatten)]
    pub kube: KubeClusters,
    /// Local mode: the cluster-set state directory; each controller's admin token is read
    /// from `<state-dir>/<cluster>/admin-token` (where `mesh up` keeps it).
    #[arg(long, default_value = ".mesh")]
    pub state_dir: PathBuf,
    /// Local mode: the admin token file of the first cluster, and, given twice, of the second
    /// (for clusters whose state directory is not `--state-dir`, e.g. remote ones).
    #[arg(
        long,
        num_args = 1,
        action = clap::ArgAction::Append,
        conflicts_with_all = ["kubeconfig", "context"]
    )]
    pub admin_token_file: Vec<PathBuf>,
    /// How long to wait: local mode, for a controller whose gateway has not reported yet;
    /// Kubernetes, for both `Link`s to become ready (e.g. `60s`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub wait: Duration,
}

/// What `mesh link` was asked to link.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Local(SocketAddr, SocketAddr),
    Kubernetes(ClusterSource, ClusterSource),
}

/// The two clusters the flags name.
fn target(args: &LinkArgs) -> Result<Target, String> {
    if let (Some(a), Some(b)) = (args.a, args.b) {
        if args.admin_token_file.len() > 2 {
            return Err(format!(
                "--admin-token-file is given {} times: at most once per cluster, in the order \
                 of the admin addresses",
                args.admin_token_file.len()
            ));
        }
        return Ok(Target::Local(a, b));
    }
    let how = "name two clusters: two controller admin addresses (local mode), `--kubeconfig A \
               --kubeconfig B`, or `--context A --context B` (with at most one --kubeconfig)";
    match args.kube.sources().map_err(|e| format!("{e}; {how}"))? {
        Some(sources) => match <[ClusterSource; 2]>::try_from(sources) {
            Ok([a, b]) => Ok(Target::Kubernetes(a, b)),
            Err(_) => Err(how.into()),
        },
        None => Err(how.into()),
    }
}

/// Where the two controllers' admin tokens are: `--admin-token-file` in the order of the
/// addresses, else under `--state-dir`.
fn tokens(args: &LinkArgs, a: SocketAddr, b: SocketAddr) -> AdminTokens {
    let mut tokens = AdminTokens::in_state_dir(&args.state_dir);
    for (admin, file) in [a, b].into_iter().zip(&args.admin_token_file) {
        tokens = tokens.with_file(admin, file);
    }
    tokens
}

/// Runs `mesh link`.
pub async fn run_link(args: LinkArgs) -> Result<(), String> {
    match target(&args)? {
        Target::Local(a, b) => {
            let (a, b) = link_pair(a, b, &tokens(&args, a, b), args.wait)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "linked {a} and {b}: each now trusts the other's trust domain and knows its gateway"
            );
        }
        Target::Kubernetes(a, b) => {
            let (a, b) = link_clusters(&a, &b, &args.kube.namespace, args.wait)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "linked {a} and {b}: both Links are Ready (`kubectl get links` in either cluster)"
            );
        }
    }
    Ok(())
}

/// Runs `mesh unlink`.
pub async fn run_unlink(args: LinkArgs) -> Result<(), String> {
    match target(&args)? {
        Target::Local(a, b) => {
            let (a, b) = unlink_pair(a, b, &tokens(&args, a, b))
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "unlinked {a} and {b}: trust revoked and imported endpoints withdrawn on both sides"
            );
        }
        Target::Kubernetes(a, b) => {
            let (a, b) = unlink_clusters(&a, &b, &args.kube.namespace)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "unlinked {a} and {b}: both Links deleted; each controller revokes the other's \
                 trust and withdraws its imports"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LinkArgs,
    }

    fn parse(argv: &[&str]) -> Result<Target, String> {
        let cli = Cli::try_parse_from(std::iter::once("mesh").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        target(&cli.args)
    }

    #[test]
    fn names_two_clusters_in_any_of_three_ways() {
        assert_eq!(
            parse(&["127.0.0.1:1", "127.0.0.1:2"]).unwrap(),
            Target::Local(
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap()
            )
        );
        let Target::Kubernetes(a, b) =
            parse(&["--kubeconfig", "e.yaml", "--kubeconfig", "w.yaml"]).unwrap()
        else {
            panic!("kubernetes")
        };
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("e.yaml".into(), "w.yaml".into())
        );
        let Target::Kubernetes(a, b) = parse(&["--context", "east", "--context", "west"]).unwrap()
        else {
            panic!("kubernetes")
        };
        assert_eq!(
            (a.context.as_deref(), b.context.as_deref()),
            (Some("east"), Some("west"))
        );
        let Target::Kubernetes(a, _) = parse(&[
            "--kubeconfig",
            "all.yaml",
            "--context",
            "east",
            "--context",
            "west",
        ])
        .unwrap() else {
            panic!("kubernetes")
        };
        assert_eq!(a.to_string(), "context east of all.yaml");
    }

    #[test]
    fn anything_else_says_how_to_name_them() {
        for bad in [
            &["--kubeconfig", "e.yaml"][..],
            &["--context", "a"],
            &[],
            &["--kubeconfig", "a", "--kubeconfig", "b", "--context", "x"],
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("name two clusters"), "{bad:?}: {err}");
        }
        assert!(parse(&["127.0.0.1:1", "127.0.0.1:2", "--kubeconfig", "x"]).is_err());
        let err = parse(&[
            "127.0.0.1:1",
            "127.0.0.1:2",
            "--admin-token-file",
            "a",
            "--admin-token-file",
            "b",
            "--admin-token-file",
            "c",
        ])
        .unwrap_err();
        assert!(err.contains("at most once per cluster"), "{err}");
        // Kubernetes clusters are linked through Link objects: no admin token involved.
        let err = parse(&[
            "--kubeconfig",
            "e.yaml",
            "--kubeconfig",
            "w.yaml",
            "--admin-token-file",
            "t",
        ])
        .unwrap_err();
        assert!(err.contains("--admin-token-file"), "{err}");
    }

    #[test]
    fn token_files_follow_the_order_of_the_addresses() {
        let cli = Cli::try_parse_from([
            "mesh",
            "127.0.0.1:1",
            "127.0.0.1:2",
            "--admin-token-file",
            "/nonexistent/a-token",
        ])
        .unwrap();
        let (a, b) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let t = tokens(&cli.args, a, b);
        let err = t.token_for(a, "us-east").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/a-token"), "{err}");
        let err = t.token_for(b, "us-west").unwrap_err().to_string();
        assert!(err.contains(".mesh/us-west/admin-token"), "{err}");
    }
}
