//! `mesh link` / `mesh unlink` between two Kubernetes clusters: read each cluster's link
//! information (published by its controller), write a `Link` in each naming the other, wait
//! until both controllers report it `Ready`. Idempotent; on any failure the `Link`s this run
//! created are removed again, so nothing is left half-linked.

use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use mesh_core::api::LinkInfo;

use crate::client::ClusterSource;
use crate::conditions::condition;
use crate::link::{Link, READY, link_for};
use crate::link_info::read_link_info;
use crate::names::LINK_MANAGER;

/// How often the `Link`s are looked at while waiting for them to become ready.
const POLL: Duration = Duration::from_millis(500);

/// Why linking or unlinking failed; every message names the cluster and the fix.
#[derive(Debug, thiserror::Error)]
pub enum LinkingError {
    /// A cluster could not be reached or refused the credentials.
    #[error("cluster {source_name}: {reason}")]
    Cluster {
        /// The kubeconfig or context.
        source_name: String,
        /// What went wrong and what to do.
        reason: String,
    },
    /// Both clusters carry the same name.
    #[error(
        "both {a} and {b} are cluster {name}: cluster names must be unique in a cluster-set; \
         reinstall one with another `--set cluster.name=...`"
    )]
    SameName {
        /// The first source.
        a: String,
        /// The second source.
        b: String,
        /// The name.
        name: String,
    },
    /// A `Link` did not become ready in time; the links written by this run were removed.
    #[error("{0}")]
    NotReady(String),
}

/// One side of a link being made.
struct Side {
    source: ClusterSource,
    client: Client,
    info: LinkInfo,
}

impl Side {
    async fn open(source: &ClusterSource, namespace: &str) -> Result<Self, LinkingError> {
        let fail = |reason: String| LinkingError::Cluster {
            source_name: source.to_string(),
            reason,
        };
        let client = source.client().await.map_err(|e| fail(e.reason))?;
        let info = read_link_info(&client, namespace)
            .await
            .map_err(|e| fail(describe(&e.to_string())))?;
        Ok(Self {
            source: source.clone(),
            client,
            info,
        })
    }

    fn links(&self) -> Api<Link> {
        Api::all(self.client.clone())
    }

    fn fail(&self, reason: String) -> LinkingError {
        LinkingError::Cluster {
            source_name: format!("{} ({})", self.info.cluster, self.source),
            reason,
        }
    }
}

/// Adds the fix to errors kube reports for credentials and reachability.
fn describe(error: &str) -> String {
    if error.contains("401") || error.contains("Unauthorized") {
        format!("{error}; the kubeconfig's credentials are not accepted: refresh them")
    } else if error.contains("403") || error.contains("forbidden") {
        format!("{error}; the kubeconfig's user may not read this: use an admin of the cluster")
    } else if error.contains("error trying to connect")
        || error.contains("onnection refused")
        || error.contains("timed out")
    {
        format!("{error}; the API server is unreachable: check the kubeconfig's server address")
    } else {
        error.to_string()
    }
}

/// Links the clusters of `a` and `b` (the chart installed in `namespace` in each); returns
/// their names once both `Link`s are ready, within `wait`.
pub async fn link_clusters(
    a: &ClusterSource,
    b: &ClusterSource,
    namespace: &str,
    wait: Duration,
) -> Result<(String, String), LinkingError> {
    let a = Side::open(a, namespace).await?;
    let b = Side::open(b, namespace).await?;
    if a.info.cluster == b.info.cluster {
        return Err(LinkingError::SameName {
            a: a.source.to_string(),
            b: b.source.to_string(),
            name: a.info.cluster.clone(),
        });
    }
    let mut created: Vec<(&Side, String)> = Vec::new();
    for (here, peer) in [(&a, &b), (&b, &a)] {
        match write_link(here, &peer.info).await {
            Ok(new) => {
                if new {
                    created.push((here, peer.info.cluster.clone()));
                }
            }
            Err(e) => {
                roll_back(&created).await;
                return Err(e);
            }
        }
    }
    let deadline = Instant::now() + wait;
    loop {
        let mut waiting = Vec::new();
        for (here, peer) in [(&a, &b), (&b, &a)] {
            if let Some(why) = not_ready(here, &peer.info.cluster).await {
                waiting.push(format!(
                    "in cluster {}, Link {}: {why}",
                    here.info.cluster, peer.info.cluster
                ));
            }
        }
        if waiting.is_empty() {
            return Ok((a.info.cluster.clone(), b.info.cluster.clone()));
        }
        if Instant::now() >= deadline {
            roll_back(&created).await;
            return Err(LinkingError::NotReady(format!(
                "the link between {} and {} did not become ready within {wait:?}: {}{}",
                a.info.cluster,
                b.info.cluster,
                waiting.join("; "),
                if created.is_empty() {
                    ""
                } else {
                    ". The Links this run created were removed; fix the cause and run `mesh link` again"
                }
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Writes the `Link` to `peer` in `here`; true when it did not exist before.
async fn write_link(here: &Side, peer: &LinkInfo) -> Result<bool, LinkingError> {
    let api = here.links();
    let existed = api
        .get_opt(&peer.cluster)
        .await
        .map_err(|e| here.fail(describe(&e.to_string())))?
        .is_some();
    api.patch(
        &peer.cluster,
        &PatchParams::apply(LINK_MANAGER).force(),
        &Patch::Apply(&link_for(peer)),
    )
    .await
    .map_err(|e| {
        here.fail(format!(
            "writing Link {}: {}",
            peer.cluster,
            describe(&e.to_string())
        ))
    })?;
    Ok(!existed)
}

/// `None` when the `Link` to `peer` in `here` is ready; otherwise why not.
async fn not_ready(here: &Side, peer: &str) -> Option<String> {
    let link = match here.links().get_opt(peer).await {
        Ok(Some(link)) => link,
        Ok(None) => return Some("deleted while waiting".into()),
        Err(e) => return Some(describe(&e.to_string())),
    };
    let conditions = link.status.map(|s| s.conditions).unwrap_or_default();
    match condition(&conditions, READY) {
        Some(c) if c.status == "True" => None,
        Some(c) => Some(format!("{}: {}", c.reason, c.message)),
        None => Some(
            "no status yet: is the cluster's controller running (it reports on every Link)?".into(),
        ),
    }
}

async fn roll_back(created: &[(&Side, String)]) {
    for (here, peer) in created {
        let _ = here.links().delete(peer, &DeleteParams::default()).await;
    }
}

/// Removes the `Link`s between the clusters of `a` and `b`; each controller then revokes the
/// peer's trust and withdraws its imports. Returns their names.
pub async fn unlink_clusters(
    a: &ClusterSource,
    b: &ClusterSource,
    namespace: &str,
) -> Result<(String, String), LinkingError> {
    let a = Side::open(a, namespace).await?;
    let b = Side::open(b, namespace).await?;
    for (here, peer) in [(&a, &b), (&b, &a)] {
        match here
            .links()
            .delete(&peer.info.cluster, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                return Err(here.fail(format!(
                    "deleting Link {}: {}",
                    peer.info.cluster,
                    describe(&e.to_string())
                )));
            }
        }
    }
    Ok((a.info.cluster, b.info.cluster))
}
