//! What a planned process runs: the component's own typed arguments (the same types its
//! subcommand parses), rendered into a command line only when it is spawned. Addresses known
//! only once earlier processes are up (the controller's control port, a replica's app port) are
//! wired in at start time ([`Wire`]), and a restarted process keeps the listeners it bound the
//! first time ([`ComponentArgs::pin_listeners`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use mesh_core::api::ReadyFile;
use mesh_core::member_args::ClusterMemberArgs;
use mesh_federation::ControllerArgs;
use mesh_gateway::GatewayArgs;
use mesh_sidecar::SidecarArgs;

use crate::demo_app_args::DemoAppArgs;

/// The controller address a member is planned with before the controller has bound its port:
/// not dialable, so a member started without being wired fails its own check
/// (`invalid --controller`) instead of dialling something else.
pub const UNWIRED: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// The arguments of one process.
// A plan holds a few dozen of these, built once: boxing the controller's larger flags would
// save nothing that matters and make every plan site noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentArgs {
    /// `mesh controller`.
    Controller(ControllerArgs),
    /// `mesh gateway`.
    Gateway(GatewayArgs),
    /// `mesh sidecar`.
    Sidecar(SidecarArgs),
    /// `mesh demo-app`.
    DemoApp(DemoAppArgs),
    /// A program without an args type here (the benchmarks' helper servers): its words as
    /// given, never pinned.
    Other(Vec<String>),
}

/// An address a process takes from one started before it in the same cluster, filled in at
/// start time from that process's ready file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    /// `--controller`: the named process's `control` address.
    Controller(String),
    /// A sidecar's `--app`: the named process's `listen` address.
    App(String),
}

impl Wire {
    /// The process whose address this is, and the role it bound it under.
    pub fn source(&self) -> (&str, &'static str) {
        match self {
            Wire::Controller(process) => (process, "control"),
            Wire::App(process) => (process, "listen"),
        }
    }
}

impl ComponentArgs {
    /// The command line after the binary: the subcommand, then the flags.
    pub fn argv(&self) -> Vec<String> {
        let (subcommand, flags) = match self {
            ComponentArgs::Controller(a) => ("controller", a.to_argv()),
            ComponentArgs::Gateway(a) => ("gateway", a.to_argv()),
            ComponentArgs::Sidecar(a) => ("sidecar", a.to_argv()),
            ComponentArgs::DemoApp(a) => ("demo-app", a.to_argv()),
            ComponentArgs::Other(words) => return words.clone(),
        };
        std::iter::once(subcommand.to_string())
            .chain(flags.into_vec())
            .collect()
    }

    /// Where the process writes its ready file (an `Other` program gets `--ready-file`).
    pub fn set_ready_file(&mut self, path: PathBuf) {
        match self {
            ComponentArgs::Controller(a) => a.ready_file = Some(path),
            ComponentArgs::Gateway(GatewayArgs { member, .. })
            | ComponentArgs::Sidecar(SidecarArgs { member, .. }) => member.ready_file = Some(path),
            ComponentArgs::DemoApp(a) => a.ready_file = Some(path),
            ComponentArgs::Other(words) => {
                words.extend(["--ready-file".to_string(), path.display().to_string()]);
            }
        }
    }

    /// The flags a cluster member shares, for a sidecar or a gateway.
    pub fn member(&self) -> Option<&ClusterMemberArgs> {
        match self {
            ComponentArgs::Gateway(GatewayArgs { member, .. })
            | ComponentArgs::Sidecar(SidecarArgs { member, .. }) => Some(member),
            _ => None,
        }
    }

    /// The flags a cluster member shares, for a sidecar or a gateway.
    fn member_mut(&mut self) -> Option<&mut ClusterMemberArgs> {
        match self {
            ComponentArgs::Gateway(GatewayArgs { member, .. })
            | ComponentArgs::Sidecar(SidecarArgs { member, .. }) => Some(member),
            _ => None,
        }
    }

    /// Fills in `wire` with `addr`; false when this component has no such flag.
    pub fn wire(&mut self, wire: &Wire, addr: SocketAddr) -> bool {
        match (wire, self) {
            (Wire::Controller(_), this) => match this.member_mut() {
                Some(member) => {
                    member.controller = addr.into();
                    true
                }
                None => false,
            },
            (Wire::App(_), ComponentArgs::Sidecar(a)) => {
                a.app = Some(addr);
                true
            }
            (Wire::App(_), _) => false,
        }
    }

