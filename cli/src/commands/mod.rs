//! The `mesh` subcommands that are not components: `ca`, `up`, `link`, `unlink`, `status`.

pub mod link;
pub mod status;
pub mod up;
