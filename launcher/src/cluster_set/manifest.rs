//! `up.json`: what a running cluster-set records in its state directory (every process's pid,
//! addresses and log), so `mesh status` and people can find it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ClusterSet, LaunchError, MANIFEST_FILE};

/// What `up.json` records of a running cluster-set (for `mesh status` and people).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The supervising `mesh up` process.
    pub pid: u32,
    /// Per cluster.
    pub clusters: Vec<ManifestCluster>,
}

/// One cluster in `up.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestCluster {
    /// Cluster name.
    pub name: String,
    /// Controller admin address.
    pub controller_admin: Option<SocketAddr>,
    /// Controller DNS address (UDP and TCP).
    #[serde(default)]
    pub controller_dns: Option<SocketAddr>,
    /// Client sidecar proxy address.
    pub client_proxy: Option<SocketAddr>,
    /// Every process: name -> (pid, addresses, log).
    pub processes: BTreeMap<String, ManifestProcess>,
}

/// One process in `up.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestProcess {
    /// Pid.
    pub pid: Option<u32>,
    /// Bound addresses by role.
    pub addrs: BTreeMap<String, SocketAddr>,
    /// Log file.
    pub log: PathBuf,
}

impl ClusterSet {
    /// Writes `up.json` into the state directory.
    pub fn write_manifest(&self) -> Result<(), LaunchError> {
        let manifest = Manifest {
            pid: std::process::id(),
            clusters: self
                .clusters
                .iter()
                .map(|c| ManifestCluster {
                    name: c.spec.name.clone(),
                    controller_admin: c.controller_admin(),
                    controller_dns: c.controller_dns(),
                    client_proxy: c.client_proxy(),
                    processes: c
                        .processes
                        .iter()
                        .map(|(n, p)| {
                            let mp = ManifestProcess {
                                pid: p.pid(),
                                addrs: p
                                    .ready
                                    .as_ref()
                                    .map(|r| r.addrs.clone())
                                    .unwrap_or_default(),
                                log: p.log.clone(),
                            };
                            (n.clone(), mp)
                        })
                        .collect(),
                })
                .collect(),
        };
        let path = self.state_dir.join(MANIFEST_FILE);
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| LaunchError::io(&path, std::io::Error::other(e)))?;
        std::fs::write(&path, json).map_err(|e| LaunchError::io(&path, e))
    }
}

/// Reads `up.json` of a running cluster-set.
pub fn read_manifest(state_dir: &Path) -> Result<Manifest, LaunchError> {
    let path = state_dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).map_err(|e| LaunchError::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| LaunchError::io(&path, std::io::Error::other(e)))
}
