//! The errors of the harness: each names what it was doing, so a failed run says which path or
//! process broke.

use std::path::PathBuf;

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file or directory problem.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A process of the topology could not be started or linked.
    #[error(transparent)]
    Launch(#[from] mesh_launcher::cluster_set::LaunchError),
    /// A reference proxy (nginx, HAProxy) is missing or did not start.
    #[error("{proxy}: {reason}")]
    Reference {
        /// `nginx` or `haproxy`.
        proxy: &'static str,
        /// Why.
        reason: String,
    },
    /// The `mesh` binary is not where it should be.
    #[error(
        "the mesh binary {0} does not exist: build it first (`cargo build -p mesh-cli`, or \
         `--release`) or pass --mesh-bin"
    )]
    MissingMeshBinary(PathBuf),
    /// The topology did not become ready.
    #[error("the benchmark topology was not ready: {0}")]
    NotReady(String),
    /// A measurement could not be taken.
    #[error("{what}: {reason}")]
    Measure {
        /// What was being measured.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// Identity or TLS set-up failed.
    #[error("TLS set-up: {0}")]
    Tls(String),
    /// Arguments that make no sense together.
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
}

impl BenchError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BenchError::Io {
            path: path.into(),
            source,
        }
    }

    /// A measurement failure.
    pub fn measure(what: impl Into<String>, reason: impl ToString) -> Self {
        BenchError::Measure {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
