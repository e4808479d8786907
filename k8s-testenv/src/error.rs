//! Errors of the test environment: each says what failed and, for a process, the tail of its log.

use std::path::PathBuf;

/// Errors building the binaries or starting a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The binaries are missing and there is no Go toolchain to build them with.
    #[error(
        "test binaries built from Go modules (Kubernetes, CoreDNS) are missing from {bin_dir} and \
         there is no Go toolchain to build them: {hint}"
    )]
    GoMissing {
        /// Where the binaries were looked for.
        bin_dir: PathBuf,
        /// What to install (differs between CI and a developer machine).
        hint: &'static str,
    },
    /// A build script of `tools/k8s-testenv/` failed.
    #[error("building test binaries from Go modules failed ({status}); log {log}:\n{tail}")]
    Build {
        /// The script's exit status.
        status: std::process::ExitStatus,
        /// Its full log.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
    /// Certificates or keys could not be generated.
    #[error("generating the cluster PKI: {0}")]
    Pki(#[from] rcgen::Error),
    /// A cluster's process exited or did not become ready in time.
    #[error("cluster {cluster}: {what}; last lines of {log}:\n{tail}")]
    Start {
        /// The cluster name.
        cluster: String,
        /// What went wrong.
        what: String,
        /// The log of the process at fault.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// The arguments make no sense (for example two clusters of the same name).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// The last `n` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &std::path::Path, n: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return format!("(cannot read {}: {e})", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
