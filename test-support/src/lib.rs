//! Support shared by the workspace's tests, and only by tests: every crate takes it as a
//! dev-dependency, never as a dependency. It owns waiting on a condition with a deadline
//! ([`poll`]) and the CA fixture of a test cluster ([`ca`]).
//!
//! Not here: the open-loop load generator. `mesh chaos run` drives load in production, so it
//! lives in the normal library crate `mesh-chaos` (`mesh_chaos::load`), which the end-to-end
//! tests use as well; the demo app's header names live with the demo app's client there too.
#![forbid(unsafe_code)]

pub mod ca;
pub mod poll;

pub use ca::TestCluster;
pub use poll::{TimedOut, eventually, wait_for};
