//! The error of the sidecar's crate boundary: why a sidecar could not start or stopped.
//! Per-request failures are not here: they become answers in `outbound::errors`.

use mesh_core::control_client::ControlError;
use mesh_core::identity::TlsError;
use mesh_core::telemetry::BindError;

/// Why the sidecar could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// Flags that do not fit together.
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// A file named on the command line could not be read.
    #[error("reading {what} {path}: {source}")]
    ReadFile {
        /// What the file is (CA certificate, join token).
        what: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The controller refused or could not be reached for the identity bootstrap.
    #[error("bootstrapping the workload identity: {0}")]
    Bootstrap(#[source] ControlError),
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
