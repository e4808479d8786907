//! The command line of `mesh gateway`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::GatewayError;

/// Runs the east-west gateway of one cluster: QUIC links to the gateways of linked clusters,
/// and the tunnel port through which local sidecars reach endpoints in those clusters.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Name of the cluster this gateway serves (e.g. `us-east`); its trust domain is
    /// `<cluster>.mesh`.
    #[arg(long)]
    pub cluster: String,

    /// The cluster controller's control address (TLS, HTTP/2), e.g. `127.0.0.1:7443`.
    #[arg(long)]
    pub controller: SocketAddr,

    /// The cluster's root certificate (PEM), e.g. `<state>/<cluster>/ca.crt`; the controller's
    /// serving certificate chains to it.
    #[arg(long)]
    pub ca_file: PathBuf,

    /// File holding the cluster's join token, used once to obtain the gateway's certificate.
    #[arg(long)]
    pub token_file: PathBuf,

    /// UDP address of the QUIC endpoint that peer gateways dial (port 0 picks a free port; the
    /// controller learns the real one from the gateway's report).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub quic: SocketAddr,

    /// TCP address of the tunnel port (mTLS, HTTP/2 CONNECT) that local sidecars dial.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub tunnel: SocketAddr,

    /// The QUIC address peer gateways are told to dial, when it is not the bound one (NAT, a
    /// load balancer, a 0.0.0.0 listener). Default: the bound --quic address.
    #[arg(long)]
    pub advertise_quic: Option<SocketAddr>,

    /// The tunnel address local sidecars are told to dial, when it is not the bound one (a
    /// 0.0.0.0 listener, a Service in front). Default: the bound --tunnel address.
    #[arg(long)]
    pub advertise_tunnel: Option<SocketAddr>,

    /// Admin address serving /healthz, /readyz, /metrics and /v1/status (the link report as JSON).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin: SocketAddr,

    /// QUIC keep-alive interval (e.g. `300ms`). Keeps NAT bindings open and lets a dead peer be
    /// noticed: it must be well below --idle-timeout so a few lost keep-alives are tolerated.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "300ms")]
    pub keep_alive: Duration,

    /// QUIC idle timeout (e.g. `1500ms`): a peer that stops answering (frozen, partitioned) is
    /// declared down after this long, or after 2/3 of it when what is sent to it goes
    /// unacknowledged (also a one-way cut), and requests in flight on the link fail (and are
    /// retried elsewhere) only then: 1.5 s bounds that stall while tolerating four lost
    /// keep-alives in a row (at 5% loss, about one chance in 160,000 per interval).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1500ms")]
    pub idle_timeout: Duration,

    /// Once listeners are bound and the identity obtained, write a JSON ready file here with the
    /// bound addresses (roles `admin`, `quic`, `tunnel`) and the pid.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

impl GatewayArgs {
    /// The keep-alive interval.
    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Cross-field checks, run before anything starts.
    pub fn validate(&self) -> Result<(), GatewayError> {
        mesh_core::names::check_label(&self.cluster)
            .map_err(|e| GatewayError::InvalidArgs(format!("--cluster: {e}")))?;
        check_advertised("--quic", self.quic, "--advertise-quic", self.advertise_quic)?;
        check_advertised(
            "--tunnel",
            self.tunnel,
            "--advertise-tunnel",
            self.advertise_tunnel,
        )?;
        check_timing(self.keep_alive(), self.idle_timeout())
    }
}

/// Checks that what others are told to dial is dialable: an advertised address must name a
/// host and a port, and a listener on all interfaces (0.0.0.0, ::) needs one, since the bound
/// address says nothing about where it can be reached.
fn check_advertised(
    bind_flag: &str,
    bound: SocketAddr,
    advertise_flag: &str,
    advertised: Option<SocketAddr>,
) -> Result<(), GatewayError> {
    match advertised {
        Some(addr) if addr.ip().is_unspecified() || addr.port() == 0 => {
            Err(GatewayError::InvalidArgs(format!(
                "{advertise_flag} {addr} is not an address anyone can dial: give a reachable IP \
                 and a port"
            )))
        }
        None if bound.ip().is_unspecified() => Err(GatewayError::InvalidArgs(format!(
            "{bind_flag} {bound} listens on every interface, so it cannot be told to others: \
             add {advertise_flag} <reachable ip:port>"
        ))),
        _ => Ok(()),
    }
}

/// Checks keep-alive and idle timeout together: a keep-alive at or above the idle timeout would
/// let healthy idle links time out.
pub(crate) fn check_timing(
    keep_alive: Duration,
    idle_timeout: Duration,
) -> Result<(), GatewayError> {
    if keep_alive.is_zero() {
        return Err(GatewayError::InvalidArgs(
            "--keep-alive must be above 0".into(),
        ));
    }
    if keep_alive >= idle_timeout {
        return Err(GatewayError::InvalidArgs(format!(
            "--keep-alive ({}) must be below --idle-timeout ({}), or idle links would time out \
             between keep-alives",
            humantime::format_duration(keep_alive),
            humantime::format_duration(idle_timeout)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: GatewayArgs,
    }

    fn parse(extra: &[&str]) -> Result<GatewayArgs, clap::Error> {
        let mut argv = vec![
            "gateway",
            "--cluster",
            "us-east",
            "--controller",
            "127.0.0.1:7443",
            "--ca-file",
            "ca.crt",
            "--token-file",
            "join-token",
        ];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    #[test]
    fn defaults_are_loopback_ephemeral_and_fast_failure_detection() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.quic, "127.0.0.1:0".parse().unwrap());
        assert_eq!(args.tunnel, "127.0.0.1:0".parse().unwrap());
        assert_eq!(args.keep_alive(), Duration::from_millis(300));
        assert_eq!(args.idle_timeout(), Duration::from_millis(1500));
        args.validate().unwrap();
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
            "--quic",
            "--tunnel",
            "--advertise-quic",
            "--advertise-tunnel",
            "--admin",
            "--keep-alive",
            "--idle-timeout",
            "--ready-file",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
        assert!(help.contains("[default: 1500ms]"), "{help}");
    }

    #[test]
    fn a_listener_on_every_interface_needs_an_advertised_address() {
        let err = parse(&["--quic", "0.0.0.0:4433"])
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--quic 0.0.0.0:4433") && err.contains("--advertise-quic"),
            "{err}"
        );
        let err = parse(&["--tunnel", "[::]:15008"])
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--advertise-tunnel"), "{err}");
        let err = parse(&["--advertise-quic", "0.0.0.0:4433"])
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an address anyone can dial"), "{err}");
        parse(&[
            "--quic",
            "0.0.0.0:4433",
            "--advertise-quic",
            "203.0.113.7:4433",
        ])
        .unwrap()
        .validate()
        .unwrap();
    }

    #[test]
    fn keep_alive_must_be_below_idle_timeout() {
        let args = parse(&["--keep-alive", "3s"]).unwrap();
        let err = args.validate().unwrap_err().to_string();
        assert!(err.contains("--idle-timeout (1s 500ms)"), "{err}");
        assert!(parse(&["--idle-timeout", "1.5 fortnights"]).is_err());
        let mut args = parse(&[]).unwrap();
        args.cluster = "Bad_Name".into();
        assert!(args.validate().is_err());
    }
}
