//! The iptables rules of the namespace faults, as pure data: which namespace, which chain, which
//! match. Added with `-A`, removed with `-D` of the same spec, tagged with the fault id so a
//! rule can always be traced to its fault.

use std::net::Ipv4Addr;

use crate::scenario::Direction;

/// One rule in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Namespace it lives in.
    pub ns: String,
    /// `INPUT` or `OUTPUT`.
    pub chain: &'static str,
    /// The match and target, after the chain.
    pub spec: Vec<String>,
}

impl Rule {
    fn argv(&self, op: &str) -> Vec<String> {
        let mut v: Vec<String> = [
            "ip", "netns", "exec", &self.ns, "iptables", "-w", op, self.chain,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(self.spec.iter().cloned());
        v
    }

    /// The command adding it.
    pub fn add_argv(&self) -> Vec<String> {
        self.argv("-A")
    }

    /// The command removing it.
    pub fn delete_argv(&self) -> Vec<String> {
        self.argv("-D")
    }
}

/// A cluster's namespace and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its namespace.
    pub ns: String,
    /// Its address.
    pub addr: Ipv4Addr,
}

fn spec(dir_flag: &str, peer: Ipv4Addr, share: Option<f64>, tag: &str) -> Vec<String> {
    let mut s = vec![dir_flag.to_string(), format!("{peer}/32")];
    if let Some(p) = share {
        s.extend(["-m", "statistic", "--mode", "random", "--probability"].map(String::from));
        s.push(format!("{p}"));
    }
    s.extend(["-m", "comment", "--comment"].map(String::from));
    s.push(format!("mesh-chaos:{tag}"));
    s.extend(["-j", "DROP"].map(String::from));
    s
}

/// Rules dropping packets between `a` and `b`: both ways, or only from `a` to `b`. Each drop is
/// installed on both ends, so one namespace missing its rule cannot let packets through.
pub(super) fn partition(a: &Endpoint, b: &Endpoint, direction: Direction, tag: &str) -> Vec<Rule> {
    let mut rules = vec![
        Rule {
            ns: a.ns.clone(),
            chain: "OUTPUT",
            spec: spec("-d", b.addr, None, tag),
        },
        Rule {
            ns: b.ns.clone(),
            chain: "INPUT",
            spec: spec("-s", a.addr, None, tag),
        },
    ];
    if direction == Direction::Both {
        rules.push(Rule {
            ns: b.ns.clone(),
            chain: "OUTPUT",
            spec: spec("-d", a.addr, None, tag),
        });
        rules.push(Rule {
            ns: a.ns.clone(),
            chain: "INPUT",
            spec: spec("-s", b.addr, None, tag),
        });
    }
    rules
}

/// Rules dropping `share` of the packets between `cluster` and each of `peers`, each way (the
/// load driver's traffic to the cluster is not touched: it plays the cluster's own app).
pub(super) fn wan_loss(cluster: &Endpoint, peers: &[Ipv4Addr], share: f64, tag: &str) -> Vec<Rule> {
    peers
        .iter()
        .flat_map(|p| {
            [
                Rule {
                    ns: cluster.ns.clone(),
                    chain: "OUTPUT",
                    spec: spec("-d", *p, Some(share), tag),
                },
                Rule {
                    ns: cluster.ns.clone(),
                    chain: "INPUT",
                    spec: spec("-s", *p, Some(share), tag),
                },
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ns: &str, last: u8) -> Endpoint {
        Endpoint {
            ns: ns.into(),
            addr: Ipv4Addr::new(10, 213, 7, last),
        }
    }

    #[test]
    fn a_two_way_partition_drops_both_directions_on_both_ends() {
        let rules = partition(&ep("a", 10), &ep("b", 11), Direction::Both, "p1");
        assert_eq!(rules.len(), 4);
        assert_eq!(
            rules[0].add_argv().join(" "),
            "ip netns exec a iptables -w -A OUTPUT -d 10.213.7.11/32 -m comment --comment mesh-chaos:p1 -j DROP"
        );
        assert_eq!(
            rules[1].delete_argv().join(" "),
            "ip netns exec b iptables -w -D INPUT -s 10.213.7.10/32 -m comment --comment mesh-chaos:p1 -j DROP"
        );
        assert!(rules.iter().any(|r| r.ns == "b" && r.chain == "OUTPUT"));
        assert!(rules.iter().any(|r| r.ns == "a" && r.chain == "INPUT"));
    }

    #[test]
    fn a_one_way_partition_only_drops_from_a_to_b() {
        let rules = partition(&ep("a", 10), &ep("b", 11), Direction::OneWay, "p2");
        assert_eq!(rules.len(), 2);
        assert!(
            rules.iter().all(
                |r| (r.ns == "a" && r.chain == "OUTPUT") || (r.ns == "b" && r.chain == "INPUT")
            )
        );
    }

    #[test]
    fn wan_loss_uses_the_statistic_match_per_peer_and_direction() {
        let rules = wan_loss(
            &ep("a", 10),
            &[Ipv4Addr::new(10, 213, 7, 11), Ipv4Addr::new(10, 213, 7, 12)],
            0.05,
            "l",
        );
        assert_eq!(rules.len(), 4);
        let cmd = rules[0].add_argv().join(" ");
        assert!(
            cmd.contains("-m statistic --mode random --probability 0.05")
                && cmd.contains("-d 10.213.7.11/32"),
            "{cmd}"
        );
        assert!(rules.iter().all(|r| r.ns == "a"));
    }
}