    /// Each listener's address by the role its ready file names it under.
    fn listeners_mut(&mut self) -> Vec<(&'static str, &mut SocketAddr)> {
        match self {
            ComponentArgs::Controller(a) => {
                let mut listeners = vec![
                    ("control", &mut a.control),
                    ("admin", &mut a.admin),
                    ("dns", &mut a.dns),
                ];
                // A MutatingWebhookConfiguration names the webhook's port in its URL.
                if let Some(webhook) = a.webhook.as_mut() {
                    listeners.push(("webhook", webhook));
                }
                listeners
            }
            ComponentArgs::Gateway(a) => vec![
                ("quic", &mut a.quic),
                ("tunnel", &mut a.tunnel),
                ("admin", &mut a.member.admin),
            ],
            ComponentArgs::Sidecar(a) => vec![
                ("inbound", &mut a.inbound),
                ("outbound", &mut a.outbound),
                ("admin", &mut a.member.admin),
            ],
            ComponentArgs::DemoApp(a) => vec![("listen", &mut a.listen), ("admin", &mut a.admin)],
            ComponentArgs::Other(_) => Vec::new(),
        }
    }

    /// Replaces every ephemeral (`:0`) listener with the address `ready` says it bound, so a
    /// restarted component comes back where its peers expect it.
    pub fn pin_listeners(&mut self, ready: &ReadyFile) {
        for (role, addr) in self.listeners_mut() {
            if addr.port() == 0
                && let Some(bound) = ready.addr(role)
            {
                *addr = bound;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn gateway() -> ComponentArgs {
        ComponentArgs::Gateway(GatewayArgs {
            member: ClusterMemberArgs {
                cluster: "us-east".into(),
                controller: UNWIRED.into(),
                ca_file: "/s/ca.crt".into(),
                token_file: "/s/join-token".into(),
                admin: "127.0.0.1:0".parse().unwrap(),
                ready_file: None,
            },
            quic: "127.0.0.1:0".parse().unwrap(),
            tunnel: "127.0.0.1:7000".parse().unwrap(),
            advertise_quic: None,
            advertise_tunnel: None,
            keep_alive: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(1500),
            renew_at: Default::default(),
        })
    }

    #[test]
    fn pinning_replaces_only_ephemeral_listeners_with_their_bound_addresses() {
        let mut args = gateway();
        args.pin_listeners(&ReadyFile {
            component: "gateway".into(),
            cluster: "us-east".into(),
            addrs: [
                ("quic".to_string(), "127.0.0.1:4001".parse().unwrap()),
                ("tunnel".to_string(), "127.0.0.1:7999".parse().unwrap()),
                ("admin".to_string(), "127.0.0.1:4002".parse().unwrap()),
            ]
            .into(),
            pid: 1,
        });
        let ComponentArgs::Gateway(g) = &args else {
            unreachable!()
        };
        assert_eq!(g.quic, "127.0.0.1:4001".parse().unwrap());
        assert_eq!(
            g.tunnel,
            "127.0.0.1:7000".parse().unwrap(),
            "a fixed port stays"
        );
        assert_eq!(g.member.admin, "127.0.0.1:4002".parse().unwrap());
    }

    #[test]
    fn a_controllers_webhook_is_pinned_too() {
        let mut controller = ControllerArgs::new("us-east", std::path::Path::new("/s"));
        controller.webhook = Some("127.0.0.1:0".parse().unwrap());
        let mut args = ComponentArgs::Controller(controller);
        args.pin_listeners(&ReadyFile {
            component: "controller".into(),
            cluster: "us-east".into(),
            addrs: [("webhook".to_string(), "127.0.0.1:4443".parse().unwrap())].into(),
            pid: 1,
        });
        let ComponentArgs::Controller(c) = &args else {
            unreachable!()
        };
        assert_eq!(c.webhook, Some("127.0.0.1:4443".parse().unwrap()));
    }

    #[test]
    fn wiring_fills_in_the_controller_and_the_app() {
        let control: SocketAddr = "127.0.0.1:7443".parse().unwrap();
        let mut args = gateway();
        assert!(args.wire(&Wire::Controller("controller".into()), control));
        assert!(
            !args.wire(&Wire::App("echo-0".into()), control),
            "a gateway has no app"
        );
        assert!(
            args.argv()
                .windows(2)
                .any(|w| w == ["--controller", "127.0.0.1:7443"])
        );
        assert_eq!(args.argv()[0], "gateway");
    }
}
