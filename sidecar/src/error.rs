//! The error of the sidecar's crate boundary: why a sidecar could not start or stopped.
//! Per-request failures are not here: they become answers in `outbound::errors`.

use mesh_core::bootstrap::BootstrapError;
use mesh_core::identity::TlsError;
use mesh_core::member_args::MemberArgsError;
use mesh_core::telemetry::BindError;

impl From<MemberArgsError> for SidecarError {
    fn from(e: MemberArgsError) -> Self {
        SidecarError::Config {
            flag: e.flag,
            reason: e.reason,
        }
    }
}

/// Why the sidecar could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// A command-line flag with a value the sidecar cannot use, alone or with the others.
    #[error("invalid --{flag}: {reason}")]
    Config {
        /// The flag, without dashes.
        flag: &'static str,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// The workload certificate could not be obtained (files, controller, refusal).
    #[error("bootstrapping the workload identity: {0}")]
    Bootstrap(#[from] BootstrapError),
    /// TLS configuration could not be built from the identity and trust bundles.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The ready file could not be written.
    #[error("writing the ready file {path}: {source}")]
    ReadyFile {
        /// The path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A socket's local address could not be read.
    #[error("reading the bound address of the {role} listener: {source}")]
    LocalAddr {
        /// The listener's role.
        role: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
