//! The command line of `mesh sidecar`, and its check into a [`SidecarConfig`] that nothing
//! downstream has to re-validate.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::argv::{Argv, parse_flags};
use mesh_core::member_args::{ClusterMemberArgs, DEFAULT_LISTEN};
use mesh_core::names::{ServiceKey, check_label};
use mesh_core::policy::http_cache::DEFAULT_CAPACITY_BYTES;
use mesh_core::serve::{
    DEFAULT_MAX_ADMIN_CONNECTIONS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES, ServeLimits,
};

use crate::capture::Cidr;
use crate::error::SidecarError;
use crate::transparent::{InboundPolicy, OutboundPolicy};

/// Flags of `mesh sidecar`: one sidecar per workload, an HTTP proxy for its app's outbound calls
/// and (with `--service`) an mTLS listener that forwards to the app.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct SidecarArgs {
    /// The flags every cluster member shares (cluster, controller, credentials, admin, ready
    /// file).
    #[command(flatten)]
    pub member: ClusterMemberArgs,
    /// This workload instance's unique id, e.g. `echo-0` or `client-0`.
    #[arg(long)]
    pub id: String,
    /// The workload's namespace (part of its SPIFFE ID).
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
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
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub inbound: SocketAddr,
    /// The inbound address registered with the controller, when it differs from the bound one
    /// (NAT, a 0.0.0.0 listener). Default: the bound inbound address.
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// Where to listen as an HTTP proxy for the local app (HTTP/1.1 and HTTP/2 prior knowledge),
    /// e.g. `curl -x http://<outbound> http://echo.demo.svc.clusterset.local/`.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub outbound: SocketAddr,
    /// Bound on opening a connection to an endpoint (TCP, TLS, gateway tunnel), e.g. `1s`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = DEFAULT_CONNECT_TIMEOUT)]
    pub connect_timeout: Duration,
    /// Bound on one try of a request until its response headers arrive, e.g. `15s` (each retry
    /// gets its own).
    #[arg(long, value_parser = humantime::parse_duration, default_value = DEFAULT_REQUEST_TIMEOUT)]
    pub request_timeout: Duration,
    /// Keep traffic in the configured locality order whatever the localities' latency: no
    /// shift away from a locality far slower than another, and no latency probes.
    #[arg(long)]
    pub no_latency_weighting: bool,
    /// Do not register the served workload with the controller: in Kubernetes the workload's
    /// EndpointSlices (and their ready conditions) say where it is and whether it is ready.
    #[arg(long)]
    pub no_register: bool,
    /// Captured connections (see `mesh init`) to destinations that are not mesh services:
    /// `allow-any` passes them through unchanged, `registry-only` refuses them.
    #[arg(long, value_enum, default_value = "allow-any")]
    pub outbound_policy: OutboundPolicy,
    /// Captured plaintext connections from outside the mesh to the app's ports: `permissive`
    /// lets them reach the app, `strict` refuses them (only mTLS from the mesh gets through).
    #[arg(long, value_enum, default_value = "permissive")]
    pub inbound_policy: InboundPolicy,
    /// The mesh's VIP range, as the controllers' `--vip-range`: a captured connection to an
    /// address in it is for a mesh service.
    #[arg(long, default_value = DEFAULT_VIP_RANGE)]
    pub vip_range: Cidr,
    /// Bytes the response cache of routes with a `cache` rule may hold (bodies, header fields
    /// and keys), shared by every route; least recently used answers are evicted beyond it.
    /// 0 stores nothing.
    #[arg(long, default_value_t = DEFAULT_CAPACITY_BYTES)]
    pub cache_max_bytes: usize,
    /// Most connections the inbound listener holds at once; one more is closed at once and
    /// counted in `mesh_sidecar_connections_refused_total{listener="inbound"}`.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_inbound_connections: usize,
    /// Most connections the outbound listener holds at once (the app's, and captured ones).
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_outbound_connections: usize,
    /// Most connections the admin listener holds at once.
    #[arg(long, default_value_t = DEFAULT_MAX_ADMIN_CONNECTIONS)]
    pub max_admin_connections: usize,
    /// Largest request head a client may send to any listener (the request target, and each
    /// header field's name and value plus 32), in bytes; over it: 431.
    #[arg(long, default_value_t = DEFAULT_MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,
    /// Time a client has to send a complete HTTP/1 request head, or its first HTTP/2 request,
    /// before its connection is closed (slowloris), e.g. `30s`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = DEFAULT_HEADER_READ_TIMEOUT)]
    pub header_read_timeout: Duration,
    /// Time a client connection may sit with no request in flight before it is closed
    /// (HTTP/2: GOAWAY), e.g. `5m`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = DEFAULT_IDLE_TIMEOUT)]
    pub idle_timeout: Duration,
    /// Share of its certificate's lifetime after which the sidecar renews it (±10% of the
    /// lifetime of jitter), above 0 and at most 0.95.
    #[arg(long, default_value = mesh_core::renewal::DEFAULT_RENEW_AT_FLAG)]
    pub renew_at: mesh_core::renewal::RenewAt,
}

