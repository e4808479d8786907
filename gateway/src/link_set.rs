//! The set of peer links, reconciled with the peer list of each controller snapshot, and the
//! table through which the acceptor and the tunnel ingress find a peer's link.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use mesh_core::api::{PeerLinkConfig, PeerLinkStatus};
use tokio::task::JoinHandle;

use crate::link_context::LinkContext;
use crate::peer_link::PeerLink;

/// Peer links by cluster, readable from any task.
#[derive(Default)]
pub(crate) struct LinkTable(RwLock<BTreeMap<String, Arc<PeerLink>>>);

impl LinkTable {
    /// The link to `cluster`, if linked.
    pub(crate) fn get(&self, cluster: &str) -> Option<Arc<PeerLink>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(cluster)
            .cloned()
    }

    /// The state of every link, sorted by cluster.
    pub(crate) fn statuses(&self) -> Vec<PeerLinkStatus> {
        let links: Vec<Arc<PeerLink>> = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        links.iter().map(|l| l.status()).collect()
    }

    fn insert(&self, link: Arc<PeerLink>) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(link.cluster.clone(), link);
    }

    fn remove(&self, cluster: &str) -> Option<Arc<PeerLink>> {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(cluster)
    }
}

/// Owns the link tasks; dropping it stops them.
pub(crate) struct LinkSet {
    ctx: Arc<LinkContext>,
    table: Arc<LinkTable>,
    tasks: HashMap<String, JoinHandle<()>>,
}

impl LinkSet {
    /// An empty set publishing into `table`.
    pub(crate) fn new(ctx: Arc<LinkContext>, table: Arc<LinkTable>) -> Self {
        Self {
            ctx,
            table,
            tasks: HashMap::new(),
        }
    }

    /// Makes the links match `peers`: starts new ones, updates changed ones, closes removed ones.
    pub(crate) fn reconcile(&mut self, peers: &[PeerLinkConfig]) {
        let mut wanted: BTreeMap<&str, &PeerLinkConfig> = BTreeMap::new();
        for p in peers {
            if p.cluster == self.ctx.cluster {
                tracing::warn!(peer = %p.cluster, "snapshot lists the own cluster as a peer; ignored");
                continue;
            }
            if wanted.insert(p.cluster.as_str(), p).is_some() {
                tracing::warn!(peer = %p.cluster, "snapshot lists a peer twice; the last entry wins");
            }
        }
        let removed: Vec<String> = self
            .tasks
            .keys()
            .filter(|c| !wanted.contains_key(c.as_str()))
            .cloned()
            .collect();
        for cluster in removed {
            self.remove(&cluster);
        }
        for (cluster, cfg) in wanted {
            match self.table.get(cluster) {
                Some(link) => link.update_config(cfg.clone()),
                None => {
                    tracing::info!(peer = %cluster, addr = %cfg.gateway_addr, "peer linked");
                    let (link, task) = PeerLink::start(self.ctx.clone(), cfg.clone());
                    self.table.insert(link);
                    self.tasks.insert(cluster.to_string(), task);
                    self.ctx.notify_change();
                }
            }
        }
    }

    fn remove(&mut self, cluster: &str) {
        if let Some(task) = self.tasks.remove(cluster) {
            task.abort();
        }
        if let Some(link) = self.table.remove(cluster) {
            link.close("unlinked");
        }
        self.ctx.metrics.forget_peer(cluster);
        tracing::info!(peer = %cluster, "peer unlinked; connection closed");
        self.ctx.notify_change();
    }
}

impl Drop for LinkSet {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}
