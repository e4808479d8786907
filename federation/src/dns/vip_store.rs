//! Where VIP allocations are recorded so they survive restarts: in local mode the file
//! `dns-vips.json` in the state directory (written to a temporary file, then renamed, so a
//! crash never leaves half a file); in Kubernetes mode the `ServiceImport`s' `spec.ips`, which
//! the leader writes and every replica reads back at start (`kubernetes/writer.rs`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name in the state directory.
pub(crate) const FILE_NAME: &str = "dns-vips.json";

/// Where allocations are recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VipStore {
    /// `dns-vips.json` at this path.
    File(PathBuf),
    /// In the `ServiceImport`s (Kubernetes mode): nothing to save here.
    ServiceImports,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct VipFile {
    /// Allocation name (`<svc>.<ns>` or `<svc>.<ns>.<cluster>`) -> VIP.
    vips: BTreeMap<String, Ipv4Addr>,
}

impl VipStore {
    /// The file store in the state directory `dir`.
    pub(crate) fn in_dir(dir: &Path) -> Self {
        Self::File(dir.join(FILE_NAME))
    }

    /// The recorded allocations (none when there is no file yet; a file that does not parse
    /// is reported and ignored, allocations then start over from the names' hashes).
    pub(crate) fn load(&self) -> BTreeMap<String, Ipv4Addr> {
        let Self::File(path) = self else {
            return BTreeMap::new();
        };
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<VipFile>(&bytes) {
                Ok(file) => file.vips,
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "VIP records unreadable; allocating again");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "VIP records unreadable; allocating again");
                BTreeMap::new()
            }
        }
    }

    /// Records `vips`.
    pub(crate) fn save(&self, vips: &BTreeMap<String, Ipv4Addr>) -> Result<(), String> {
        let Self::File(path) = self else {
            return Ok(());
        };
        let body = serde_json::to_vec_pretty(&VipFile { vips: vips.clone() })
            .map_err(|e| e.to_string())?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_the_file() {
        let dir = std::env::temp_dir().join(format!("mesh-vips-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = VipStore::in_dir(&dir);
        assert!(store.load().is_empty());
        let vips = BTreeMap::from([("echo.demo".to_string(), Ipv4Addr::new(240, 240, 1, 2))]);
        store.save(&vips).unwrap();
        assert_eq!(store.load(), vips);
        std::fs::write(dir.join(FILE_NAME), b"{not json").unwrap();
        assert!(store.load().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(VipStore::ServiceImports.load().is_empty());
        assert!(VipStore::ServiceImports.save(&vips).is_ok());
    }
}
