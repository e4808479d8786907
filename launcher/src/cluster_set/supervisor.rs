//! The supervisor of a cluster-set: starts the planned processes cluster by cluster in
//! dependency order (each one's ready file read before the next starts), links every pair of
//! clusters, waits for convergence, and kills, freezes, restarts or stops single processes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mesh_core::api::{ControllerStatus, PATH_STATUS};
use mesh_core::config::Topology;

use super::component::Wire;
use super::plan::DEMO_SERVICE;
use super::{Cluster, ClusterSet, LaunchError, MANIFEST_FILE, Placement, Process, Signal};
use crate::admin_client;
use crate::admin_client::AdminTokens;
use crate::ca::ensure_cluster_ca;
use crate::link::link_pair;

/// Gives the user `uid` what process `p` reads (its CA certificate and join token) and the
/// directory it writes its ready file to.
fn hand_over(p: &Process, run_dir: &Path, uid: u32) -> Result<(), LaunchError> {
    let mut paths = vec![run_dir.to_path_buf()];
    if let Some(member) = p.args.member() {
        paths.push(member.ca_file.clone());
        paths.push(member.token_file.clone());
    }
    for path in paths {
        std::os::unix::fs::chown(&path, Some(uid), None).map_err(|e| LaunchError::io(&path, e))?;
    }
    Ok(())
}

impl ClusterSet {
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
        Self::plan_placed(topology, state_dir, mesh_bin, placements)
            .launch()
            .await
    }

    /// Starts a planned cluster-set: every process, then the links, then waits until traffic
    /// flows; on any failure everything started is stopped.
    pub async fn launch(self) -> Result<Self, LaunchError> {
        let mut set = self;
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
                // Wire each process to what it depends on, now that their addresses are known.
                let wired = self.wired_addrs(ci, pi)?;
                let mesh_bin = self.mesh_bin.clone();
                let p = &mut self.clusters[ci].processes[pi].1;
                for (wire, addr) in wired {
                    p.args.wire(&wire, addr);
                }
                if let Some(uid) = p.owner {
                    hand_over(p, &run_dir, uid)?;
                }
                p.start(&mesh_bin).await?;
            }
        }
        Ok(())
    }

    /// The addresses process `pi` of cluster `ci` takes from the processes started before it.
    fn wired_addrs(&self, ci: usize, pi: usize) -> Result<Vec<(Wire, SocketAddr)>, LaunchError> {
        let cluster = &self.clusters[ci];
        let p = &cluster.processes[pi].1;
        p.wiring
            .iter()
            .map(|wire| {
                let (source, role) = wire.source();
                cluster
                    .addr(source, role)
                    .map(|addr| (wire.clone(), addr))
                    .ok_or_else(|| LaunchError::Spawn {
                        component: p.label.clone(),
                        reason: format!("{source} has no {role} address to give it"),
                    })
            })
            .collect()
    }

    /// Links every pair of clusters through their controllers' admin APIs.
    pub async fn link_all(&self) -> Result<(), LaunchError> {
        let tokens = AdminTokens::in_state_dir(&self.state_dir);
        for i in 0..self.clusters.len() {
            for j in i + 1..self.clusters.len() {
                let (a, b) = (&self.clusters[i], &self.clusters[j]);
                let (Some(aa), Some(ba)) = (a.controller_admin(), b.controller_admin()) else {
                    continue;
                };
                link_pair(aa, ba, &tokens, Duration::from_secs(20))
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
        self.restart_with(cluster, name, |_| {}).await
    }

    /// Restarts a process with its arguments changed by `change` first (another policy, a
    /// flag), on the addresses it had before.
    pub async fn restart_with(
        &mut self,
        cluster: &str,
        name: &str,
        change: impl FnOnce(&mut super::ComponentArgs),
    ) -> Result<(), LaunchError> {
        let mesh_bin = self.mesh_bin.clone();
        let p = self.process_mut(cluster, name)?;
        p.kill().await;
        change(&mut p.args);
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
