//! `mesh link` / `mesh unlink`: exchange (or revoke) trust bundles and gateway addresses between
//! two running clusters, through their controllers' admin APIs. Linking is idempotent.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_launcher::admin_client::AdminError;
use mesh_launcher::link::{link_pair, unlink_pair};

/// Arguments of `mesh link` and `mesh unlink`.
#[derive(Debug, clap::Args)]
pub struct LinkArgs {
    /// Admin address of the first cluster's controller (e.g. 127.0.0.1:15000).
    pub a: SocketAddr,
    /// Admin address of the second cluster's controller.
    pub b: SocketAddr,
    /// How long to wait for a controller whose gateway has not reported yet (e.g. `20s`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    pub wait: Duration,
}

/// Runs `mesh link`.
pub async fn run_link(args: LinkArgs) -> Result<(), AdminError> {
    let (a, b) = link_pair(args.a, args.b, args.wait).await?;
    println!("linked {a} and {b}: each now trusts the other's trust domain and knows its gateway");
    Ok(())
}

/// Runs `mesh unlink`.
pub async fn run_unlink(args: LinkArgs) -> Result<(), AdminError> {
    let (a, b) = unlink_pair(args.a, args.b).await?;
    println!("unlinked {a} and {b}: trust revoked and imported endpoints withdrawn on both sides");
    Ok(())
}
