//! A Kubernetes client from what the user names: a kubeconfig file, a context, or nothing (the
//! pod's in-cluster config, else `$KUBECONFIG` / `~/.kube/config`). Errors name the source.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// How long connecting to an API server may take before the attempt fails (and is retried by
/// whoever called): long enough for a loaded server, short enough that `mesh link` against an
/// unreachable cluster says so quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which cluster to talk to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSource {
    /// A kubeconfig file; `None`: in-cluster config, else the default kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// A context of that kubeconfig; `None`: its current context.
    pub context: Option<String>,
}

impl fmt::Display for ClusterSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kubeconfig, &self.context) {
            (Some(path), Some(ctx)) => write!(f, "context {ctx} of {}", path.display()),
            (Some(path), None) => write!(f, "{}", path.display()),
            (None, Some(ctx)) => write!(f, "context {ctx}"),
            (None, None) => f.write_str("the in-cluster or default kubeconfig"),
        }
    }
}

/// A client could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {source_name}: {reason}")]
pub struct ClientError {
    /// The source, as [`ClusterSource`] prints it.
    pub source_name: String,
    /// Why.
    pub reason: String,
}

impl ClusterSource {
    /// The source `kubeconfig` (a file).
    pub fn file(kubeconfig: &Path) -> Self {
        Self {
            kubeconfig: Some(kubeconfig.to_path_buf()),
            context: None,
        }
    }

    /// A client for this source.
    pub async fn client(&self) -> Result<Client, ClientError> {
        let fail = |reason: String| ClientError {
            source_name: self.to_string(),
            reason,
        };
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let mut config = match &self.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
                Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| fail(e.to_string()))?
            }
            None if self.context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| fail(e.to_string()))?,
            None => Config::infer().await.map_err(|e| fail(e.to_string()))?,
        };
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        Client::try_from(config).map_err(|e| fail(e.to_string()))
    }
}
