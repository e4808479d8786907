//! Runs a whole cluster-set as local processes: per cluster a controller, a gateway, the `echo`
//! demo replicas each behind a sidecar, and a client sidecar; links every pair of clusters and
//! waits until traffic can flow everywhere. `mesh up` and the end-to-end tests both use it, and
//! individual components can be killed, frozen and restarted to cause real failures.
//!
//! Two concepts, one file each: the plan (`plan.rs`: which processes a cluster-set has and
//! their arguments, typed as each component's own args in `component.rs`, nothing running) and the supervisor (`supervisor.rs`: starting them in
//! dependency order, linking, waiting for convergence, killing, freezing, restarting, stopping).

mod component;
mod manifest;
mod plan;
mod process;
mod supervisor;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_core::config::ClusterSpec;

pub use component::{ComponentArgs, UNWIRED, Wire};
pub use manifest::{Manifest, ManifestCluster, ManifestProcess, read_manifest};
pub use plan::{ClientPlacement, DEMO_SERVICE, Placement};
pub use process::{Process, Signal, log_tail, send_signal};

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

    /// The controller's DNS address (UDP and TCP).
    pub fn controller_dns(&self) -> Option<SocketAddr> {
        self.addr("controller", "dns")
    }

    /// The client sidecar's HTTP proxy address.
    pub fn client_proxy(&self) -> Option<SocketAddr> {
        self.addr("client", "outbound")
    }
}

/// A cluster-set: planned by [`ClusterSet::plan`], then run by [`ClusterSet::start`].
#[derive(Debug)]
pub struct ClusterSet {
    state_dir: PathBuf,
    mesh_bin: PathBuf,
    /// The clusters, in topology order.
    pub clusters: Vec<Cluster>,
}
