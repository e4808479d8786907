//! The `mesh` subcommands that are not components: `up`, `link`, `unlink`, `status`, `check`.

pub mod ca;
pub mod check;
pub mod clusters;
pub mod link;
pub mod status;
pub mod up;
