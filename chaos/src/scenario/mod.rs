//! Scenarios as data: YAML files under `chaos/scenarios/` naming a topology, a load, a timeline
//! of faults and heals, and SLOs. A file is refused before anything starts when it has an
//! unknown field or action, a target that the topology lacks, a heal before its fault or an SLO
//! without a bound, with the file, line and reason.
//!
//! ```yaml
//! name: replicas-die
//! summary: all local replicas die, then return; traffic fails over and back
//! fast: true
//! topology:
//!   clusters:
//!     - { name: us-east, region_priority: [us-west] }
//!     - { name: us-west, region_priority: [us-east] }
//! load: { client: us-east, rate: 100, protocol: mixed }
//! duration: 20s
//! timeline:
//!   - { at: 4s, fault: kill, id: replicas, targets: [us-east/echo-*, us-east/sidecar-echo-*] }
//!   - { at: 10s, heal: replicas }
//! slos:
//!   - { kind: failover_time, fault: replicas, cluster: us-west, max: 2s }
//!   - { kind: failed_requests, max_share: 0.01 }
//! ```

mod model;
mod raw;
mod targets;
mod validate;

use std::path::{Path, PathBuf};

use mesh_core::config::{ConfigError, parse_yaml, read_text};

pub use model::*;
pub use targets::ProcessCatalog;
pub use validate::{ACTIONS, SLO_KINDS};

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// A file that cannot be read, is not valid YAML for a scenario, or holds a value that makes
    /// no sense (file, line and field named, as for every config of the mesh).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A directory that cannot be listed.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Two files of a suite use the same scenario name.
    #[error("{second}: scenario name `{name}` is already used by {first}")]
    DuplicateName {
        /// The name.
        name: String,
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },
    /// A directory without scenario files.
    #[error("{0}: no scenario files (*.yaml) here")]
    Empty(PathBuf),
}

/// Parses and validates scenario text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
    let raw: raw::RawScenario = parse_yaml(text, &path.display().to_string())?;
    validate::validate(raw, path)
}

/// Reads and validates one scenario file.
pub fn load_file(path: &Path) -> Result<Scenario, ScenarioError> {
    parse(&read_text(path)?, path)
}

/// Reads a scenario file, or every `*.yaml`/`*.yml` file of a directory in name order; all of
/// them are validated before any runs.
pub fn load_path(path: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    let read_err = |source| ScenarioError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_dir() {
        return Ok(vec![load_file(path)?]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ScenarioError::Empty(path.to_path_buf()));
    }
    let mut out: Vec<Scenario> = Vec::new();
    for f in files {
        let s = load_file(&f)?;
        if let Some(first) = out.iter().find(|o| o.name == s.name) {
            return Err(ScenarioError::DuplicateName {
                name: s.name.clone(),
                first: first.file.clone(),
                second: f,
            });
        }
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
