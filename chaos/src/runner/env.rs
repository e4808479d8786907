//! Everything one scenario run owns (cluster-set, namespaces, relays, load, flapping tasks),
//! and its teardown: always run, also after a failure or an interrupt, then checked for
//! leftovers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mesh_launcher::cluster_set::{ClusterSet, Process};
use tokio::task::JoinHandle;

use crate::load::{LoadDriver, LoadResult};
use crate::netns::NetTopology;
use crate::relay::UdpRelay;
use crate::scenario::ProcessRef;

/// The resources of one run.
#[derive(Default)]
pub(crate) struct RunEnv {
    /// The cluster-set, once started.
    pub set: Option<ClusterSet>,
    /// The namespaces, in namespace mode.
    pub net: Option<NetTopology>,
    /// Relays by (from cluster, to cluster): `from`'s gateway reaches `to`'s through it.
    pub relays: BTreeMap<(String, String), UdpRelay>,
    /// The load, while it runs.
    pub driver: Option<LoadDriver>,
    /// Background fault tasks (flapping endpoints), by fault id.
    pub tasks: BTreeMap<String, JoinHandle<()>>,
    /// Every pid any component of the run had.
    pub pids: BTreeSet<u32>,
    /// The run's state directory (component command lines name it).
    pub state_dir: PathBuf,
    /// The `mesh` binary.
    pub mesh_bin: PathBuf,
}

impl RunEnv {
    /// Remembers the pids now running.
    pub(super) fn note_pids(&mut self) {
        if let Some(set) = &self.set {
            self.pids.extend(set.pids());
        }
    }

    /// One process of the set.
    pub(super) fn process_mut(&mut self, p: &ProcessRef) -> Option<&mut Process> {
        self.set
            .as_mut()?
            .clusters
            .iter_mut()
            .find(|c| c.spec.name == p.cluster)?
            .processes
            .iter_mut()
            .find(|(n, _)| *n == p.process)
            .map(|(_, p)| p)
    }

    /// An address a process reported in its ready file.
    pub(super) fn addr(&self, p: &ProcessRef, role: &str) -> Option<SocketAddr> {
        self.set
            .as_ref()?
            .process(&p.cluster, &p.process)?
            .ready
            .as_ref()?
            .addr(role)
    }

    /// Stops the load (if running) and returns what it recorded.
    pub(super) async fn finish_load(&mut self) -> Option<LoadResult> {
        Some(self.driver.take()?.finish().await)
    }

    /// Stops everything: background tasks, relays, every process, the namespaces.
    pub(super) async fn teardown(&mut self) {
        for (_, t) in std::mem::take(&mut self.tasks) {
            t.abort();
        }
        if let Some(d) = self.driver.take() {
            let _ = d.finish().await;
        }
        self.relays.clear();
        if let Some(set) = &mut self.set {
            self.pids.extend(set.pids());
            set.stop().await;
        }
        self.set = None;
        if let Some(net) = &mut self.net {
            net.teardown();
        }
    }

    /// What of the run is still there after teardown: processes (by pid, or by a command line
    /// naming the state directory), namespaces, links.
    pub(super) fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = self
            .pids
            .iter()
            .filter(|pid| alive(**pid))
            .map(|pid| format!("process {pid}"))
            .collect();
        for pid in processes_naming(&self.state_dir) {
            if !self.pids.contains(&pid) {
                left.push(format!("process {pid}"));
            }
        }
        if let Some(net) = &self.net {
            left.extend(net.leftovers());
        }
        left
    }
}

/// Whether `pid` runs (a zombie does not count: it is only waiting to be reaped).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Pids of live processes whose command line names `dir` (other than this process).
fn processes_naming(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(&needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_naming_the_state_dir_is_a_leftover_until_it_exits() {
        let dir = std::env::temp_dir().join(format!("mesh-chaos-left-{}", std::process::id()));
        // `sh -c CMD NAME` runs with NAME as $0, so the command line names the directory.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30", dir.to_str().unwrap()])
            .spawn()
            .unwrap();
        let env = RunEnv {
            state_dir: dir.clone(),
            ..RunEnv::default()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while env.leftovers().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the child naming {dir:?} is not found"
            );
            std::thread::yield_now();
        }
        assert!(env.leftovers()[0].contains(&child.id().to_string()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(env.leftovers().is_empty());
        assert!(!alive(child.id()));
    }
}
