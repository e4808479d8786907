//! The command line of `mesh sidecar`, and its check into a [`SidecarConfig`] that nothing
//! downstream has to re-validate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_core::names::{ServiceKey, check_label};

use crate::error::SidecarError;

/// Flags of `mesh sidecar`: one sidecar per workload, an HTTP proxy for its app's outbound calls
/// and (with `--service`) an mTLS listener that forwards to the app.
#[derive(Debug, Clone, clap::Args)]
pub struct SidecarArgs {
    /// The cluster this sidecar runs in (also shown by `ps`).
    #[arg(long)]
    pub cluster: String,
    /// The cluster controller's control address (mTLS HTTP/2).
    #[arg(long)]
    pub controller: SocketAddr,
    /// The cluster's root certificate (`<state>/<cluster>/ca.crt`), to trust the controller.
    #[arg(long)]
    pub ca_file: PathBuf,
    /// The cluster's join token (`<state>/<cluster>/join-token`), for the first certificate.
    #[arg(long)]
    pub token_file: PathBuf,
    /// This workload instance's unique id, e.g. `echo-0` or `client-0`.
    #[arg(long)]
    pub id: String,
    /// The workload's namespace (part of its SPIFFE ID).
    #[arg(long, default_value = "demo")]
    pub namespace: String,
    /// The workload's service account (part of its SPIFFE ID). Default: the name of
    /// `--service`, or `client` without one.
    #[arg(long)]
    pub service_account: Option<String>,
    /// The service this workload serves, as `name.namespace` (e.g. `echo.demo`). When set the
    /// sidecar registers it with the controller and serves inbound mTLS traffic.
    #[arg(long)]
    pub service: Option<ServiceKey>,
    /// The local app's plain-HTTP address; required with `--service`.
    #[arg(long)]
    pub app: Option<SocketAddr>,
    /// Where to listen for mTLS traffic from other sidecars and gateways.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub inbound: SocketAddr,
    /// The inbound address registered with the controller, when it differs from the bound one
    /// (NAT, a 0.0.0.0 listener). Default: the bound inbound address.
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// Where to listen as an HTTP proxy for the local app (HTTP/1.1 and HTTP/2 prior knowledge),
    /// e.g. `curl -x http://<outbound> http://echo.demo.svc.clusterset.local/`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub outbound: SocketAddr,
    /// Admin address: /healthz, /readyz, /metrics.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin: SocketAddr,
    /// Bound on opening a connection to an endpoint (TCP, TLS, gateway tunnel), e.g. `1s`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub connect_timeout: Duration,
    /// Bound on one try of a request until its response headers arrive, e.g. `15s` (each retry
    /// gets its own).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    pub request_timeout: Duration,
    /// Keep traffic in the configured locality order whatever the localities' latency: no
    /// shift away from a locality far slower than another, and no latency probes.
    #[arg(long)]
    pub no_latency_weighting: bool,
    /// Write a JSON ready file with the bound addresses and pid here once ready.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// What this workload serves, when it serves something.
#[derive(Debug, Clone)]
pub struct ServedService {
    /// The service registered with the controller.
    pub service: ServiceKey,
    /// The local app's address.
    pub app: SocketAddr,
}

/// The checked configuration of a sidecar.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// The flags as given.
    pub args: SidecarArgs,
    /// The service account the identity is requested for.
    pub service_account: String,
    /// The served service, if any.
    pub served: Option<ServedService>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Per-try request timeout.
    pub request_timeout: Duration,
}

impl SidecarArgs {
    /// Checks the flags together, e.g. that `--app` comes with `--service`.
    pub fn validate(self) -> Result<SidecarConfig, SidecarError> {
        fn invalid<T>(msg: String) -> Result<T, SidecarError> {
            Err(SidecarError::InvalidArgs(msg))
        }
        check_label(&self.cluster).or_else(|e| invalid(format!("--cluster: {e}")))?;
        check_label(&self.namespace).or_else(|e| invalid(format!("--namespace: {e}")))?;
        if self.id.is_empty() || self.id.contains('/') {
            return invalid(format!(
                "--id `{}` must be non-empty and contain no '/'",
                self.id
            ));
        }
        let served = match (&self.service, self.app) {
            (Some(service), Some(app)) => Some(ServedService {
                service: service.clone(),
                app,
            }),
            (Some(service), None) => {
                return invalid(format!(
                    "--service {service} needs --app <addr> of the local app"
                ));
            }
            (None, Some(_)) => return invalid("--app is only used with --service".into()),
            (None, None) => None,
        };
        let service_account = match (&self.service_account, &self.service) {
            (Some(sa), _) => sa.clone(),
            (None, Some(service)) => service.name.clone(),
            (None, None) => "client".to_string(),
        };
        check_label(&service_account).or_else(|e| invalid(format!("--service-account: {e}")))?;
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return invalid("--connect-timeout and --request-timeout must be above 0".into());
        }
        Ok(SidecarConfig {
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            service_account,
            served,
            args: self,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SidecarArgs,
    }

    fn parse(extra: &[&str]) -> SidecarArgs {
        let mut argv = vec![
            "mesh",
            "--cluster",
            "us-east",
            "--controller",
            "127.0.0.1:7000",
            "--ca-file",
            "ca.crt",
            "--token-file",
            "join-token",
            "--id",
            "echo-0",
        ];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).args
    }

    #[test]
    fn defaults_follow_the_service() {
        let cfg = parse(&["--service", "echo.demo", "--app", "127.0.0.1:8080"])
            .validate()
            .unwrap();
        assert_eq!(cfg.service_account, "echo");
        assert_eq!(cfg.args.namespace, "demo");
        assert_eq!(cfg.connect_timeout, Duration::from_secs(1));
        assert_eq!(cfg.request_timeout, Duration::from_secs(15));
        let client = parse(&[]).validate().unwrap();
        assert_eq!(client.service_account, "client");
        assert!(client.served.is_none());
    }

    #[test]
    fn help_explains_every_flag() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for flag in [
            "--cluster",
            "--controller",
            "--ca-file",
            "--token-file",
            "--id",
            "--namespace",
            "--service-account",
            "--service",
            "--app",
            "--inbound",
            "--advertise",
            "--outbound",
            "--admin",
            "--connect-timeout",
            "--request-timeout",
            "--ready-file",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
        assert!(help.contains("[default: 127.0.0.1:0]"), "{help}");
        assert!(
            help.contains("curl -x"),
            "the outbound flag says how to use it"
        );
    }

    #[test]
    fn service_without_app_is_refused() {
        let err = parse(&["--service", "echo.demo"]).validate().unwrap_err();
        assert!(err.to_string().contains("--app"), "{err}");
        let err = parse(&["--app", "127.0.0.1:1"]).validate().unwrap_err();
        assert!(err.to_string().contains("--service"), "{err}");
    }
}
