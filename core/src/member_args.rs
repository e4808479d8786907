//! The flags every member of a cluster shares (the sidecar and the gateway: processes that join
//! the cluster through its controller), declared once, flattened into each component's command
//! line (`#[command(flatten)]`), and rendered back into an argv for the launcher.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::argv::Argv;
use crate::bootstrap::{BootstrapError, JoinCredentials};
use crate::host_port::HostPorts;
use crate::names::check_label;

/// Where a member's listeners bind by default: loopback, a port picked by the kernel (the ready
/// file tells the real one), so several cluster-sets run side by side without port races.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:0";

/// The flags shared by `mesh sidecar` and `mesh gateway`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ClusterMemberArgs {
    /// The cluster this process belongs to, a DNS label (e.g. `us-east`; also shown by `ps`).
    /// Its trust domain is `<cluster>.mesh`.
    #[arg(long)]
    pub cluster: String,
    /// The cluster controller's control address (TLS, HTTP/2) as `host:port`: `127.0.0.1:7443`
    /// locally, `mesh-controller.mesh-system.svc:15012` in Kubernetes; several replicas may be
    /// listed comma-separated. A sidecar talks to any one replica it reaches and moves to another
    /// when it cannot; the gateway treats every address the entries resolve to as a replica and
    /// reaches each (in Kubernetes, `mesh-controller-headless.<namespace>.svc:15012`).
    #[arg(long)]
    pub controller: HostPorts,
    /// The cluster's root certificate (PEM), e.g. `<state>/<cluster>/ca.crt`; the controller's
    /// serving certificate chains to it.
    #[arg(long)]
    pub ca_file: PathBuf,
    /// File holding the cluster's join token (`<state>/<cluster>/join-token`), used once to
    /// obtain this process's certificate.
    #[arg(long)]
    pub token_file: PathBuf,
    /// Admin address: /healthz, /readyz, /metrics (the gateway adds /v1/status, its link
    /// report as JSON).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub admin: SocketAddr,
    /// Once listeners are bound and the identity obtained, write a JSON ready file here with the
    /// bound addresses (by the role that names them: `admin`, `outbound`, `quic`, ...) and the pid.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// A shared flag with a value the component cannot use; names the flag.
#[derive(Debug, thiserror::Error)]
#[error("invalid --{flag}: {reason}")]
pub struct MemberArgsError {
    /// The flag, without dashes.
    pub flag: &'static str,
    /// What is wrong and what would be accepted.
    pub reason: String,
}

impl ClusterMemberArgs {
    /// Checks the shared flags: the cluster is a DNS label, the controller an address one can
    /// dial.
    pub fn validate(&self) -> Result<(), MemberArgsError> {
        check_label(&self.cluster).map_err(|e| MemberArgsError {
            flag: "cluster",
            reason: e.to_string(),
        })?;
        for entry in self.controller.iter() {
            if entry.ip().is_some_and(|ip| ip.is_unspecified()) || entry.port() == 0 {
                return Err(MemberArgsError {
                    flag: "controller",
                    reason: format!(
                        "{entry} is not an address one can dial: give the controller's control \
                         address (its ready file's `control`)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Reads the root certificate and the join token the flags name.
    pub fn credentials(&self) -> Result<JoinCredentials, BootstrapError> {
        JoinCredentials::read(&self.ca_file, &self.token_file)
    }

    /// The flags as command-line arguments, the inverse of parsing them.
    pub fn to_argv(&self) -> Argv {
        let mut argv = Argv::default();
        argv.flag("cluster", &self.cluster)
            .flag("controller", &self.controller)
            .path("ca-file", &self.ca_file)
            .path("token-file", &self.token_file)
            .flag("admin", self.admin)
            .opt_path("ready-file", self.ready_file.as_deref());
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::argv::parse_flags;

    fn member() -> ClusterMemberArgs {
        ClusterMemberArgs {
            cluster: "us-east".into(),
            controller: "127.0.0.1:7443".parse().unwrap(),
            ca_file: "/state/us-east/ca.crt".into(),
            token_file: "/state/us-east/join-token".into(),
            admin: "127.0.0.1:0".parse().unwrap(),
            ready_file: Some("/state/us-east/run/gateway.json".into()),
        }
    }

    #[test]
    fn argv_round_trips_through_parsing() {
        for args in [
            member(),
            ClusterMemberArgs {
                ready_file: None,
                ..member()
            },
        ] {
            assert_eq!(
                parse_flags::<ClusterMemberArgs>(args.to_argv()).unwrap(),
                args
            );
        }
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = ClusterMemberArgs {
            cluster: "Us East".into(),
            ..member()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().starts_with("invalid --cluster: "), "{err}");
        let err = ClusterMemberArgs {
            controller: "0.0.0.0:7443".parse().unwrap(),
            ..member()
        }
        .validate()
        .unwrap_err();
        assert!(
            err.to_string().starts_with("invalid --controller: "),
            "{err}"
        );
        member().validate().unwrap();
    }
}
