//! Cluster-sets in network namespaces: one namespace per cluster with its own address, each
//! joined by a veth pair to a bridge in a "WAN" namespace, so traffic between clusters really
//! crosses a network boundary where iptables can partition it or drop a share of it. The
//! runner (load driver, admin calls, impairment relays) reaches the clusters through one more
//! veth from the host namespace into the bridge.
//!
//! Everything is created under names carrying the runner's pid and removed by
//! [`NetTopology::teardown`], also from `Drop`; namespaces left by a runner that was killed are
//! removed by [`remove_stale`] at the next start. Nothing is ever installed in the host
//! namespace's iptables. Cluster namespaces have no default route: nothing in them can reach
//! beyond the bridge.

mod app;
mod rules;
mod shell;
mod topology;

use std::net::Ipv4Addr;

pub use app::{AppNamespace, AppNamespaces, INBOUND_PORT, OUTBOUND_PORT, PROXY_UID};
pub use rules::{Endpoint, Rule};
use shell::{argv, on_path, run};
pub use topology::{ClusterNet, NetTopology};

/// Prefix of every namespace the suite creates: `meshchaos-<pid>-<seq>-<role>`.
pub const NS_PREFIX: &str = "meshchaos-";
/// First two octets of the addresses: a /16 of the private range, one /24 per topology.
const NET: [u8; 2] = [10, 213];

/// Errors of namespace set-up and faults.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A command failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and stderr.
        message: String,
    },
    /// No free /24 for the topology.
    #[error("no free 10.213.x.0/24 subnet left on this host")]
    NoSubnet,
    /// A cluster that the topology does not have.
    #[error("no namespace for cluster {0}")]
    UnknownCluster(String),
    /// A route check failed: traffic to a cluster would not stay on the bridge.
    #[error(
        "traffic to {addr} would leave through `{route}` instead of the chaos bridge; refusing to run"
    )]
    Route {
        /// The cluster address.
        addr: Ipv4Addr,
        /// What `ip route get` said.
        route: String,
    },
}

/// Where the clusters of a run live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// Network namespaces (root).
    Namespaces,
    /// Loopback addresses; faults that need namespaces are not run.
    Loopback {
        /// Why not namespaces.
        reason: String,
    },
}

/// Decides whether namespaces can be used here: root, `ip` and `iptables` present, and a probe
/// namespace can be created and removed.
pub fn detect() -> NetworkMode {
    if !is_root() {
        return NetworkMode::Loopback {
            reason: "not running as root: network namespaces need root".into(),
        };
    }
    for tool in ["ip", "iptables"] {
        if !on_path(tool) {
            return NetworkMode::Loopback {
                reason: format!("`{tool}` is not installed (apt-get install iproute2 iptables)"),
            };
        }
    }
    let probe = format!("{NS_PREFIX}{}-probe", std::process::id());
    if let Err(e) = run(&argv(&["ip", "netns", "add", &probe])) {
        return NetworkMode::Loopback {
            reason: format!("cannot create a network namespace: {e}"),
        };
    }
    let cleanup = run(&argv(&["ip", "netns", "del", &probe]));
    if let Err(e) = cleanup {
        return NetworkMode::Loopback {
            reason: format!("cannot remove a network namespace: {e}"),
        };
    }
    NetworkMode::Namespaces
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Names of the suite's namespaces present now.
pub fn list_namespaces() -> Vec<String> {
    run(&argv(&["ip", "netns", "list"]))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(NS_PREFIX))
        .map(str::to_string)
        .collect()
}

/// The runner pid a namespace name belongs to.
fn owner_pid(ns: &str) -> Option<u32> {
    ns.strip_prefix(NS_PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes namespaces left by runners that no longer exist (killed before they could clean
/// up), killing the processes still inside them. Returns what was removed.
pub fn remove_stale() -> Vec<String> {
    let mut removed = Vec::new();
    for ns in list_namespaces() {
        let Some(pid) = owner_pid(&ns) else { continue };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        kill_inside(&ns);
        if run(&argv(&["ip", "netns", "del", &ns])).is_ok() {
            removed.push(ns);
        }
    }
    removed
}

/// SIGKILLs every process inside `ns` (only ever one of the suite's own namespaces).
pub(crate) fn kill_inside(ns: &str) {
    let pids = run(&argv(&["ip", "netns", "pids", ns])).unwrap_or_default();
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
    {
        let _ =
            mesh_launcher::cluster_set::send_signal(pid, mesh_launcher::cluster_set::Signal::Kill);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids_are_read_from_namespace_names() {
        assert_eq!(owner_pid("meshchaos-1234-0-wan"), Some(1234));
        assert_eq!(owner_pid("meshchaos-1234-probe"), Some(1234));
        assert_eq!(owner_pid("other-1234"), None);
        assert_eq!(owner_pid("meshchaos-x-0-c1"), None);
    }
}
