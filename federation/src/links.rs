//! The clusters this one is linked with, persisted in `links.json` in the state directory so a
//! restarted controller keeps its links (and trust) without running `mesh link` again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mesh_core::api::LinkInfo;
use mesh_core::identity::{TrustBundle, TrustBundles};
use mesh_core::names::check_label;
use serde::{Deserialize, Serialize};

/// File of the persisted links inside the state directory.
pub(crate) const LINKS_FILE: &str = "links.json";
/// Version of the file format.
const FORMAT_VERSION: u32 = 1;

/// Why a link operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A cluster asked to link with itself.
    #[error("cannot link cluster {0} with itself; pass the other cluster's link info")]
    SelfLink(String),
    /// The peer's link info is unusable.
    #[error("link info is invalid: {0}")]
    Invalid(String),
    /// The link conflicts with another one.
    #[error("{0}")]
    Conflict(String),
    /// No link to that cluster.
    #[error("cluster {0} is not linked")]
    NotLinked(String),
    /// `links.json` could not be written.
    #[error("{path}: cannot save links: {reason}")]
    Persist {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `links.json` could not be read at start.
    #[error(
        "{path}: {reason}; fix the file or remove it and link the clusters again with `mesh link`"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What adding a link changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LinkChange {
    /// A new link.
    Created,
    /// An existing link with new details (e.g. the peer's gateway moved).
    Updated,
    /// The same link info again: nothing changed.
    Unchanged,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinksFile {
    version: u32,
    links: Vec<LinkInfo>,
}

/// The linked peers, by cluster name.
#[derive(Debug)]
pub(crate) struct LinkStore {
    cluster: String,
    trust_domain: String,
    path: Option<PathBuf>,
    links: BTreeMap<String, LinkInfo>,
}

impl LinkStore {
    /// Loads the links of `cluster` from `state_dir` (none when the file does not exist yet).
    pub(crate) fn load(
        state_dir: &Path,
        cluster: &str,
        trust_domain: &str,
    ) -> Result<Self, LinkError> {
        let path = state_dir.join(LINKS_FILE);
        let corrupt = |reason: String| LinkError::Corrupt {
            path: path.clone(),
            reason,
        };
        let links = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: LinksFile = serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(format!("not a links file: {e}")))?;
                if file.version != FORMAT_VERSION {
                    return Err(corrupt(format!(
                        "format version {} is not supported (expected {FORMAT_VERSION})",
                        file.version
                    )));
                }
                let mut links = BTreeMap::new();
                for info in file.links {
                    validate(&info, cluster, trust_domain, &links)
                        .map_err(|e| corrupt(e.to_string()))?;
                    links.insert(info.cluster.clone(), info);
                }
                links
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(corrupt(e.to_string())),
        };
        Ok(Self {
            cluster: cluster.to_string(),
            trust_domain: trust_domain.to_string(),
            path: Some(path),
            links,
        })
    }

    /// A store that is not persisted (Kubernetes mode: the `Link` objects are the record).
    pub(crate) fn ephemeral(cluster: &str, trust_domain: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            trust_domain: trust_domain.to_string(),
            path: None,
            links: BTreeMap::new(),
        }
    }

    /// Adds or updates the link to `info.cluster`; the same info twice changes nothing.
    pub(crate) fn add(&mut self, info: LinkInfo) -> Result<LinkChange, LinkError> {
        let change = match self.links.get(&info.cluster) {
            Some(old) if *old == info => return Ok(LinkChange::Unchanged),
            Some(_) => LinkChange::Updated,
            None => LinkChange::Created,
        };
        let others: BTreeMap<String, LinkInfo> = self
            .links
            .iter()
            .filter(|(k, _)| **k != info.cluster)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        validate(&info, &self.cluster, &self.trust_domain, &others)?;
        let mut next = self.links.clone();
        next.insert(info.cluster.clone(), info);
        self.save(&next)?;
        self.links = next;
        Ok(change)
    }

    /// Replaces the trust bundle held for linked `cluster` (a bundle it announced on its link
    /// during a root rotation, judged by the caller) and saves the links.
    pub(crate) fn replace_bundle(
        &mut self,
        cluster: &str,
        bundle: TrustBundle,
    ) -> Result<(), LinkError> {
        let mut info = self
            .links
            .get(cluster)
            .cloned()
            .ok_or_else(|| LinkError::NotLinked(cluster.to_string()))?;
        info.trust_bundle = bundle;
        self.add(info).map(|_| ())
    }

    /// The trust bundle held for linked `cluster`.
    pub(crate) fn bundle(&self, cluster: &str) -> Option<&TrustBundle> {
        self.links.get(cluster).map(|l| &l.trust_bundle)
    }

    /// Removes the link to `cluster`.
    pub(crate) fn remove(&mut self, cluster: &str) -> Result<LinkInfo, LinkError> {
        let mut next = self.links.clone();
        let removed = next
            .remove(cluster)
            .ok_or_else(|| LinkError::NotLinked(cluster.to_string()))?;
        self.save(&next)?;
        self.links = next;
        Ok(removed)
    }

    /// The link to `cluster`.
    #[cfg(test)]
    pub(crate) fn get(&self, cluster: &str) -> Option<&LinkInfo> {
        self.links.get(cluster)
    }

    /// Whether `cluster` is linked.
    pub(crate) fn contains(&self, cluster: &str) -> bool {
        self.links.contains_key(cluster)
    }

    /// Every link, by cluster name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &LinkInfo> {
        self.links.values()
    }

    /// Writes `links` to a temporary file and renames it over `links.json`, so a crash never
    /// leaves a half-written file.
    fn save(&self, links: &BTreeMap<String, LinkInfo>) -> Result<(), LinkError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let persist = |reason: String| LinkError::Persist {
            path: path.clone(),
            reason,
        };
        let file = LinksFile {
            version: FORMAT_VERSION,
            links: links.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| persist(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes).map_err(|e| persist(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| persist(e.to_string()))
    }
}

