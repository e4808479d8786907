//! The gateway's error type at its crate boundary.

use std::path::PathBuf;

use mesh_core::bootstrap::BootstrapError;
use mesh_core::control_client::ControlError;
use mesh_core::identity::TlsError;
use mesh_core::member_args::MemberArgsError;
use mesh_core::telemetry::BindError;

impl From<MemberArgsError> for GatewayError {
    fn from(e: MemberArgsError) -> Self {
        GatewayError::Config {
            flag: e.flag,
            reason: e.reason,
        }
    }
}

/// Why the gateway could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A command-line flag with a value the gateway cannot use, alone or with the others.
    #[error("invalid --{flag}: {reason}")]
    Config {
        /// The flag, without dashes.
        flag: &'static str,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// A listener could not be bound (names the role and address).
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The gateway certificate could not be obtained (files, controller, refusal).
    #[error("gateway: bootstrapping the identity: {0}")]
    Bootstrap(#[from] BootstrapError),
    /// The ready file could not be written.
    #[error("gateway: cannot write the ready file {path}: {source}")]
    ReadyFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The controller refused or failed a call the gateway cannot start without.
    #[error("gateway: {0}")]
    Control(#[from] ControlError),
    /// A TLS configuration could not be built from the identity and trust bundles.
    #[error("gateway: {0}")]
    Tls(#[from] TlsError),
    /// The QUIC endpoint could not be configured.
    #[error("gateway: QUIC configuration: {0}")]
    Quic(String),
}
