//! The command line of `mesh gateway`, and its check into a [`GatewayConfig`] that nothing
//! downstream has to re-validate.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::argv::{Argv, parse_flags};
use mesh_core::member_args::{ClusterMemberArgs, DEFAULT_LISTEN};
use mesh_core::renewal::{DEFAULT_RENEW_AT_FLAG, RenewAt};

use crate::error::GatewayError;
use crate::gateway_core::GatewaySettings;

/// Runs the east-west gateway of one cluster: QUIC links to the gateways of linked clusters,
/// and the tunnel port through which local sidecars reach endpoints in those clusters.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct GatewayArgs {
    /// The flags every cluster member shares (cluster, controller, credentials, admin, ready
    /// file).
    #[command(flatten)]
    pub member: ClusterMemberArgs,

    /// UDP address of the QUIC endpoint that peer gateways dial (port 0 picks a free port; the
    /// controller learns the real one from the gateway's report).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub quic: SocketAddr,

    /// TCP address of the tunnel port (mTLS, HTTP/2 CONNECT) that local sidecars dial.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub tunnel: SocketAddr,

    /// The QUIC address peer gateways are told to dial, when it is not the bound one (NAT, a
    /// load balancer, a 0.0.0.0 listener). Default: the bound --quic address.
    #[arg(long)]
    pub advertise_quic: Option<SocketAddr>,

    /// The tunnel address local sidecars are told to dial, when it is not the bound one (a
    /// 0.0.0.0 listener, a Service in front). Default: the bound --tunnel address.
    #[arg(long)]
    pub advertise_tunnel: Option<SocketAddr>,

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

    /// Share of its certificate's lifetime after which the gateway renews it (±10% of the
    /// lifetime of jitter), above 0 and at most 0.95.
    #[arg(long, default_value = DEFAULT_RENEW_AT_FLAG)]
    pub renew_at: RenewAt,
}

impl GatewayArgs {
    /// The arguments of the gateway of the cluster `member` names, every other flag at its
    /// default (clap's, so the two cannot drift apart).
    pub fn new(member: ClusterMemberArgs) -> Self {
        parse_flags(member.to_argv()).expect("rendered flags parse")
    }

    /// The flags as command-line arguments after `mesh gateway`, the inverse of parsing them.
    pub fn to_argv(&self) -> Argv {
        let mut argv = self.member.to_argv();
        argv.flag("quic", self.quic)
            .flag("tunnel", self.tunnel)
            .opt("advertise-quic", self.advertise_quic)
            .opt("advertise-tunnel", self.advertise_tunnel)
            .duration("keep-alive", self.keep_alive)
            .duration("idle-timeout", self.idle_timeout)
            .flag("renew-at", self.renew_at);
        argv
    }
}

/// The checked configuration of a gateway: nothing downstream re-validates or parses it.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Cluster, controller, credentials, admin address and ready file (checked).
    pub member: ClusterMemberArgs,
    /// What the gateway core runs with (listeners, advertised addresses, QUIC timing).
    pub settings: GatewaySettings,
    /// Share of the certificate's lifetime at which it is renewed.
    pub renew_at: RenewAt,
}

impl GatewayConfig {
    /// Checks every flag and the flags together (advertised addresses, keep-alive against idle
    /// timeout), before anything starts.
    pub fn from_args(args: GatewayArgs) -> Result<Self, GatewayError> {
        args.member.validate()?;
        check_advertised("quic", args.quic, "advertise-quic", args.advertise_quic)?;
        check_advertised(
            "tunnel",
            args.tunnel,
            "advertise-tunnel",
            args.advertise_tunnel,
        )?;
        check_timing(args.keep_alive, args.idle_timeout)?;
        Ok(Self {
            settings: GatewaySettings {
                cluster: args.member.cluster.clone(),
                quic_addr: args.quic,
                tunnel_addr: args.tunnel,
                advertise_quic: args.advertise_quic,
                advertise_tunnel: args.advertise_tunnel,
                keep_alive: args.keep_alive,
                idle_timeout: args.idle_timeout,
            },
            member: args.member,
            renew_at: args.renew_at,
        })
    }
}

