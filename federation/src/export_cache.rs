//! The last export catalog on disk (`exports.json` in the state directory), so that a restarted
//! controller does not tell its peers that the cluster exports less than it does while it
//! relearns its registrations. While warming, the controller exports the union of what it knows
//! and this cached catalog (a service's fresh entry wins once it has at least as many
//! endpoints); afterwards the cache is only written.
//!
//! It is a cache, never a source of truth: a missing file, one older than the peers' lease grace
//! (they have withdrawn the cluster by then, so re-exporting stale endpoints would be worse than
//! starting empty) or an unreadable one is ignored, the last with a warning naming the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mesh_core::catalog::{ExportCatalog, ExportedService};
use mesh_core::names::ServiceKey;

/// File name inside the state directory.
const FILE: &str = "exports.json";

/// Services exported, by key.
pub(crate) type ExportedServices = BTreeMap<ServiceKey, ExportedService>;

/// Where the export catalog is kept, if anywhere.
#[derive(Debug, Clone)]
pub(crate) struct ExportCache {
    path: Option<PathBuf>,
    /// Kubernetes mode: the catalog read from the cache ConfigMap at start (already checked for
    /// age); the leader writes the ConfigMap, so [`save`](Self::save) keeps nothing here.
    preloaded: Option<ExportedServices>,
}

impl ExportCache {
    /// The cache in `state_dir`.
    pub(crate) fn in_dir(state_dir: &Path) -> Self {
        Self {
            path: Some(state_dir.join(FILE)),
            preloaded: None,
        }
    }

    /// A cache whose content was read elsewhere (Kubernetes mode: from a ConfigMap).
    pub(crate) fn preloaded(services: Option<ExportedServices>) -> Self {
        Self {
            path: None,
            preloaded: services,
        }
    }

    /// A cache that keeps nothing (tests).
    #[cfg(test)]
    pub(crate) fn ephemeral() -> Self {
        Self::preloaded(None)
    }

    /// The services of the catalog saved less than `max_age` ago, if there is one.
    pub(crate) fn load_recent(&self, max_age: Duration) -> Option<ExportedServices> {
        if self.preloaded.is_some() {
            return self.preloaded.clone();
        }
        let path = self.path.as_ref()?;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        if age >= max_age {
            tracing::info!(file = %path.display(), age_s = age.as_secs(), "cached export catalog too old to re-export; starting empty");
            return None;
        }
        let parsed = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<ExportCatalog>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(catalog) => Some(catalog.services),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cached export catalog unreadable; ignoring it");
                None
            }
        }
    }

    /// Saves `catalog` (through a temporary file and a rename, so a crash never leaves half a
    /// file); a failure is logged, never fatal: the cache only shortens a restart's warm-up.
    pub(crate) fn save(&self, catalog: &ExportCatalog) {
        let Some(path) = &self.path else { return };
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(catalog)
            .map_err(|e| e.to_string())
            .and_then(|bytes| std::fs::write(&tmp, bytes).map_err(|e| e.to_string()))
            .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "cannot cache the export catalog");
        }
    }
}

/// `fresh` with every service of `cached` that `fresh` lacks or lists with fewer endpoints.
pub(crate) fn merge_warming(fresh: &mut ExportedServices, cached: &ExportedServices) {
    for (key, old) in cached {
        let grown = fresh
            .get(key)
            .is_some_and(|new| new.endpoints.len() >= old.endpoints.len());
        if !grown {
            fresh.insert(key.clone(), old.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::catalog::ExportedEndpoint;

    use super::*;

    fn service(endpoints: u16) -> ExportedService {
        ExportedService {
            healthy: true,
            endpoints: (0..endpoints)
                .map(|i| ExportedEndpoint {
                    address: std::net::SocketAddr::from(([10, 0, 0, 1], 9000 + i)),
                    identity: "spiffe://home.mesh/ns/demo/sa/echo".into(),
                    healthy: true,
                })
                .collect(),
            ports: Vec::new(),
            exported_since: None,
        }
    }

    fn key(name: &str) -> ServiceKey {
        name.parse().unwrap()
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mesh-export-cache-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn warming_keeps_what_is_not_relearned_and_takes_what_grew() {
        let mut fresh: ExportedServices = [
            (key("echo.demo"), service(1)),
            (key("web.demo"), service(3)),
        ]
        .into();
        let cached: ExportedServices = [
            (key("echo.demo"), service(2)),
            (key("web.demo"), service(2)),
            (key("db.demo"), service(1)),
        ]
        .into();
        merge_warming(&mut fresh, &cached);
        assert_eq!(fresh[&key("echo.demo")], service(2));
        assert_eq!(fresh[&key("web.demo")], service(3));
        assert_eq!(fresh[&key("db.demo")], service(1));
    }

    #[test]
    fn a_saved_catalog_is_loaded_while_recent_and_a_broken_one_is_ignored() {
        let dir = scratch("roundtrip");
        let cache = ExportCache::in_dir(&dir);
        assert_eq!(
            cache.load_recent(Duration::from_secs(30)),
            None,
            "no file yet"
        );
        let mut catalog = ExportCatalog::new("home");
        catalog.services.insert(key("echo.demo"), service(2));
        cache.save(&catalog);
        assert_eq!(
            cache.load_recent(Duration::from_secs(30)),
            Some(catalog.services.clone())
        );
        assert_eq!(cache.load_recent(Duration::ZERO), None, "too old");
        std::fs::write(dir.join(FILE), b"{ not json").unwrap();
        assert_eq!(cache.load_recent(Duration::from_secs(30)), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
