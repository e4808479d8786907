//! The errors of the chaos suite.

use std::path::PathBuf;

/// Why a chaos command failed.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A scenario file was refused.
    #[error(transparent)]
    Scenario(#[from] crate::scenario::ScenarioError),
    /// The cluster-set could not be started or driven.
    #[error(transparent)]
    Launch(#[from] mesh_launcher::cluster_set::LaunchError),
    /// Namespaces, links or iptables failed.
    #[error(transparent)]
    Net(#[from] crate::netns::NetError),
    /// An impairment relay could not start.
    #[error(transparent)]
    Relay(#[from] crate::relay::RelayError),
    /// A fault could not be injected or healed.
    #[error("fault `{id}`: {reason}")]
    Fault {
        /// The fault.
        id: String,
        /// Why.
        reason: String,
    },
    /// The run needs something this machine does not offer.
    #[error("{0}")]
    Setup(String),
    /// Namespaces were required (`--require-namespaces`, CI) but cannot be used here.
    #[error("network namespaces are required but cannot be used: {0}")]
    NamespacesRequired(String),
    /// The report could not be written.
    #[error("writing the report to {path}: {source}")]
    Report {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The run finished, and not every SLO held.
    #[error("{failed} scenario(s) failed, {not_run} not run, {passed} passed; report in {report}")]
    SlosBroken {
        /// Scenarios with a broken SLO or that could not complete.
        failed: usize,
        /// Scenarios that could not run here.
        not_run: usize,
        /// Scenarios that passed.
        passed: usize,
        /// The report directory.
        report: PathBuf,
    },
}