/// The controllers' default VIP range (`mesh controller --vip-range`).
const DEFAULT_VIP_RANGE: &str = "240.240.0.0/16";

/// The namespace of the demo workloads, the common case on a laptop.
const DEFAULT_NAMESPACE: &str = "demo";
/// A loopback connect (TCP + TLS) takes well under a millisecond; a second bounds a stalled SYN
/// without failing a healthy cross-region dial.
const DEFAULT_CONNECT_TIMEOUT: &str = "1s";
/// Long enough for a slow upstream, short enough that a hung one is retried elsewhere.
const DEFAULT_REQUEST_TIMEOUT: &str = "15s";
/// `mesh_core::serve::DEFAULT_HEADER_READ_TIMEOUT`, as a flag value (see its reason there).
const DEFAULT_HEADER_READ_TIMEOUT: &str = "30s";
/// `mesh_core::serve::DEFAULT_IDLE_TIMEOUT`, as a flag value (see its reason there).
const DEFAULT_IDLE_TIMEOUT: &str = "5m";

impl SidecarArgs {
    /// The arguments of workload `id` in the cluster `member` names, every other flag at its
    /// default (clap's, so the two cannot drift apart).
    pub fn new(member: ClusterMemberArgs, id: impl std::fmt::Display) -> Self {
        let mut argv = member.to_argv();
        argv.flag("id", id);
        parse_flags(argv).expect("rendered flags parse")
    }

    /// The flags as command-line arguments after `mesh sidecar`, the inverse of parsing them.
    pub fn to_argv(&self) -> Argv {
        let mut argv = self.member.to_argv();
        argv.flag("id", &self.id)
            .flag("namespace", &self.namespace)
            .opt("service-account", self.service_account.as_ref())
            .opt("service", self.service.as_ref())
            .opt("app", self.app)
            .flag("inbound", self.inbound)
            .opt("advertise", self.advertise)
            .flag("outbound", self.outbound)
            .duration("connect-timeout", self.connect_timeout)
            .duration("request-timeout", self.request_timeout)
            .switch("no-latency-weighting", self.no_latency_weighting)
            .switch("no-register", self.no_register)
            .flag("outbound-policy", policy_name(self.outbound_policy))
            .flag("inbound-policy", policy_name(self.inbound_policy))
            .flag("vip-range", self.vip_range)
            .flag("cache-max-bytes", self.cache_max_bytes)
            .flag("max-inbound-connections", self.max_inbound_connections)
            .flag("max-outbound-connections", self.max_outbound_connections)
            .flag("max-admin-connections", self.max_admin_connections)
            .flag("max-header-bytes", self.max_header_bytes)
            .duration("header-read-timeout", self.header_read_timeout)
            .duration("idle-timeout", self.idle_timeout)
            .flag("renew-at", self.renew_at);
        argv
    }
}

