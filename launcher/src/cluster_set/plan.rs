//! The plan of a cluster-set: which processes each cluster has, in start order, with their
//! command lines and where they run. Nothing here starts anything (see `supervisor.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use mesh_core::config::Topology;
use mesh_core::identity::CA_CERT_FILE;
use mesh_core::member_args::ClusterMemberArgs;
use mesh_core::names::ServiceKey;
use mesh_federation::ControllerArgs;
use mesh_gateway::GatewayArgs;
use mesh_sidecar::SidecarArgs;

use super::component::{ComponentArgs, UNWIRED, Wire};
use super::{Cluster, ClusterSet, Process};
use crate::ca::JOIN_TOKEN_FILE;
use crate::demo_app_args::DemoAppArgs;

/// The service every demo cluster runs.
pub const DEMO_SERVICE: &str = "echo.demo";

/// Where a cluster's processes run: the address their listeners bind, and a command prefix that
/// places them (e.g. `ip netns exec mesh-us-east` for the chaos suite's network namespaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Address every listener of the cluster binds (port 0 unless the topology fixes one).
    pub bind_ip: std::net::IpAddr,
    /// Program and arguments to run `mesh` under; empty to run it directly.
    pub exec_prefix: Vec<String>,
    /// The controller's DNS address, when not `<bind_ip>:0` (an app namespace's resolver must
    /// be on port 53).
    pub dns: Option<SocketAddr>,
    /// Where the client sidecar runs instead, when it has a place of its own (an app network
    /// namespace with capture: `mesh up --transparent`).
    pub client: Option<ClientPlacement>,
}

/// The client sidecar's own place: a network namespace where capture sends the app's
/// connections to it, as another user than the launcher's (the one capture exempts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPlacement {
    /// Program and arguments that enter the namespace and take the user.
    pub exec_prefix: Vec<String>,
    /// Address its admin listener binds (reachable from the launcher).
    pub admin_ip: std::net::IpAddr,
    /// Its outbound listener, where capture redirects the app's connections.
    pub outbound: SocketAddr,
    /// The uid it runs as when not the launcher's: its credentials and ready file directory
    /// are handed to it.
    pub uid: Option<u32>,
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            bind_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            exec_prefix: Vec::new(),
            dns: None,
            client: None,
        }
    }
}

impl ClusterSet {
    /// Gives every cluster's controller the traffic policy `files` (each cluster reads the
    /// same files, as each Kubernetes cluster would hold the same objects).
    pub fn set_policy_files(&mut self, files: &[std::path::PathBuf]) {
        for cluster in &mut self.clusters {
            for (_, process) in &mut cluster.processes {
                if let ComponentArgs::Controller(args) = &mut process.args {
                    args.policy_files = files.to_vec();
                }
            }
        }
    }

    /// Gives every cluster's controller the certificate lifetime `ttl` (`--cert-ttl`): every
    /// component of the cluster renews at 2/3 of it (tests of rotation use 30 s).
    pub fn set_cert_ttl(&mut self, ttl: std::time::Duration) {
        for cluster in &mut self.clusters {
            for (_, process) in &mut cluster.processes {
                if let ComponentArgs::Controller(args) = &mut process.args {
                    args.cert_ttl = ttl;
                }
            }
        }
    }

