//! The `mesh` command line: the component subcommands (wired to the component crates), the
//! demo app, and the commands that operate a cluster-set (`ca`, `up`, `link`, `unlink`,
//! `status`). The cluster-set launcher lives in `mesh-launcher`, shared with the end-to-end
//! tests and the chaos suite.

pub mod commands;
pub mod demo_app;
