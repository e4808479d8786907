//! The flags that name Kubernetes clusters, shared by `mesh link`, `mesh unlink` and
//! `mesh check`: a kubeconfig per cluster, or contexts of one kubeconfig.

use std::path::PathBuf;

use mesh_k8s::client::ClusterSource;

/// `--kubeconfig`, `--context` (each repeatable) and `--namespace`.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeClusters {
    /// Kubernetes: a cluster's kubeconfig; repeat it, once per cluster (or give one, with a
    /// `--context` per cluster).
    #[arg(long, action = clap::ArgAction::Append)]
    pub kubeconfig: Vec<PathBuf>,
    /// Kubernetes: a context; repeat it, once per cluster.
    #[arg(long, action = clap::ArgAction::Append)]
    pub context: Vec<String>,
    /// Kubernetes: the namespace the mesh chart is installed in, in every cluster.
    #[arg(long, default_value = mesh_k8s::names::DEFAULT_NAMESPACE)]
    pub namespace: String,
}

impl KubeClusters {
    /// The clusters named, in order; `None` when no Kubernetes flag is given.
    pub fn sources(&self) -> Result<Option<Vec<ClusterSource>>, String> {
        let source = |kubeconfig: Option<&PathBuf>, context: Option<&String>| ClusterSource {
            kubeconfig: kubeconfig.cloned(),
            context: context.cloned(),
        };
        match (self.kubeconfig.as_slice(), self.context.as_slice()) {
            ([], []) => Ok(None),
            (files, []) => Ok(Some(files.iter().map(|f| source(Some(f), None)).collect())),
            (files, contexts) if files.len() <= 1 => Ok(Some(
                contexts
                    .iter()
                    .map(|c| source(files.first(), Some(c)))
                    .collect(),
            )),
            (files, contexts) if files.len() == contexts.len() => Ok(Some(
                files
                    .iter()
                    .zip(contexts)
                    .map(|(f, c)| source(Some(f), Some(c)))
                    .collect(),
            )),
            _ => Err(
                "give one --context per --kubeconfig, or several contexts of one kubeconfig".into(),
            ),
        }
    }
}
