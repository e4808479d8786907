//! `mesh ca`: create a cluster's root CA and join token (`mesh ca --cluster c`), or rotate its
//! root across the linked clusters (`mesh ca rotate --cluster c`, see [`rotate`]).

mod rotate;
mod show;

use std::path::PathBuf;

use mesh_launcher::ca::{CaArgs, run as create};

pub use rotate::RotateArgs;

/// Arguments of `mesh ca`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CaCommand {
    /// Cluster whose CA to create (its trust domain is `<cluster>.mesh`).
    #[arg(long, required = true)]
    pub cluster: Option<String>,
    /// State directory of the cluster-set; the CA goes to `<state-dir>/<cluster>/`.
    #[arg(long, default_value = ".mesh")]
    pub state_dir: PathBuf,
    /// Replace existing CA material (every certificate issued so far stops being trusted; to
    /// replace a root without that, use `mesh ca rotate`).
    #[arg(long)]
    pub force: bool,
    /// What else to do with the CA.
    #[command(subcommand)]
    pub action: Option<CaAction>,
}

/// `mesh ca` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CaAction {
    /// Rotate the cluster's root CA with no failed request: add a new root (both trusted, here
    /// and at every linked cluster), switch signing to it, let certificates roll over, retire
    /// the old root. Each step waits for what it needs; `--status` shows where it stands.
    Rotate(RotateArgs),
}

/// Runs `mesh ca`.
pub async fn run(cmd: CaCommand) -> Result<(), String> {
    match cmd.action {
        Some(CaAction::Rotate(args)) => rotate::run(args).await,
        None => {
            let cluster = cmd
                .cluster
                .ok_or_else(|| "--cluster is required".to_string())?;
            create(CaArgs {
                cluster,
                state_dir: cmd.state_dir,
                force: cmd.force,
            })
            .map_err(|e| e.to_string())
        }
    }
}