/// Checks a peer's link info against this cluster and the other links.
fn validate(
    info: &LinkInfo,
    own_cluster: &str,
    own_trust_domain: &str,
    others: &BTreeMap<String, LinkInfo>,
) -> Result<(), LinkError> {
    let invalid = |m: String| Err(LinkError::Invalid(m));
    check_label(&info.cluster).map_err(|e| LinkError::Invalid(format!("cluster: {e}")))?;
    check_label(&info.region).map_err(|e| LinkError::Invalid(format!("region: {e}")))?;
    if info.cluster == own_cluster {
        return Err(LinkError::SelfLink(info.cluster.clone()));
    }
    let bundle = &info.trust_bundle;
    if bundle.cluster != info.cluster {
        return invalid(format!(
            "the trust bundle belongs to cluster {}, not {}",
            bundle.cluster, info.cluster
        ));
    }
    if bundle.trust_domain == own_trust_domain {
        return invalid(format!(
            "the trust bundle claims this cluster's own trust domain {own_trust_domain}"
        ));
    }
    if let Some(other) = others
        .values()
        .find(|o| o.trust_bundle.trust_domain == bundle.trust_domain)
    {
        return Err(LinkError::Conflict(format!(
            "trust domain {} already belongs to linked cluster {}; unlink it first",
            bundle.trust_domain, other.cluster
        )));
    }
    TrustBundles::parse(std::slice::from_ref(bundle))
        .map_err(|e| LinkError::Invalid(e.to_string()))?;
    if info.gateway_addr.ip().is_unspecified() || info.gateway_addr.port() == 0 {
        return invalid(format!(
            "gateway address {} cannot be dialled (wildcard IP or port 0)",
            info.gateway_addr
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use mesh_core::identity::{ClusterCa, TrustBundle};

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mesh-fed-links-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn info(cluster: &str, port: u16) -> LinkInfo {
        let td = format!("{cluster}.mesh");
        let ca = ClusterCa::generate(&td).unwrap();
        LinkInfo {
            cluster: cluster.into(),
            region: "eu".into(),
            trust_bundle: TrustBundle {
                trust_domain: td,
                cluster: cluster.into(),
                ca_pem: ca.cert_pem().into(),
            },
            gateway_addr: local(port),
        }
    }

    fn local(port: u16) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn links_survive_a_restart() {
        let dir = temp_dir("restart");
        let mut store = LinkStore::load(&dir, "us-east", "us-east.mesh").unwrap();
        assert_eq!(store.iter().count(), 0);
        let eu = info("eu-central", 7000);
        store.add(eu.clone()).unwrap();
        store.add(info("ap-south", 7001)).unwrap();
        store.remove("ap-south").unwrap();
        let reloaded = LinkStore::load(&dir, "us-east", "us-east.mesh").unwrap();
        assert_eq!(reloaded.iter().cloned().collect::<Vec<_>>(), vec![eu]);
        assert!(!dir.join("links.json.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn adding_is_idempotent_and_updates_are_told_apart() {
        let dir = temp_dir("idem");
        let mut store = LinkStore::load(&dir, "us-east", "us-east.mesh").unwrap();
        let eu = info("eu-central", 7000);
        assert_eq!(store.add(eu.clone()).unwrap(), LinkChange::Created);
        let written = std::fs::metadata(dir.join(LINKS_FILE))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(store.add(eu.clone()).unwrap(), LinkChange::Unchanged);
        assert_eq!(
            std::fs::metadata(dir.join(LINKS_FILE))
                .unwrap()
                .modified()
                .unwrap(),
            written,
            "an unchanged link is not rewritten"
        );
        let mut moved = eu.clone();
        moved.gateway_addr = local(7100);
        assert_eq!(store.add(moved.clone()).unwrap(), LinkChange::Updated);
        assert_eq!(store.get("eu-central"), Some(&moved));
        assert_eq!(store.iter().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_links_are_refused() {
        let mut store = LinkStore::ephemeral("us-east", "us-east.mesh");
        assert!(matches!(
            store.add(info("us-east", 1)),
            Err(LinkError::SelfLink(_))
        ));
        let mut garbage = info("eu-central", 1);
        garbage.trust_bundle.ca_pem = "not a certificate".into();
        let err = store.add(garbage).unwrap_err();
        assert!(
            err.to_string().contains("trust bundle of eu-central.mesh"),
            "{err}"
        );
        let mut wrong_owner = info("eu-central", 1);
        wrong_owner.trust_bundle.cluster = "ap-south".into();
        assert!(matches!(store.add(wrong_owner), Err(LinkError::Invalid(_))));
        let mut own_domain = info("eu-central", 1);
        own_domain.trust_bundle.trust_domain = "us-east.mesh".into();
        assert!(matches!(store.add(own_domain), Err(LinkError::Invalid(_))));
        let mut wildcard = info("eu-central", 1);
        wildcard.gateway_addr = "0.0.0.0:7000".parse().unwrap();
        assert!(matches!(store.add(wildcard), Err(LinkError::Invalid(_))));
        store.add(info("eu-central", 1)).unwrap();
        let mut thief = info("ap-south", 2);
        thief.trust_bundle = store.get("eu-central").unwrap().trust_bundle.clone();
        thief.trust_bundle.cluster = "ap-south".into();
        assert!(matches!(store.add(thief), Err(LinkError::Conflict(_))));
        assert!(matches!(
            store.remove("ap-south"),
            Err(LinkError::NotLinked(_))
        ));
    }

    #[test]
    fn a_replaced_bundle_is_saved_and_validated() {
        let dir = temp_dir("bundle");
        let mut store = LinkStore::load(&dir, "us-east", "us-east.mesh").unwrap();
        let eu = info("eu-central", 7000);
        store.add(eu.clone()).unwrap();
        let second = ClusterCa::generate("eu-central.mesh").unwrap();
        let mut both = eu.trust_bundle.clone();
        both.ca_pem.push_str(second.cert_pem());
        store.replace_bundle("eu-central", both.clone()).unwrap();
        let reloaded = LinkStore::load(&dir, "us-east", "us-east.mesh").unwrap();
        assert_eq!(reloaded.bundle("eu-central"), Some(&both));
        let mut garbage = both.clone();
        garbage.ca_pem = "nope".into();
        assert!(store.replace_bundle("eu-central", garbage).is_err());
        assert!(matches!(
            store.replace_bundle("ap-south", both),
            Err(LinkError::NotLinked(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_file_names_the_path_and_the_fix() {
        let dir = temp_dir("corrupt");
        std::fs::write(dir.join(LINKS_FILE), "{ not json").unwrap();
        let err = LinkStore::load(&dir, "us-east", "us-east.mesh").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("links.json") && msg.contains("mesh link"),
            "{msg}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