/// A policy's flag value, as clap spells it.
fn policy_name(policy: impl clap::ValueEnum) -> String {
    policy
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// What this workload serves, when it serves something.
#[derive(Debug, Clone)]
pub struct ServedService {
    /// The service registered with the controller.
    pub service: ServiceKey,
    /// The local app's address.
    pub app: SocketAddr,
}

/// The checked configuration of a sidecar: nothing downstream re-validates or parses it.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// Cluster, controller, credentials, admin address and ready file (checked).
    pub member: ClusterMemberArgs,
    /// The workload instance's id.
    pub id: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The service account the identity is requested for.
    pub service_account: String,
    /// The served service, if any.
    pub served: Option<ServedService>,
    /// Inbound listener address.
    pub inbound: SocketAddr,
    /// The inbound address registered with the controller, when not the bound one.
    pub advertise: Option<SocketAddr>,
    /// Outbound (proxy) listener address.
    pub outbound: SocketAddr,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Per-try request timeout.
    pub request_timeout: Duration,
    /// Whether traffic shifts away from a locality far slower than another.
    pub latency_weighting: bool,
    /// Whether the served workload registers with the controller (heartbeats).
    pub register: bool,
    /// For captured connections to destinations outside the mesh.
    pub outbound_policy: OutboundPolicy,
    /// For captured plaintext from outside the mesh.
    pub inbound_policy: InboundPolicy,
    /// The mesh's VIP range.
    pub vip_range: Cidr,
    /// The response cache's byte budget.
    pub cache_max_bytes: usize,
    /// What a client may make one connection of any listener hold.
    pub serve_limits: ServeLimits,
    /// Connection caps of the inbound, outbound and admin listeners.
    pub max_connections: ListenerCaps,
    /// Share of the certificate's lifetime at which it is renewed.
    pub renew_at: mesh_core::renewal::RenewAt,
}

/// How many connections each of the sidecar's listeners holds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerCaps {
    /// The inbound (mTLS) listener.
    pub inbound: usize,
    /// The outbound (proxy) listener.
    pub outbound: usize,
    /// The admin listener.
    pub admin: usize,
}

