//! The command line of `mesh demo-app`, declared here rather than beside the demo app (in the
//! `mesh` binary's crate) because the launcher plans demo replicas and this crate cannot depend
//! on that one; `mesh demo-app` parses these same arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use mesh_core::argv::Argv;
use mesh_core::member_args::DEFAULT_LISTEN;

/// Arguments of `mesh demo-app`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct DemoAppArgs {
    /// Cluster this replica runs in (shown in every answer).
    #[arg(long)]
    pub cluster: String,
    /// Replica name, e.g. `echo-0` (shown in every answer).
    #[arg(long)]
    pub replica: String,
    /// Plain HTTP/1.1 and HTTP/2 (prior knowledge) listener for requests.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`, and `/v1/faults` to inject 500s or
    /// latency for a share of requests).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub admin: SocketAddr,
    /// Write the bound addresses here once listening.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

impl DemoAppArgs {
    /// The flags as command-line arguments after `mesh demo-app`, the inverse of parsing them.
    pub fn to_argv(&self) -> Argv {
        let mut argv = Argv::default();
        argv.flag("cluster", &self.cluster)
            .flag("replica", &self.replica)
            .flag("listen", self.listen)
            .flag("admin", self.admin)
            .opt_path("ready-file", self.ready_file.as_deref());
        argv
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::argv::parse_flags;

    use super::*;

    #[test]
    fn argv_round_trips_through_parsing() {
        let args = DemoAppArgs {
            cluster: "us-east".into(),
            replica: "echo-0".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:9001".parse().unwrap(),
            ready_file: Some("/state/run/echo-0.json".into()),
        };
        assert_eq!(parse_flags::<DemoAppArgs>(args.to_argv()).unwrap(), args);
    }
}
