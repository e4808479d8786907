//! A cluster's CA state directory through a root rotation: `ca.crt` holds the trusted roots
//! (what components read to trust their controller), `ca.key` (0600) the key of the root that
//! signed before the rotation, and `ca-rotation.json` (0600) the rotation: its phase, the old
//! and new roots, the new root's key until it replaces `ca.key`, and timestamps.
//!
//! Every file is replaced atomically (written beside it, then renamed), and each step writes in
//! an order that [`CaDirectory::load`] can finish after a crash between two writes: the
//! rotation file is written first (so the new key is never lost), `ca.crt` after it; at
//! retire `ca.key` is replaced first, then `ca.crt`, then the rotation file.

use std::path::{Path, PathBuf};

use rcgen::KeyPair;
use serde::{Deserialize, Serialize};

use super::ca::{CA_CERT_FILE, CA_KEY_FILE, CaError, ClusterCa, crypto, io, write_private};
use super::rotation::{RotationPhase, bundle_fingerprints, pem_blocks};

/// File of the rotation state inside a cluster's state directory.
pub const ROTATION_FILE: &str = "ca-rotation.json";
/// Version of the rotation file's format.
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotationFile {
    version: u32,
    phase: RotationPhase,
    old_root_pem: String,
    new_root_pem: String,
    /// The new root's key, until retire moves it to `ca.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    new_key_pem: Option<String>,
    started_unix_ms: u64,
    phase_since_unix_ms: u64,
}

/// A rotation as loaded: its phase, roots (fingerprints) and timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRecord {
    /// The phase.
    pub phase: RotationPhase,
    /// Fingerprint of the root being replaced.
    pub old_root: String,
    /// Fingerprint of the root replacing it.
    pub new_root: String,
    /// When `add` was taken (Unix milliseconds).
    pub started_unix_ms: u64,
    /// When the phase began (Unix milliseconds).
    pub phase_since_unix_ms: u64,
}

/// A cluster's CA directory.
#[derive(Debug, Clone)]
pub struct CaDirectory {
    dir: PathBuf,
    trust_domain: String,
}

