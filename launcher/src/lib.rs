//! Runs a cluster-set as local processes of the `mesh` binary: CA material per cluster, every
//! component started in dependency order from its ready file, all clusters linked, convergence
//! awaited; and single components killed, frozen or restarted to cause real failures.
//!
//! `mesh up`, the end-to-end tests and the chaos suite all drive cluster-sets through this crate.
//! It does not implement any component: it only starts, links and watches them.

pub mod admin_client;
pub mod ca;
pub mod cluster_set;
pub mod demo_app_args;
pub mod link;
pub mod netns;