impl SidecarConfig {
    /// Checks every flag and the flags together (e.g. that `--app` comes with `--service`), and
    /// builds the configuration.
    pub fn from_args(args: SidecarArgs) -> Result<Self, SidecarError> {
        let config = |flag, reason: String| SidecarError::Config { flag, reason };
        args.member.validate()?;
        check_label(&args.namespace).map_err(|e| config("namespace", e.to_string()))?;
        if args.id.is_empty() || args.id.contains('/') {
            return Err(config(
                "id",
                format!("`{}` must be non-empty and contain no '/'", args.id),
            ));
        }
        let served = match (&args.service, args.app) {
            (Some(service), Some(app)) => Some(ServedService {
                service: service.clone(),
                app,
            }),
            (Some(service), None) => {
                return Err(config(
                    "app",
                    format!("--service {service} needs --app <addr> of the local app"),
                ));
            }
            (None, Some(_)) => {
                return Err(config(
                    "service",
                    "--app is only used with --service".into(),
                ));
            }
            (None, None) => None,
        };
        let service_account = match (&args.service_account, &args.service) {
            (Some(sa), _) => sa.clone(),
            (None, Some(service)) => service.name.clone(),
            (None, None) => "client".to_string(),
        };
        check_label(&service_account).map_err(|e| config("service-account", e.to_string()))?;
        if args.connect_timeout.is_zero() {
            return Err(config("connect-timeout", "must be above 0".into()));
        }
        if args.request_timeout.is_zero() {
            return Err(config("request-timeout", "must be above 0".into()));
        }
        for (flag, zero) in [
            ("max-inbound-connections", args.max_inbound_connections == 0),
            (
                "max-outbound-connections",
                args.max_outbound_connections == 0,
            ),
            ("max-admin-connections", args.max_admin_connections == 0),
            ("max-header-bytes", args.max_header_bytes == 0),
            ("header-read-timeout", args.header_read_timeout.is_zero()),
            ("idle-timeout", args.idle_timeout.is_zero()),
        ] {
            if zero {
                return Err(config(flag, "must be above 0".into()));
            }
        }
        let serve_limits = ServeLimits {
            max_header_bytes: args.max_header_bytes,
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            ..ServeLimits::default()
        };
        Ok(Self {
            member: args.member,
            id: args.id,
            namespace: args.namespace,
            service_account,
            served,
            inbound: args.inbound,
            advertise: args.advertise,
            outbound: args.outbound,
            connect_timeout: args.connect_timeout,
            request_timeout: args.request_timeout,
            latency_weighting: !args.no_latency_weighting,
            register: !args.no_register,
            outbound_policy: args.outbound_policy,
            inbound_policy: args.inbound_policy,
            vip_range: args.vip_range,
            cache_max_bytes: args.cache_max_bytes,
            serve_limits,
            max_connections: ListenerCaps {
                inbound: args.max_inbound_connections,
                outbound: args.max_outbound_connections,
                admin: args.max_admin_connections,
            },
            renew_at: args.renew_at,
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
        try_parse(extra).unwrap()
    }

    fn try_parse(extra: &[&str]) -> Result<SidecarArgs, clap::Error> {
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
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    #[test]
    fn defaults_follow_the_service() {
        let cfg = SidecarConfig::from_args(parse(&[
            "--service",
            "echo.demo",
            "--app",
            "127.0.0.1:8080",
        ]))
        .unwrap();
        assert_eq!(cfg.service_account, "echo");
        assert_eq!(cfg.namespace, "demo");
        assert_eq!(cfg.connect_timeout, Duration::from_secs(1));
        assert_eq!(cfg.request_timeout, Duration::from_secs(15));
        assert_eq!(cfg.cache_max_bytes, 64 * 1024 * 1024);
        assert_eq!(cfg.serve_limits, ServeLimits::default());
        assert_eq!(
            cfg.max_connections,
            ListenerCaps {
                inbound: 4096,
                outbound: 4096,
                admin: 256,
            }
        );
        let client = SidecarConfig::from_args(parse(&[])).unwrap();
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
            "--cache-max-bytes",
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
        let err = SidecarConfig::from_args(parse(&["--service", "echo.demo"])).unwrap_err();
        assert!(err.to_string().starts_with("invalid --app"), "{err}");
        let err = SidecarConfig::from_args(parse(&["--app", "127.0.0.1:1"])).unwrap_err();
        assert!(err.to_string().starts_with("invalid --service"), "{err}");
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (extra, flag) in [
            (&["--namespace", "Demo"][..], "--namespace"),
            (&["--service-account", "a/b"][..], "--service-account"),
            (&["--request-timeout", "0s"][..], "--request-timeout"),
            (&["--connect-timeout", "0s"][..], "--connect-timeout"),
            (&["--idle-timeout", "0s"][..], "--idle-timeout"),
            (
                &["--header-read-timeout", "0s"][..],
                "--header-read-timeout",
            ),
            (&["--max-header-bytes", "0"][..], "--max-header-bytes"),
            (
                &["--max-inbound-connections", "0"][..],
                "--max-inbound-connections",
            ),
        ] {
            let err = SidecarConfig::from_args(parse(extra)).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("invalid {flag}")),
                "{err}"
            );
        }
        let mut args = parse(&[]);
        args.member.cluster = "Us East".into();
        let err = SidecarConfig::from_args(args).unwrap_err();
        assert!(err.to_string().starts_with("invalid --cluster"), "{err}");
        assert!(try_parse(&["--request-timeout", "15 parsecs"]).is_err());
    }

    #[test]
    fn argv_round_trips_through_parsing() {
        let served = parse(&[
            "--service",
            "echo.demo",
            "--app",
            "127.0.0.1:8080",
            "--service-account",
            "echo",
            "--advertise",
            "10.0.0.7:15006",
            "--request-timeout",
            "1500ms",
            "--no-latency-weighting",
            "--cache-max-bytes",
            "1048576",
            "--max-inbound-connections",
            "10",
            "--idle-timeout",
            "90s",
            "--ready-file",
            "/run/echo-0.json",
        ]);
        for args in [served, parse(&[])] {
            let argv = std::iter::once("mesh".to_string()).chain(args.to_argv().into_vec());
            assert_eq!(Cli::try_parse_from(argv).unwrap().args, args);
        }
    }
}