impl CaDirectory {
    /// The CA of `trust_domain` in `dir`.
    pub fn new(dir: &Path, trust_domain: &str) -> Self {
        Self {
            dir: dir.to_path_buf(),
            trust_domain: trust_domain.to_string(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read_rotation(&self) -> Result<Option<RotationFile>, CaError> {
        let path = self.path(ROTATION_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let file: RotationFile = serde_json::from_slice(&bytes).map_err(|e| {
            CaError::Refused(format!(
                "{}: not a rotation file: {e}; restore it, or remove it to abandon the rotation \
                 (certificates of its new root then stop being trusted)",
                path.display()
            ))
        })?;
        if file.version != FORMAT_VERSION {
            return Err(CaError::Refused(format!(
                "{}: format version {} is not supported (expected {FORMAT_VERSION})",
                path.display(),
                file.version
            )));
        }
        Ok(Some(file))
    }

    fn write_rotation(&self, file: &RotationFile) -> Result<(), CaError> {
        let path = self.path(ROTATION_FILE);
        let bytes = serde_json::to_string_pretty(file)
            .map_err(|e| CaError::Refused(format!("{}: {e}", path.display())))?;
        replace_file(&path, &bytes, true)
    }

    /// Loads the CA: the root that signs now and the roots trusted now, plus the rotation if
    /// one was started. Finishes a step a crash interrupted between two of its writes.
    pub fn load(&self) -> Result<(ClusterCa, Option<RotationRecord>), CaError> {
        let Some(mut file) = self.read_rotation()? else {
            return Ok((ClusterCa::load_files(&self.dir, &self.trust_domain)?, None));
        };
        let both = trusted_in(&file);
        let ca = match file.phase {
            RotationPhase::Retired => ClusterCa::load_files(&self.dir, &self.trust_domain)?,
            RotationPhase::Added | RotationPhase::Switched => {
                let new_key = file.new_key_pem.clone().ok_or_else(|| self.missing_key())?;
                let on_disk = ClusterCa::load_files(&self.dir, &self.trust_domain)?;
                if on_disk.cert_pem() == file.new_root_pem {
                    // Retire had replaced `ca.key` when it was interrupted: finish it.
                    let since = file.phase_since_unix_ms;
                    let (ca, record) = self.finish_retire(&mut file, since)?;
                    return Ok((ca, Some(record)));
                }
                if on_disk.trusted_pem() != both {
                    replace_file(&self.path(CA_CERT_FILE), &both, false)?;
                }
                match file.phase {
                    RotationPhase::Added => on_disk.with_trusted(both),
                    _ => self.new_root_ca(&file, &new_key)?.with_trusted(both),
                }
            }
        };
        Ok((ca, Some(record(&file)?)))
    }

    fn new_root_ca(&self, file: &RotationFile, key_pem: &str) -> Result<ClusterCa, CaError> {
        let source = self.path(ROTATION_FILE).display().to_string();
        ClusterCa::from_pem(
            &file.new_root_pem,
            key_pem,
            &self.trust_domain,
            (&source, &source),
        )
    }

    /// Step `add`: generates the new root and trusts both; the old root keeps signing.
    pub fn add(&self, now_ms: u64) -> Result<(ClusterCa, RotationRecord), CaError> {
        let current = ClusterCa::load_files(&self.dir, &self.trust_domain)?;
        if pem_blocks(current.trusted_pem()).len() != 1 {
            return Err(CaError::Refused(format!(
                "{} holds several roots but no rotation is recorded in {ROTATION_FILE}; keep \
                 only the root of ca.key in it before rotating",
                self.path(CA_CERT_FILE).display()
            )));
        }
        let new = ClusterCa::generate(&self.trust_domain)?;
        let file = RotationFile {
            version: FORMAT_VERSION,
            phase: RotationPhase::Added,
            old_root_pem: current.cert_pem().to_string(),
            new_root_pem: new.cert_pem().to_string(),
            new_key_pem: Some(new.key_pem()),
            started_unix_ms: now_ms,
            phase_since_unix_ms: now_ms,
        };
        self.write_rotation(&file)?;
        let both = format!("{}{}", file.old_root_pem, file.new_root_pem);
        replace_file(&self.path(CA_CERT_FILE), &both, false)?;
        Ok((current.with_trusted(both), record(&file)?))
    }

    /// Step `switch`: the new root signs; both stay trusted.
    pub fn switch(&self, now_ms: u64) -> Result<(ClusterCa, RotationRecord), CaError> {
        let mut file = self.in_phase(RotationPhase::Added, "switch")?;
        let key = file.new_key_pem.clone().ok_or_else(|| self.missing_key())?;
        file.phase = RotationPhase::Switched;
        file.phase_since_unix_ms = now_ms;
        let both = trusted_in(&file);
        let ca = self.new_root_ca(&file, &key)?.with_trusted(both.clone());
        self.write_rotation(&file)?;
        replace_file(&self.path(CA_CERT_FILE), &both, false)?;
        Ok((ca, record(&file)?))
    }

    fn missing_key(&self) -> CaError {
        CaError::Refused(format!(
            "{}: the new root's key is missing",
            self.path(ROTATION_FILE).display()
        ))
    }

    /// Step `retire`: the new root's key becomes `ca.key`, `ca.crt` holds only the new root.
    pub fn retire(&self, now_ms: u64) -> Result<(ClusterCa, RotationRecord), CaError> {
        let mut file = self.in_phase(RotationPhase::Switched, "retire")?;
        let key = file.new_key_pem.clone().ok_or_else(|| self.missing_key())?;
        // Checked before anything is written.
        KeyPair::from_pem(&key).map_err(crypto("parsing the new root's key"))?;
        replace_file(&self.path(CA_KEY_FILE), &key, true)?;
        self.finish_retire(&mut file, now_ms)
    }

    fn finish_retire(
        &self,
        file: &mut RotationFile,
        now_ms: u64,
    ) -> Result<(ClusterCa, RotationRecord), CaError> {
        replace_file(&self.path(CA_CERT_FILE), &file.new_root_pem, false)?;
        file.phase = RotationPhase::Retired;
        file.phase_since_unix_ms = now_ms;
        file.new_key_pem = None;
        self.write_rotation(file)?;
        let ca = ClusterCa::load_files(&self.dir, &self.trust_domain)?;
        Ok((ca, record(file)?))
    }

    fn in_phase(&self, phase: RotationPhase, step: &str) -> Result<RotationFile, CaError> {
        match self.read_rotation()? {
            Some(file) if file.phase == phase => Ok(file),
            other => Err(CaError::Refused(format!(
                "cannot {step}: the rotation is in phase {:?}, not {phase:?}",
                other.map(|f| f.phase)
            ))),
        }
    }
}

/// The trusted roots of a rotation in `file`'s phase, the signing root first (components read
/// the order as the hint to renew, see [`super::rotation::renew_if_signing_root_changed`]).
fn trusted_in(file: &RotationFile) -> String {
    match file.phase {
        RotationPhase::Added => format!("{}{}", file.old_root_pem, file.new_root_pem),
        RotationPhase::Switched | RotationPhase::Retired => {
            format!("{}{}", file.new_root_pem, file.old_root_pem)
        }
    }
}

fn record(file: &RotationFile) -> Result<RotationRecord, CaError> {
    let fp = |pem: &str, what: &str| {
        bundle_fingerprints(pem)
            .map_err(|e| CaError::Refused(format!("{ROTATION_FILE}: the {what} root: {e}")))?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::Refused(format!("{ROTATION_FILE}: the {what} root is empty")))
    };
    Ok(RotationRecord {
        phase: file.phase,
        old_root: fp(&file.old_root_pem, "old")?,
        new_root: fp(&file.new_root_pem, "new")?,
        started_unix_ms: file.started_unix_ms,
        phase_since_unix_ms: file.phase_since_unix_ms,
    })
}

/// Writes `contents` beside `path` and renames it over `path` (mode 0600 when `private`).
fn replace_file(path: &Path, contents: &str, private: bool) -> Result<(), CaError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if private {
        write_private(&tmp, contents)?;
    } else {
        std::fs::write(&tmp, contents).map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;
    use crate::identity::SpiffeId;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mesh-rot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn fingerprints(pem: &str) -> Vec<String> {
        bundle_fingerprints(pem).unwrap()
    }

    #[test]
    fn a_rotation_goes_through_its_files_and_survives_reloads() {
        let dir = temp_dir("steps");
        let td = "us-east.mesh";
        let first = ClusterCa::generate(td).unwrap();
        first.write_to(&dir).unwrap();
        let cad = CaDirectory::new(&dir, td);
        assert_eq!(cad.load().unwrap().1, None);

        let (added, rec) = cad.add(1_000).unwrap();
        assert_eq!(rec.phase, RotationPhase::Added);
        assert_eq!(
            added.cert_pem(),
            first.cert_pem(),
            "the old root still signs"
        );
        assert_eq!(fingerprints(added.trusted_pem()).len(), 2);
        let mode = std::fs::metadata(dir.join(ROTATION_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the new key is private");
        let on_disk = std::fs::read_to_string(dir.join(CA_CERT_FILE)).unwrap();
        assert_eq!(fingerprints(&on_disk).len(), 2, "ca.crt trusts both");
        let (reloaded, rec2) = cad.load().unwrap();
        assert_eq!(rec2, Some(rec.clone()));
        assert_eq!(reloaded.cert_pem(), first.cert_pem());
        assert!(cad.retire(2_000).is_err(), "retire before switch");

        let (switched, rec) = cad.switch(3_000).unwrap();
        assert_eq!(rec.phase, RotationPhase::Switched);
        assert_eq!(switched.signing_fingerprint(), rec.new_root);
        assert!(
            switched.trusted_pem().starts_with(switched.cert_pem()),
            "the signing root is listed first"
        );
        assert_eq!(cad.load().unwrap().0.signing_fingerprint(), rec.new_root);
        let leaf = switched
            .issue(&SpiffeId::gateway(td), Duration::from_secs(60))
            .unwrap();
        assert_eq!(leaf.id, SpiffeId::gateway(td));

        let (retired, rec) = cad.retire(4_000).unwrap();
        assert_eq!(rec.phase, RotationPhase::Retired);
        assert_eq!(
            fingerprints(retired.trusted_pem()),
            vec![rec.new_root.clone()]
        );
        let (loaded, rec3) = cad.load().unwrap();
        assert_eq!(loaded.signing_fingerprint(), rec.new_root);
        assert_eq!(rec3.map(|r| r.phase), Some(RotationPhase::Retired));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_retire_interrupted_after_the_key_is_finished_at_load() {
        let dir = temp_dir("crash");
        let td = "us-east.mesh";
        ClusterCa::generate(td).unwrap().write_to(&dir).unwrap();
        let cad = CaDirectory::new(&dir, td);
        cad.add(1).unwrap();
        let (_, rec) = cad.switch(2).unwrap();
        // The crash: `ca.key` already holds the new key, nothing else was written.
        let file = cad.read_rotation().unwrap().unwrap();
        replace_file(
            &dir.join(CA_KEY_FILE),
            file.new_key_pem.as_deref().unwrap(),
            true,
        )
        .unwrap();
        let (ca, loaded) = cad.load().unwrap();
        assert_eq!(loaded.map(|r| r.phase), Some(RotationPhase::Retired));
        assert_eq!(fingerprints(ca.trusted_pem()), vec![rec.new_root]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_add_interrupted_before_ca_crt_is_finished_at_load() {
        let dir = temp_dir("add-crash");
        let td = "us-east.mesh";
        let first = ClusterCa::generate(td).unwrap();
        first.write_to(&dir).unwrap();
        let cad = CaDirectory::new(&dir, td);
        cad.add(1).unwrap();
        std::fs::write(dir.join(CA_CERT_FILE), first.cert_pem()).unwrap();
        let (ca, _) = cad.load().unwrap();
        assert_eq!(fingerprints(ca.trusted_pem()).len(), 2);
        let on_disk = std::fs::read_to_string(dir.join(CA_CERT_FILE)).unwrap();
        assert_eq!(fingerprints(&on_disk).len(), 2);
        std::fs::write(dir.join(ROTATION_FILE), "{ nope").unwrap();
        let err = cad.load().unwrap_err().to_string();
        assert!(
            err.contains(ROTATION_FILE) && err.contains("abandon"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
