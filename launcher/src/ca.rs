//! `mesh ca`: creates a cluster's root CA and join token in its state directory.

use std::path::{Path, PathBuf};

use mesh_core::identity::{ClusterCa, default_trust_domain};
use rand::RngCore;

/// File name of the join token inside a cluster's state directory.
pub const JOIN_TOKEN_FILE: &str = "join-token";

/// Arguments of `mesh ca`.
#[derive(Debug, clap::Args)]
pub struct CaArgs {
    /// Cluster whose CA to create (its trust domain is `<cluster>.mesh`).
    #[arg(long)]
    pub cluster: String,
    /// State directory of the cluster-set; the CA goes to `<state-dir>/<cluster>/`.
    #[arg(long, default_value = ".mesh")]
    pub state_dir: PathBuf,
    /// Replace existing CA material (every certificate issued so far stops being trusted).
    #[arg(long)]
    pub force: bool,
}

/// Errors of `mesh ca`.
#[derive(Debug, thiserror::Error)]
pub enum CaCommandError {
    /// Bad cluster name.
    #[error("--cluster: {0}")]
    Name(#[from] mesh_core::names::NameError),
    /// Key material could not be created or written.
    #[error(transparent)]
    Ca(#[from] mesh_core::identity::CaError),
    /// The token could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What `ensure_cluster_ca` did.
#[derive(Debug, PartialEq, Eq)]
pub enum CaOutcome {
    /// New material was written.
    Created,
    /// Material already existed and was kept.
    Kept,
}

/// Creates `<cluster_dir>/ca.crt`, `ca.key` and `join-token` unless they exist (or `force`).
pub fn ensure_cluster_ca(
    cluster: &str,
    cluster_dir: &Path,
    force: bool,
) -> Result<CaOutcome, CaCommandError> {
    mesh_core::names::check_label(cluster)?;
    let token_path = cluster_dir.join(JOIN_TOKEN_FILE);
    if !force && ClusterCa::exists_in(cluster_dir) && token_path.exists() {
        return Ok(CaOutcome::Kept);
    }
    let ca = ClusterCa::generate(&default_trust_domain(cluster))?;
    ca.write_to(cluster_dir)?;
    let mut token = [0u8; 32];
    rand::rng().fill_bytes(&mut token);
    write_secret(&token_path, &hex::encode(token))?;
    Ok(CaOutcome::Created)
}

fn write_secret(path: &Path, contents: &str) -> Result<(), CaCommandError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CaCommandError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)
}

/// Runs `mesh ca`.
pub fn run(args: CaArgs) -> Result<(), CaCommandError> {
    let dir = args.state_dir.join(&args.cluster);
    match ensure_cluster_ca(&args.cluster, &dir, args.force)? {
        CaOutcome::Created => println!(
            "created CA for trust domain {} and a join token in {}",
            default_trust_domain(&args.cluster),
            dir.display()
        ),
        CaOutcome::Kept => println!(
            "CA material already exists in {} (kept; pass --force to replace it)",
            dir.display()
        ),
    }
    Ok(())
}
