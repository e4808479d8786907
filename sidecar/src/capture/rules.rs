//! The capture rules, as data: which TCP connections of a workload's network namespace the
//! kernel redirects to its sidecar. Pure (no I/O), so every rule is unit-tested; `apply.rs`
//! hands them to iptables.
//!
//! Two chains of the `nat` table, owned by the mesh and rebuilt whole on every run (so running
//! `mesh init` twice leaves one copy of each rule):
//!
//! - `MESH_OUTPUT`, jumped to from `OUTPUT`: connections the workload opens go to the sidecar's
//!   outbound port, except the sidecar's own (by uid: it must reach the real destinations),
//!   loopback, and the excluded ports and CIDRs;
//! - `MESH_INBOUND`, jumped to from `PREROUTING`: connections arriving for the app's ports go to
//!   the sidecar's inbound port (mTLS from other sidecars and gateways).

use std::fmt::Write as _;
use std::net::IpAddr;

/// Chain of redirected outbound connections.
pub const OUTPUT_CHAIN: &str = "MESH_OUTPUT";
/// Chain of redirected inbound connections.
pub const INBOUND_CHAIN: &str = "MESH_INBOUND";

/// An IPv4 or IPv6 network, `addr/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network (expected e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = if len.is_empty() {
            max
        } else {
            len.parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?
        };
        Ok(Self { addr, len })
    }
}

impl Cidr {
    /// Whether `ip` is in this network (an IPv4 address is never in an IPv6 network).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturePlan {
    /// The sidecar's outbound (plain) port.
    pub outbound_port: u16,
    /// The sidecar's inbound (mTLS) port.
    pub inbound_port: u16,
    /// The uid the sidecar runs as: its own connections are never redirected.
    pub proxy_uid: u32,
    /// The app's ports whose inbound connections go to the sidecar; empty: none.
    pub app_ports: Vec<u16>,
    /// Destination ports never redirected outbound (e.g. the API server's).
    pub exclude_outbound_ports: Vec<u16>,
    /// Destination networks never redirected outbound.
    pub exclude_outbound_cidrs: Vec<Cidr>,
}

impl CapturePlan {
    /// The rules for `iptables-restore --noflush` (IPv4), or `ip6tables-restore` when `v6`:
    /// declaring the mesh's chains empties them, so the rules below are the whole content.
    pub fn restore_input(&self, v6: bool) -> String {
        let mut out = String::from("*nat\n");
        let _ = writeln!(out, ":{OUTPUT_CHAIN} - [0:0]");
        let _ = writeln!(out, ":{INBOUND_CHAIN} - [0:0]");
        for port in &self.app_ports {
            let _ = writeln!(
                out,
                "-A {INBOUND_CHAIN} -p tcp --dport {port} -j REDIRECT --to-ports {}",
                self.inbound_port
            );
        }
        let _ = writeln!(
            out,
            "-A {OUTPUT_CHAIN} -m owner --uid-owner {} -j RETURN",
            self.proxy_uid
        );
        let loopback = if v6 { "::1/128" } else { "127.0.0.0/8" };
        let _ = writeln!(out, "-A {OUTPUT_CHAIN} -d {loopback} -j RETURN");
        for cidr in &self.exclude_outbound_cidrs {
            if cidr.addr.is_ipv6() == v6 {
                let _ = writeln!(out, "-A {OUTPUT_CHAIN} -d {cidr} -j RETURN");
            }
        }
        for port in &self.exclude_outbound_ports {
            let _ = writeln!(out, "-A {OUTPUT_CHAIN} -p tcp --dport {port} -j RETURN");
        }
        let _ = writeln!(
            out,
            "-A {OUTPUT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
            self.outbound_port
        );
        out.push_str("COMMIT\n");
        out
    }
}

/// The jumps from the built-in chains into the mesh's, as `iptables -t nat` arguments after
/// `-A` / `-C` / `-D`.
pub(super) fn jumps() -> [[&'static str; 5]; 2] {
    [
        ["OUTPUT", "-p", "tcp", "-j", OUTPUT_CHAIN],
        ["PREROUTING", "-p", "tcp", "-j", INBOUND_CHAIN],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_only() {
        let net: Cidr = "240.240.0.0/16".parse().unwrap();
        assert!(net.contains("240.240.7.9".parse().unwrap()));
        assert!(!net.contains("240.241.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let host: Cidr = "fd00::1".parse().unwrap();
        assert!(host.contains("fd00::1".parse().unwrap()));
        assert!(!host.contains("fd00::2".parse().unwrap()));
    }

    fn plan() -> CapturePlan {
        CapturePlan {
            outbound_port: 15001,
            inbound_port: 15006,
            proxy_uid: 1337,
            app_ports: vec![8080],
            exclude_outbound_ports: vec![6443],
            exclude_outbound_cidrs: vec![
                "10.96.0.1/32".parse().unwrap(),
                "fd00::/8".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn outbound_goes_to_the_sidecar_except_its_own_loopback_and_exclusions() {
        let rules = plan().restore_input(false);
        let lines: Vec<&str> = rules.lines().collect();
        assert_eq!(
            lines,
            [
                "*nat",
                ":MESH_OUTPUT - [0:0]",
                ":MESH_INBOUND - [0:0]",
                "-A MESH_INBOUND -p tcp --dport 8080 -j REDIRECT --to-ports 15006",
                "-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN",
                "-A MESH_OUTPUT -d 127.0.0.0/8 -j RETURN",
                "-A MESH_OUTPUT -d 10.96.0.1/32 -j RETURN",
                "-A MESH_OUTPUT -p tcp --dport 6443 -j RETURN",
                "-A MESH_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
                "COMMIT",
            ]
        );
        // The sidecar's own connections are exempt before anything is redirected.
        let own = rules.find("--uid-owner").unwrap();
        let redirect = rules.find("--to-ports 15001").unwrap();
        assert!(own < redirect);
    }

    #[test]
    fn ipv6_rules_take_only_ipv6_exclusions() {
        let rules = plan().restore_input(true);
        assert!(rules.contains("-d ::1/128 -j RETURN"));
        assert!(rules.contains("-d fd00::/8 -j RETURN"));
        assert!(!rules.contains("10.96.0.1"));
    }

    #[test]
    fn networks_parse_with_a_checked_prefix() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "192.0.2.1".parse::<Cidr>().unwrap().to_string(),
            "192.0.2.1/32"
        );
        assert!(
            "10.0.0.0/33"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("0 to 32")
        );
        assert!(
            "ten/8"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("not an IP network")
        );
    }
}
