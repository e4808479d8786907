//! The namespaces, veths, bridge and addresses of one run, and the iptables rules of its
//! namespace faults.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use mesh_launcher::cluster_set::{ClientPlacement, Placement};

use super::rules::{self, Endpoint, Rule};
use super::shell::{argv, run};
use super::{NET, NS_PREFIX, NetError, kill_inside, list_namespaces};
use crate::scenario::Direction;

/// The mesh's default VIP range (`mesh controller --vip-range`).
const VIP_RANGE: &str = "240.240.0.0/16";

/// One cluster's network place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNet {
    /// Its namespace.
    pub ns: String,
    /// Its address on the bridge.
    pub addr: Ipv4Addr,
}

/// The namespaces, links and addresses of one run.
#[derive(Debug)]
pub struct NetTopology {
    tag: String,
    wan_ns: String,
    host_if: String,
    host_addr: Ipv4Addr,
    clusters: BTreeMap<String, ClusterNet>,
    active: BTreeMap<String, Vec<Rule>>,
    torn_down: bool,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn free_subnet() -> Result<u8, NetError> {
    let used = run(&argv(&["ip", "-4", "-o", "addr", "show"])).unwrap_or_default()
        + &run(&argv(&["ip", "-4", "route", "show"])).unwrap_or_default();
    let start = (std::process::id() % 200) as u8;
    (0..250u16)
        .map(|i| ((u16::from(start) + i) % 250) as u8 + 1)
        .find(|k| !used.contains(&format!("{}.{}.{k}.", NET[0], NET[1])))
        .ok_or(NetError::NoSubnet)
}

impl NetTopology {
    /// Creates the namespaces for `clusters` (in order) and checks that their addresses route
    /// through the bridge. On failure everything created so far is removed.
    pub fn create(clusters: &[String]) -> Result<Self, NetError> {
        let pid = std::process::id();
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let k = free_subnet()?;
        let base = format!("{NS_PREFIX}{pid}-{seq}");
        // Interface names are limited to 15 bytes: a short tag of pid and sequence.
        let tag = format!("mc{pid:x}{}", seq % 36);
        let mut topo = Self {
            tag: tag.clone(),
            wan_ns: format!("{base}-wan"),
            host_if: format!("{tag}h"),
            host_addr: Ipv4Addr::new(NET[0], NET[1], k, 1),
            clusters: clusters
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let net = ClusterNet {
                        ns: format!("{base}-c{i}"),
                        addr: Ipv4Addr::new(NET[0], NET[1], k, 10 + i as u8),
                    };
                    (c.clone(), net)
                })
                .collect(),
            active: BTreeMap::new(),
            torn_down: false,
        };
        if let Err(e) = topo.build(clusters) {
            topo.teardown();
            return Err(e);
        }
        Ok(topo)
    }

    fn build(&self, order: &[String]) -> Result<(), NetError> {
        let w = self.wan_ns.as_str();
        let cmds: Vec<Vec<String>> = vec![
            argv(&["ip", "netns", "add", w]),
            argv(&["ip", "-n", w, "link", "set", "lo", "up"]),
            argv(&["ip", "-n", w, "link", "add", "br0", "type", "bridge"]),
            argv(&["ip", "-n", w, "link", "set", "br0", "up"]),
        ];
        for c in cmds {
            run(&c)?;
        }
        let host_peer = format!("{}w", self.host_if);
        self.join_bridge(&self.host_if, &host_peer)?;
        run(&argv(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", self.host_addr),
            "dev",
            &self.host_if,
        ]))?;
        run(&argv(&["ip", "link", "set", &self.host_if, "up"]))?;
        for (i, name) in order.iter().enumerate() {
            let c = self
                .clusters
                .get(name)
                .ok_or_else(|| NetError::UnknownCluster(name.clone()))?;
            let inner = format!("{}c{i}", self.tag);
            let outer = format!("{}c{i}w", self.tag);
            run(&argv(&["ip", "netns", "add", &c.ns]))?;
            run(&argv(&["ip", "-n", &c.ns, "link", "set", "lo", "up"]))?;
            self.join_bridge(&inner, &outer)?;
            run(&argv(&["ip", "link", "set", &inner, "netns", &c.ns]))?;
            run(&argv(&[
                "ip",
                "-n",
                &c.ns,
                "addr",
                "add",
                &format!("{}/24", c.addr),
                "dev",
                &inner,
            ]))?;
            run(&argv(&["ip", "-n", &c.ns, "link", "set", &inner, "up"]))?;
        }
        for c in self.clusters.values() {
            let route = run(&argv(&["ip", "route", "get", &c.addr.to_string()]))?;
            if !route.contains(&format!("dev {} ", self.host_if)) {
                return Err(NetError::Route {
                    addr: c.addr,
                    route: route.trim().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Creates a veth pair `near`/`far` and plugs `far` into the WAN bridge.
    fn join_bridge(&self, near: &str, far: &str) -> Result<(), NetError> {
        let w = self.wan_ns.as_str();
        run(&argv(&[
            "ip", "link", "add", near, "type", "veth", "peer", "name", far,
        ]))?;
        run(&argv(&["ip", "link", "set", far, "netns", w]))?;
        run(&argv(&["ip", "-n", w, "link", "set", far, "master", "br0"]))?;
        run(&argv(&["ip", "-n", w, "link", "set", far, "up"]))?;
        Ok(())
    }

    /// Where a cluster's processes run.
    pub fn placement(&self, cluster: &str) -> Option<Placement> {
        let c = self.clusters.get(cluster)?;
        Some(Placement {
            bind_ip: IpAddr::V4(c.addr),
            exec_prefix: argv(&["ip", "netns", "exec", &c.ns]),
            ..Placement::default()
        })
    }

    /// The namespace of `cluster`.
    pub fn cluster(&self, cluster: &str) -> Option<&ClusterNet> {
        self.clusters.get(cluster)
    }

    /// Placement of a cluster whose client sidecar takes captured connections: it listens on
    /// every address of its namespace (capture redirects to loopback), as the launcher's user.
    pub fn placement_capturing(&self, cluster: &str) -> Option<Placement> {
        let mut placement = self.placement(cluster)?;
        placement.client = Some(ClientPlacement {
            exec_prefix: placement.exec_prefix.clone(),
            admin_ip: placement.bind_ip,
            outbound: SocketAddr::from(([0, 0, 0, 0], 0)),
            uid: None,
        });
        Some(placement)
    }

    /// Sets up capture (`mesh_bin init`) in `cluster`'s namespace for an app there: its TCP goes
    /// to the client sidecar's outbound port `outbound_port`, except to the suite's own
    /// addresses (the cluster's processes share the namespace and reach each other directly).
    pub fn capture_in(
        &self,
        cluster: &str,
        mesh_bin: &std::path::Path,
        outbound_port: u16,
    ) -> Result<(), NetError> {
        let c = self
            .clusters
            .get(cluster)
            .ok_or_else(|| NetError::UnknownCluster(cluster.to_string()))?;
        let suite = format!("{}.{}.0.0/16", NET[0], NET[1]);
        // Cluster namespaces have no default route; connecting to a VIP needs a route before
        // capture redirects it to the sidecar on loopback.
        run(&argv(&[
            "ip", "-n", &c.ns, "route", "add", VIP_RANGE, "dev", "lo",
        ]))?;
        let bin = mesh_bin.display().to_string();
        let port = outbound_port.to_string();
        run(&argv(&[
            "ip",
            "netns",
            "exec",
            &c.ns,
            &bin,
            "init",
            "--outbound-port",
            &port,
            "--exclude-outbound-cidrs",
            &suite,
        ]))
        .map(|_| ())
    }

    /// Placements of every cluster, for the launcher.
    pub fn placements(&self) -> BTreeMap<String, Placement> {
        self.clusters
            .keys()
            .filter_map(|c| Some((c.clone(), self.placement(c)?)))
            .collect()
    }

    /// The host side's address on the bridge (where relays listen).
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// The namespaces of this run.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.clusters.values().map(|c| c.ns.clone()).collect();
        v.push(self.wan_ns.clone());
        v
    }

    fn endpoint(&self, cluster: &str) -> Result<Endpoint, NetError> {
        let c = self
            .clusters
            .get(cluster)
            .ok_or_else(|| NetError::UnknownCluster(cluster.to_string()))?;
        Ok(Endpoint {
            ns: c.ns.clone(),
            addr: c.addr,
        })
    }

    fn install(&mut self, id: &str, rules: Vec<Rule>) -> Result<(), NetError> {
        for (i, r) in rules.iter().enumerate() {
            if let Err(e) = run(&r.add_argv()) {
                for done in &rules[..i] {
                    let _ = run(&done.delete_argv());
                }
                return Err(e);
            }
        }
        self.active.insert(id.to_string(), rules);
        Ok(())
    }

    /// Partitions two clusters (fault `id`).
    pub fn partition(
        &mut self,
        id: &str,
        a: &str,
        b: &str,
        direction: Direction,
    ) -> Result<(), NetError> {
        let rules = rules::partition(&self.endpoint(a)?, &self.endpoint(b)?, direction, id);
        self.install(id, rules)
    }

    /// Drops `share` of a cluster's packets to and from the other clusters (fault `id`).
    pub fn wan_loss(&mut self, id: &str, cluster: &str, share: f64) -> Result<(), NetError> {
        let ep = self.endpoint(cluster)?;
        let peers: Vec<Ipv4Addr> = self
            .clusters
            .iter()
            .filter(|(n, _)| *n != cluster)
            .map(|(_, c)| c.addr)
            .collect();
        self.install(id, rules::wan_loss(&ep, &peers, share, id))
    }

    /// Removes the rules of fault `id`.
    pub fn heal(&mut self, id: &str) -> Result<(), NetError> {
        let mut first_err = None;
        for r in self.active.remove(id).unwrap_or_default() {
            if let Err(e) = run(&r.delete_argv()) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Removes every namespace (their veths, addresses and iptables rules go with them),
    /// killing any process still inside. Idempotent.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        self.active.clear();
        for ns in self.namespaces() {
            if list_namespaces().contains(&ns) {
                kill_inside(&ns);
                if let Err(e) = run(&argv(&["ip", "netns", "del", &ns])) {
                    tracing::warn!(namespace = %ns, error = %e, "could not remove a namespace");
                }
            }
        }
        // The host veth goes with its peer in the WAN namespace; remove it if it lingers.
        if link_exists(&self.host_if) {
            let _ = run(&argv(&["ip", "link", "del", &self.host_if]));
        }
    }

    /// What of this run is still present: namespaces and host links.
    pub fn leftovers(&self) -> Vec<String> {
        let present = list_namespaces();
        let mut left: Vec<String> = self
            .namespaces()
            .into_iter()
            .filter(|n| present.contains(n))
            .map(|n| format!("namespace {n}"))
            .collect();
        if link_exists(&self.host_if) {
            left.push(format!("link {}", self.host_if));
        }
        left
    }
}

fn link_exists(name: &str) -> bool {
    run(&argv(&["ip", "link", "show", "dev", name])).is_ok()
}

impl Drop for NetTopology {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::{NetworkMode, detect};

    /// Real namespaces: runs only where they can be made (root); says so when skipped.
    #[test]
    fn namespaces_are_created_joined_partitioned_and_torn_down() {
        if let NetworkMode::Loopback { reason } = detect() {
            eprintln!("SKIPPED namespaces_are_created_joined_partitioned_and_torn_down: {reason}");
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root and must not skip: {reason}"
            );
            return;
        }
        let mut t = NetTopology::create(&["a".into(), "b".into()]).unwrap();
        let (a, b) = (t.clusters["a"].clone(), t.clusters["b"].clone());
        // A TCP connect to a closed port: refused (RST) when reachable, silent when dropped.
        let reachable = |from: &str, to: Ipv4Addr| {
            let script = format!("exec 3<>/dev/tcp/{to}/9");
            match run(&argv(&[
                "ip", "netns", "exec", from, "timeout", "2", "bash", "-c", &script,
            ])) {
                Ok(_) => true,
                Err(e) => e.to_string().contains("refused"),
            }
        };
        assert!(
            reachable(&a.ns, b.addr),
            "clusters reach each other over the bridge"
        );
        t.partition("p", "a", "b", Direction::OneWay).unwrap();
        assert!(!reachable(&a.ns, b.addr), "a to b is dropped");
        t.heal("p").unwrap();
        assert!(reachable(&a.ns, b.addr), "healed");
        assert!(reachable(&b.ns, a.addr));
        t.partition("p2", "a", "b", Direction::Both).unwrap();
        assert!(!reachable(&b.ns, a.addr), "b to a is dropped too");
        t.wan_loss("l", "a", 0.5).unwrap();
        let rules = run(&argv(&["ip", "netns", "exec", &a.ns, "iptables", "-S"])).unwrap();
        assert!(
            rules.contains("mesh-chaos:l") && rules.contains("statistic"),
            "{rules}"
        );
        t.teardown();
        assert!(t.leftovers().is_empty(), "{:?}", t.leftovers());
    }
}