/// Checks that what others are told to dial is dialable: an advertised address must name a
/// host and a port, and a listener on all interfaces (0.0.0.0, ::) needs one, since the bound
/// address says nothing about where it can be reached.
fn check_advertised(
    bind_flag: &'static str,
    bound: SocketAddr,
    advertise_flag: &'static str,
    advertised: Option<SocketAddr>,
) -> Result<(), GatewayError> {
    match advertised {
        Some(addr) if addr.ip().is_unspecified() || addr.port() == 0 => Err(GatewayError::Config {
            flag: advertise_flag,
            reason: format!(
                "{addr} is not an address anyone can dial: give a reachable IP and a port"
            ),
        }),
        None if bound.ip().is_unspecified() => Err(GatewayError::Config {
            flag: bind_flag,
            reason: format!(
                "{bound} listens on every interface, so it cannot be told to others: add \
                 --{advertise_flag} <reachable ip:port>"
            ),
        }),
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
        return Err(GatewayError::Config {
            flag: "keep-alive",
            reason: "must be above 0".into(),
        });
    }
    if keep_alive >= idle_timeout {
        return Err(GatewayError::Config {
            flag: "keep-alive",
            reason: format!(
                "{} must be below --idle-timeout ({}), or idle links would time out between \
                 keep-alives",
                humantime::format_duration(keep_alive),
                humantime::format_duration(idle_timeout)
            ),
        });
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
        assert_eq!(args.keep_alive, Duration::from_millis(300));
        assert_eq!(args.idle_timeout, Duration::from_millis(1500));
        GatewayConfig::from_args(args).unwrap();
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
        let check = |extra: &[&str]| GatewayConfig::from_args(parse(extra).unwrap());
        let err = check(&["--quic", "0.0.0.0:4433"]).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid --quic: 0.0.0.0:4433") && err.contains("--advertise-quic"),
            "{err}"
        );
        let err = check(&["--tunnel", "[::]:15008"]).unwrap_err().to_string();
        assert!(err.contains("--advertise-tunnel"), "{err}");
        let err = check(&["--advertise-quic", "0.0.0.0:4433"])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid --advertise-quic")
                && err.contains("not an address anyone can dial"),
            "{err}"
        );
        check(&[
            "--quic",
            "0.0.0.0:4433",
            "--advertise-quic",
            "203.0.113.7:4433",
        ])
        .unwrap();
    }

    #[test]
    fn keep_alive_must_be_below_idle_timeout() {
        let args = parse(&["--keep-alive", "3s"]).unwrap();
        let err = GatewayConfig::from_args(args).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid --keep-alive") && err.contains("--idle-timeout (1s 500ms)"),
            "{err}"
        );
        assert!(parse(&["--idle-timeout", "1.5 fortnights"]).is_err());
        let mut args = parse(&[]).unwrap();
        args.member.cluster = "Bad_Name".into();
        let err = GatewayConfig::from_args(args).unwrap_err().to_string();
        assert!(err.starts_with("invalid --cluster"), "{err}");
    }

    #[test]
    fn argv_round_trips_through_parsing() {
        let customised = parse(&[
            "--quic",
            "0.0.0.0:4433",
            "--advertise-quic",
            "203.0.113.7:4433",
            "--advertise-tunnel",
            "10.0.0.2:15008",
            "--keep-alive",
            "250ms",
            "--idle-timeout",
            "2s",
            "--ready-file",
            "/run/gateway.json",
        ])
        .unwrap();
        for args in [customised, parse(&[]).unwrap()] {
            let argv = std::iter::once("gateway".to_string()).chain(args.to_argv().into_vec());
            assert_eq!(Cli::try_parse_from(argv).unwrap().args, args);
        }
    }
}
