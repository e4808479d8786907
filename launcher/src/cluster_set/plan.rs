//! The plan of a cluster-set: which processes each cluster has, in start order, with their
//! command lines and where they run. Nothing here starts anything (see `supervisor.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use mesh_core::config::Topology;

use super::{Cluster, ClusterSet, Process};
use crate::ca::JOIN_TOKEN_FILE;

/// The service every demo cluster runs.
pub const DEMO_SERVICE: &str = "echo.demo";

pub(super) fn s(v: impl ToString) -> String {
    v.to_string()
}

/// Where a cluster's processes run: the address their listeners bind, and a command prefix that
/// places them (e.g. `ip netns exec mesh-us-east` for the chaos suite's network namespaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Address every listener of the cluster binds (port 0 unless the topology fixes one).
    pub bind_ip: std::net::IpAddr,
    /// Program and arguments to run `mesh` under; empty to run it directly.
    pub exec_prefix: Vec<String>,
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            bind_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            exec_prefix: Vec::new(),
        }
    }
}

impl ClusterSet {
    /// Plans the processes of every cluster on loopback (nothing runs yet).
    pub fn plan(topology: &Topology, state_dir: &Path, mesh_bin: &Path) -> Self {
        Self::plan_placed(topology, state_dir, mesh_bin, &BTreeMap::new())
    }

    /// Plans the processes of every cluster, each placed as `placements` says (loopback for
    /// clusters it does not name).
    pub fn plan_placed(
        topology: &Topology,
        state_dir: &Path,
        mesh_bin: &Path,
        placements: &BTreeMap<String, Placement>,
    ) -> Self {
        let clusters = topology
            .clusters
            .iter()
            .map(|spec| Cluster {
                spec: spec.clone(),
                processes: Vec::new(),
            })
            .collect();
        let mut set = Self {
            state_dir: state_dir.to_path_buf(),
            mesh_bin: mesh_bin.to_path_buf(),
            clusters,
        };
        let grace = humantime::format_duration(topology.lease_grace).to_string();
        for i in 0..set.clusters.len() {
            let spec = set.clusters[i].spec.clone();
            let placement = placements.get(&spec.name).cloned().unwrap_or_default();
            let any = format!("{}:0", placement.bind_ip);
            let any = any.as_str();
            let dir = set.state_dir.join(&spec.name);
            let mut add = |name: &str, argv: Vec<String>| {
                let process = Process {
                    label: format!("{}/{name}", spec.name),
                    exec_prefix: placement.exec_prefix.clone(),
                    argv,
                    log: set
                        .state_dir
                        .join("logs")
                        .join(&spec.name)
                        .join(format!("{name}.log")),
                    ready_path: dir.join("run").join(format!("{name}.json")),
                    child: None,
                    ready: None,
                };
                set.clusters[i].processes.push((name.to_string(), process));
            };
            let mut controller = vec![
                s("controller"),
                s("--cluster"),
                s(&spec.name),
                s("--region"),
                s(&spec.region),
                s("--state-dir"),
                s(dir.display()),
                s("--lease-grace"),
                s(&grace),
                s("--control"),
                s(any),
                s("--admin"),
                s(any),
            ];
            if !spec.region_priority.is_empty() {
                controller.extend([s("--region-priority"), spec.region_priority.join(",")]);
            }
            add("controller", controller);
            add(
                "gateway",
                vec![
                    s("gateway"),
                    s("--cluster"),
                    s(&spec.name),
                    s("--quic"),
                    s(any),
                    s("--tunnel"),
                    s(any),
                    s("--admin"),
                    s(any),
                ],
            );
            for r in 0..spec.echo_replicas {
                let replica = format!("echo-{r}");
                add(
                    &replica,
                    vec![
                        s("demo-app"),
                        s("--cluster"),
                        s(&spec.name),
                        s("--replica"),
                        s(&replica),
                        s("--listen"),
                        s(any),
                        s("--admin"),
                        s(any),
                    ],
                );
                add(
                    &format!("sidecar-{replica}"),
                    vec![
                        s("sidecar"),
                        s("--cluster"),
                        s(&spec.name),
                        s("--id"),
                        s(&replica),
                        s("--service"),
                        s(DEMO_SERVICE),
                        s("--service-account"),
                        s("echo"),
                        s("--inbound"),
                        s(any),
                        s("--outbound"),
                        s(any),
                        s("--admin"),
                        s(any),
                    ],
                );
            }
            let client_port = spec.client_port.unwrap_or(0);
            add(
                "client",
                vec![
                    s("sidecar"),
                    s("--cluster"),
                    s(&spec.name),
                    s("--id"),
                    s("client"),
                    s("--service-account"),
                    s("client"),
                    s("--outbound"),
                    format!("{}:{client_port}", placement.bind_ip),
                    s("--admin"),
                    s(any),
                ],
            );
            for (name, p) in &mut set.clusters[i].processes {
                p.argv
                    .extend([s("--ready-file"), s(p.ready_path.display())]);
                if name != "controller" && !name.starts_with("echo-") {
                    p.argv.extend([
                        s("--ca-file"),
                        s(dir.join("ca.crt").display()),
                        s("--token-file"),
                        s(dir.join(JOIN_TOKEN_FILE).display()),
                    ]);
                }
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use mesh_core::config::Topology;

    use super::*;

    #[test]
    fn plan_starts_each_cluster_controller_first_and_client_last_with_credentials() {
        let set = ClusterSet::plan(
            &Topology::default_set(),
            Path::new("/state"),
            Path::new("/bin/mesh"),
        );
        assert_eq!(set.clusters.len(), 3);
        let east = &set.clusters[0];
        let names: Vec<&str> = east.processes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "controller",
                "gateway",
                "echo-0",
                "sidecar-echo-0",
                "echo-1",
                "sidecar-echo-1",
                "client"
            ]
        );
        let argv = |name: &str| east.process(name).unwrap().argv.join(" ");
        assert!(
            argv("controller").contains("--region-priority us-west,eu-central"),
            "{}",
            argv("controller")
        );
        assert!(argv("controller").contains("--lease-grace 30s"));
        assert!(argv("client").contains("--outbound 127.0.0.1:15001"));
        assert!(argv("gateway").contains("--token-file /state/us-east/join-token"));
        assert!(
            !argv("echo-0").contains("--token-file"),
            "the demo app needs no credentials"
        );
        for (name, p) in &east.processes {
            assert!(
                p.argv
                    .windows(2)
                    .any(|w| w[0] == "--cluster" && w[1] == "us-east"),
                "{name} shows its cluster"
            );
            assert!(p.argv.iter().any(|a| a == "--ready-file"), "{name}");
        }
    }
}
