//! The `mesh` command line: the component subcommands (wired to the component crates), the
//! demo app, and the commands that operate a cluster-set (`ca`, `up`, `link`, `unlink`,
//! `status`). The cluster-set launcher is a library module so end-to-end tests (and the chaos
//! suite) drive real processes the same way `mesh up` does.

pub mod admin_client;
pub mod cluster_set;
pub mod commands;
pub mod demo_app;
