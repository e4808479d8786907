//! Runs a whole cluster-set as local processes: per cluster a controller, a gateway, the `echo`
//! demo replicas each behind a sidecar, and a client sidecar; links every pair of clusters and
//! waits until traffic can flow everywhere. `mesh up` and the end-to-end tests both use it, and
//! individual components can be killed, frozen and restarted to cause real failures.

mod manifest;
mod process;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_core::api::{ControllerStatus, PATH_STATUS};
use mesh_core::config::{ClusterSpec, Topology};

pub use manifest::{Manifest, ManifestCluster, ManifestProcess, read_manifest};
pub use process::{Process, Signal, log_tail, send_signal};

use crate::admin_client;
use crate::ca::{JOIN_TOKEN_FILE, ensure_cluster_ca};
use crate::link::link_pair;

/// The service every demo cluster runs.
pub const DEMO_SERVICE: &str = "echo.demo";
/// File in the state directory describing a running cluster-set.
pub const MANIFEST_FILE: &str = "up.json";

/// Errors starting or driving a cluster-set.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A file or directory problem.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The binary could not be started.
    #[error("starting {component}: {reason}")]
    Spawn {
        /// The component.
        component: String,
        /// Why.
        reason: String,
    },
    /// A component exited before it was ready.
    #[error("{component} exited ({status}) before it was ready; its log {log} ends with:\n{tail}")]
    Exited {
        /// The component.
        component: String,
        /// Exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// A component did not become ready in time.
    #[error("{component} was not ready after {waited:?}; its log {log} ends with:\n{tail}")]
    NotReady {
        /// The component.
        component: String,
        /// How long we waited.
        waited: Duration,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// CA material could not be made.
    #[error(transparent)]
    Ca(#[from] crate::ca::CaCommandError),
    /// Linking failed.
    #[error("linking {a} and {b}: {reason}")]
    Link {
        /// One cluster.
        a: String,
        /// The other.
        b: String,
        /// Why.
        reason: String,
    },
    /// The mesh did not converge.
    #[error("the cluster-set was not ready after {0:?}: {1}")]
    NotConverged(Duration, String),
    /// No such component.
    #[error("no component {0}")]
    NoSuchComponent(String),
}

impl LaunchError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        LaunchError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// One cluster's processes, in start order.
#[derive(Debug)]
pub struct Cluster {
    /// Its spec from the topology.
    pub spec: ClusterSpec,
    /// Its processes by name (`controller`, `gateway`, `echo-0`, `sidecar-echo-0`, `client`).
    pub processes: Vec<(String, Process)>,
}

impl Cluster {
    fn process(&self, name: &str) -> Option<&Process> {
        self.processes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    }

    fn process_mut(&mut self, name: &str) -> Option<&mut Process> {
        self.processes
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    }

    fn addr(&self, process: &str, role: &str) -> Option<SocketAddr> {
        self.process(process)?.ready.as_ref()?.addr(role)
    }

    /// The controller's admin address.
    pub fn controller_admin(&self) -> Option<SocketAddr> {
        self.addr("controller", "admin")
    }

    /// The client sidecar's HTTP proxy address.
    pub fn client_proxy(&self) -> Option<SocketAddr> {
        self.addr("client", "outbound")
    }
}

/// A running cluster-set.
#[derive(Debug)]
pub struct ClusterSet {
    state_dir: PathBuf,
    mesh_bin: PathBuf,
    /// The clusters, in topology order.
    pub clusters: Vec<Cluster>,
}

fn s(v: impl ToString) -> String {
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

    /// Starts every process, cluster by cluster, links all pairs and waits for convergence.
    pub async fn start(
        topology: &Topology,
        state_dir: &Path,
        mesh_bin: &Path,
    ) -> Result<Self, LaunchError> {
        Self::start_placed(topology, state_dir, mesh_bin, &BTreeMap::new()).await
    }

    /// Like [`start`](Self::start), with each cluster placed as `placements` says.
    pub async fn start_placed(
        topology: &Topology,
        state_dir: &Path,
        mesh_bin: &Path,
        placements: &BTreeMap<String, Placement>,
    ) -> Result<Self, LaunchError> {
        let mut set = Self::plan_placed(topology, state_dir, mesh_bin, placements);
        if let Err(e) = set.start_processes().await {
            set.stop().await;
            return Err(e);
        }
        let ready = async {
            set.link_all().await?;
            set.wait_converged(Duration::from_secs(60)).await
        };
        if let Err(e) = ready.await {
            set.stop().await;
            return Err(e);
        }
        set.write_manifest()?;
        Ok(set)
    }

    async fn start_processes(&mut self) -> Result<(), LaunchError> {
        for ci in 0..self.clusters.len() {
            let name = self.clusters[ci].spec.name.clone();
            let dir = self.state_dir.join(&name);
            ensure_cluster_ca(&name, &dir, false)?;
            let run_dir = dir.join("run");
            std::fs::create_dir_all(&run_dir).map_err(|e| LaunchError::io(&run_dir, e))?;
            for pi in 0..self.clusters[ci].processes.len() {
                let (pname, _) = &self.clusters[ci].processes[pi];
                let pname = pname.clone();
                // Wire each process to what it depends on, now that their addresses are known.
                let extra = self.dependency_args(ci, &pname);
                let mesh_bin = self.mesh_bin.clone();
                let p = &mut self.clusters[ci].processes[pi].1;
                p.argv.extend(extra);
                p.start(&mesh_bin).await?;
            }
        }
        Ok(())
    }

    fn dependency_args(&self, ci: usize, name: &str) -> Vec<String> {
        let cluster = &self.clusters[ci];
        let mut extra = Vec::new();
        if (name == "gateway" || name.starts_with("sidecar-") || name == "client")
            && let Some(control) = cluster.addr("controller", "control")
        {
            extra.extend([s("--controller"), s(control)]);
        }
        if let Some(replica) = name.strip_prefix("sidecar-")
            && let Some(app) = cluster.addr(replica, "listen")
        {
            extra.extend([s("--app"), s(app)]);
        }
        extra
    }

    /// Links every pair of clusters through their controllers' admin APIs.
    pub async fn link_all(&self) -> Result<(), LaunchError> {
        for i in 0..self.clusters.len() {
            for j in i + 1..self.clusters.len() {
                let (a, b) = (&self.clusters[i], &self.clusters[j]);
                let (Some(aa), Some(ba)) = (a.controller_admin(), b.controller_admin()) else {
                    continue;
                };
                link_pair(aa, ba, Duration::from_secs(20))
                    .await
                    .map_err(|e| LaunchError::Link {
                        a: a.spec.name.clone(),
                        b: b.spec.name.clone(),
                        reason: e.to_string(),
                    })?;
            }
        }
        Ok(())
    }

    /// Waits until every controller sees its gateway, all its links up, and the demo service in
    /// every cluster, and every client sidecar is ready.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<(), LaunchError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let n = self.clusters.len();
        loop {
            let mut waiting_for = None;
            for c in &self.clusters {
                if let Some(reason) = self.cluster_not_ready(c, n).await {
                    waiting_for = Some(format!("{}: {reason}", c.spec.name));
                    break;
                }
            }
            let Some(reason) = waiting_for else {
                return Ok(());
            };
            if tokio::time::Instant::now() > deadline {
                return Err(LaunchError::NotConverged(timeout, reason));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn cluster_not_ready(&self, c: &Cluster, n: usize) -> Option<String> {
        let admin = c.controller_admin()?;
        let status: ControllerStatus = match admin_client::get_json(admin, PATH_STATUS).await {
            Ok(s) => s,
            Err(e) => return Some(e.to_string()),
        };
        if !status.gateway_connected {
            return Some("gateway has not reported to the controller".into());
        }
        let up = status.links.iter().filter(|l| l.state == "up").count();
        if up < n - 1 {
            return Some(format!("{up} of {} links up", n - 1));
        }
        let echo = status
            .services
            .iter()
            .find(|s| s.service.to_string() == DEMO_SERVICE);
        let localities = echo
            .map(|s| s.localities.iter().filter(|l| l.health > 0.0).count())
            .unwrap_or(0);
        if localities < n {
            return Some(format!(
                "{DEMO_SERVICE} healthy in {localities} of {n} clusters"
            ));
        }
        if let Some(admin) = c.addr("client", "admin")
            && let Err(e) = admin_client::call(admin, http::Method::GET, "/readyz", None).await
        {
            return Some(format!("client sidecar not ready: {e}"));
        }
        None
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.spec.name == name)
    }

    /// One process of one cluster.
    pub fn process(&self, cluster: &str, name: &str) -> Option<&Process> {
        self.cluster(cluster)?.process(name)
    }

    fn process_mut(&mut self, cluster: &str, name: &str) -> Result<&mut Process, LaunchError> {
        self.clusters
            .iter_mut()
            .find(|c| c.spec.name == cluster)
            .and_then(|c| c.process_mut(name))
            .ok_or_else(|| LaunchError::NoSuchComponent(format!("{cluster}/{name}")))
    }

    /// Kills one process with SIGKILL (a real crash).
    pub async fn kill(&mut self, cluster: &str, name: &str) -> Result<(), LaunchError> {
        self.process_mut(cluster, name)?.kill().await;
        Ok(())
    }

    /// Sends a signal (freeze with `Stop`, resume with `Cont`).
    pub fn signal(&self, cluster: &str, name: &str, signal: Signal) -> Result<(), LaunchError> {
        let p = self
            .process(cluster, name)
            .ok_or_else(|| LaunchError::NoSuchComponent(format!("{cluster}/{name}")))?;
        p.signal(signal).map_err(|e| LaunchError::io(&p.log, e))
    }

    /// Starts a stopped process again on the addresses it had before.
    pub async fn restart(&mut self, cluster: &str, name: &str) -> Result<(), LaunchError> {
        let mesh_bin = self.mesh_bin.clone();
        let p = self.process_mut(cluster, name)?;
        p.kill().await;
        p.argv = p.pinned_argv();
        p.start(&mesh_bin).await
    }

    /// Stops every process, newest first, each with SIGTERM then SIGKILL after a grace period.
    pub async fn stop(&mut self) {
        for c in self.clusters.iter_mut().rev() {
            for (_, p) in c.processes.iter_mut().rev() {
                p.stop().await;
            }
        }
        let _ = std::fs::remove_file(self.state_dir.join(MANIFEST_FILE));
    }

    /// Pids of every running process.
    pub fn pids(&self) -> Vec<u32> {
        self.clusters
            .iter()
            .flat_map(|c| c.processes.iter().filter_map(|(_, p)| p.pid()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
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