    /// Adds `replicas` demo app replicas serving `service` (each with its sidecar) to the plan
    /// of `cluster`, on loopback: a second service for routing between services (canaries,
    /// splits). False when the plan has no such cluster.
    pub fn add_demo_service(&mut self, cluster: &str, service: &ServiceKey, replicas: u32) -> bool {
        let Some(i) = self.clusters.iter().position(|c| c.spec.name == cluster) else {
            return false;
        };
        let any = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), 0);
        let dir = self.state_dir.join(cluster);
        let member = ClusterMemberArgs {
            cluster: cluster.to_string(),
            controller: UNWIRED.into(),
            ca_file: dir.join(CA_CERT_FILE),
            token_file: dir.join(JOIN_TOKEN_FILE),
            admin: any,
            ready_file: None,
        };
        for (name, args, wiring) in demo_replicas(cluster, service, replicas, &member, any) {
            let process = self.planned_process(cluster, &name, args, wiring);
            self.clusters[i].processes.push((name, process));
        }
        true
    }

    /// The process `name` of `cluster` with its ready file and log in the state directory.
    fn planned_process(
        &self,
        cluster: &str,
        name: &str,
        mut args: ComponentArgs,
        wiring: Vec<Wire>,
    ) -> Process {
        let ready_path = self
            .state_dir
            .join(cluster)
            .join("run")
            .join(format!("{name}.json"));
        args.set_ready_file(ready_path.clone());
        let log = self
            .state_dir
            .join("logs")
            .join(cluster)
            .join(format!("{name}.log"));
        let mut process = Process::new(format!("{cluster}/{name}"), args, log, ready_path);
        process.wiring = wiring;
        process
    }

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
        for i in 0..set.clusters.len() {
            let spec = set.clusters[i].spec.clone();
            let placement = placements.get(&spec.name).cloned().unwrap_or_default();
            let any = SocketAddr::new(placement.bind_ip, 0);
            let dir = set.state_dir.join(&spec.name);
            let member = ClusterMemberArgs {
                cluster: spec.name.clone(),
                controller: UNWIRED.into(),
                ca_file: dir.join(CA_CERT_FILE),
                token_file: dir.join(JOIN_TOKEN_FILE),
                admin: any,
                ready_file: None,
            };
            let to_controller = Wire::Controller("controller".into());
            let mut add = |name: &str, args: ComponentArgs, wiring: Vec<Wire>| {
                let mut process = set.planned_process(&spec.name, name, args, wiring);
                process.exec_prefix = placement.exec_prefix.clone();
                set.clusters[i].processes.push((name.to_string(), process));
            };
            add(
                "controller",
                ComponentArgs::Controller(ControllerArgs {
                    region: Some(spec.region.clone()),
                    control: any,
                    admin: any,
                    dns: placement.dns.unwrap_or(any),
                    region_priority: spec.region_priority.clone(),
                    lease_grace: topology.lease_grace,
                    ..ControllerArgs::new(&spec.name, &dir)
                }),
                Vec::new(),
            );
            add(
                "gateway",
                ComponentArgs::Gateway(GatewayArgs {
                    quic: any,
                    tunnel: any,
                    ..GatewayArgs::new(member.clone())
                }),
                vec![to_controller.clone()],
            );
            let echo: ServiceKey = DEMO_SERVICE.parse().expect("the demo service is valid");
            for (name, args, wiring) in
                demo_replicas(&spec.name, &echo, spec.echo_replicas, &member, any)
            {
                add(&name, args, wiring);
            }
            let client = match &placement.client {
                None => SidecarArgs {
                    service_account: Some("client".into()),
                    outbound: SocketAddr::new(placement.bind_ip, spec.client_port.unwrap_or(0)),
                    ..SidecarArgs::new(member.clone(), "client")
                },
                Some(own) => SidecarArgs {
                    service_account: Some("client".into()),
                    outbound: own.outbound,
                    ..SidecarArgs::new(
                        ClusterMemberArgs {
                            admin: SocketAddr::new(own.admin_ip, 0),
                            ..member.clone()
                        },
                        "client",
                    )
                },
            };
            add(
                "client",
                ComponentArgs::Sidecar(client),
                vec![to_controller.clone()],
            );
            if let Some(own) = &placement.client
                && let Some((_, client)) = set.clusters[i].processes.last_mut()
            {
                client.exec_prefix = own.exec_prefix.clone();
                client.owner = own.uid;
            }
        }
        set
    }
}

/// The processes of `replicas` demo replicas of `service` in `cluster`: each app (named
/// `<service name>-<n>`) and its sidecar (`sidecar-<app>`), wired to the controller and the app.
fn demo_replicas(
    cluster: &str,
    service: &ServiceKey,
    replicas: u32,
    member: &ClusterMemberArgs,
    any: SocketAddr,
) -> Vec<(String, ComponentArgs, Vec<Wire>)> {
    let mut out = Vec::new();
    for r in 0..replicas {
        let replica = format!("{}-{r}", service.name);
        out.push((
            replica.clone(),
            ComponentArgs::DemoApp(DemoAppArgs {
                cluster: cluster.to_string(),
                replica: replica.clone(),
                listen: any,
                admin: any,
                ready_file: None,
            }),
            Vec::new(),
        ));
        out.push((
            format!("sidecar-{replica}"),
            ComponentArgs::Sidecar(SidecarArgs {
                service: Some(service.clone()),
                service_account: Some(service.name.clone()),
                inbound: any,
                outbound: any,
                ..SidecarArgs::new(member.clone(), &replica)
            }),
            vec![Wire::Controller("controller".into()), Wire::App(replica)],
        ));
    }
    out
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
        let argv = |name: &str| east.process(name).unwrap().args.argv().join(" ");
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
            let argv = p.args.argv();
            assert!(
                argv.windows(2)
                    .any(|w| w[0] == "--cluster" && w[1] == "us-east"),
                "{name} shows its cluster"
            );
            assert!(argv.iter().any(|a| a == "--ready-file"), "{name}");
        }
    }
}
