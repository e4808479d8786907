//! The chaos suite of `mesh` (`mesh chaos run`, `mesh chaos list`): it proves that failover
//! works by running a real cluster-set, each cluster in its own network namespace where the
//! machine allows, driving open-loop load through it, injecting the faults of a scenario on a
//! timeline (killed and frozen processes, partitions, WAN loss, an impaired QUIC path through a
//! userspace relay, failing or slow endpoints, rolling restarts, unlinks), and checking the
//! scenario's SLOs over every recorded request; then it writes a table, a JSON report and an
//! SVG timeline per scenario.
//!
//! It owns scenario files and their validation ([`scenario`]), the namespace topology
//! ([`netns`]), the impairment relay ([`relay`]), the load driver ([`load`]), SLO evaluation
//! ([`slo`]), the report ([`report`]) and the run itself ([`runner`]). It does not implement or
//! start components by itself: `mesh-launcher` starts, kills and restarts them, and the demo
//! app's `/v1/faults` admin endpoint makes endpoints fail.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod args;
mod error;
pub mod load;
pub mod netns;
pub mod relay;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod slo;

pub use args::{ChaosArgs, ChaosCommand, ListArgs, RunArgs, list_line, run, select};
pub use error::ChaosError;
