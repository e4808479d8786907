//! The cluster-set topology file that `mesh up` reads, validated at load with errors that name
//! the file, line and field.
//!
//! ```yaml
//! clusters:
//!   - name: us-east
//!     region: us-east
//!     region_priority: [us-west, eu-central]   # other regions, preferred first
//!     echo_replicas: 2
//!     client_port: 15001                       # 0 = any free port
//! lease_grace: 30s                             # any humantime duration: 500ms, 1m 30s
//! ```

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::names::check_label;

/// Why a topology was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax, a type mismatch or an unknown field (the message carries line and column).
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's message with the location.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("{file}: line {line}: field `{field}`: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: u64,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// A duration as a file writes it (`500ms`, `30s`, `1m 30s`); wrapped in `Spanned` it keeps
/// its line, and a bad value fails with the parser's location.
pub type FileDuration = humantime_serde::Serde<Duration>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    clusters: Spanned<Vec<RawCluster>>,
    #[serde(default)]
    lease_grace: Option<Spanned<FileDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Spanned<String>,
    #[serde(default)]
    region: Option<Spanned<String>>,
    #[serde(default)]
    region_priority: Vec<Spanned<String>>,
    #[serde(default)]
    echo_replicas: Option<Spanned<u32>>,
    #[serde(default)]
    client_port: Option<u16>,
}

/// One cluster of the cluster-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Cluster name (a DNS label; also the trust domain `<name>.mesh`).
    pub name: String,
    /// Region the cluster is in (defaults to the cluster name).
    pub region: String,
    /// Other regions, preferred first, for failover order.
    pub region_priority: Vec<String>,
    /// Replicas of the demo `echo` service.
    pub echo_replicas: u32,
    /// Port of the client sidecar users send requests to (`None` = any free port).
    pub client_port: Option<u16>,
}

/// A validated cluster-set topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The clusters.
    pub clusters: Vec<ClusterSpec>,
    /// How long a peer's catalog is kept after its link drops.
    pub lease_grace: Duration,
}

/// Most demo replicas a cluster may ask for: each is two processes on this machine.
const MAX_ECHO_REPLICAS: u32 = 8;
/// Replicas of `echo` per cluster by default: two, so one can fail without a failover.
const DEFAULT_ECHO_REPLICAS: u32 = 2;

/// Parses YAML text into `T` (whose structs should reject unknown fields); errors name `file`
/// and carry the parser's line, column and field.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ConfigError> {
    serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
        file: file.to_string(),
        message: e.to_string().trim_start_matches("error: ").to_string(),
    })
}

/// Reads a whole text file, naming it in the error.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.display().to_string(),
        source,
    })
}

impl Topology {
    /// The default cluster-set: three clusters in three regions, each preferring the nearest.
    pub fn default_set() -> Self {
        let spec = |name: &str, prio: [&str; 2], port: u16| ClusterSpec {
            name: name.into(),
            region: name.into(),
            region_priority: prio.iter().map(|s| s.to_string()).collect(),
            echo_replicas: DEFAULT_ECHO_REPLICAS,
            client_port: Some(port),
        };
        Self {
            clusters: vec![
                spec("us-east", ["us-west", "eu-central"], 15001),
                spec("us-west", ["us-east", "eu-central"], 15101),
                spec("eu-central", ["us-east", "us-west"], 15201),
            ],
            lease_grace: crate::peer_catalogs::DEFAULT_LEASE_GRACE,
        }
    }

    /// Reads and validates a topology file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read_text(path)?, &path.display().to_string())
    }

    /// Parses and validates topology text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let raw: RawTopology = parse_yaml(text, file)?;
        let invalid = |line: u64, field: &str, message: String| ConfigError::Invalid {
            file: file.to_string(),
            line,
            field: field.to_string(),
            message,
        };
        if raw.clusters.value.is_empty() {
            return Err(invalid(
                raw.clusters.referenced.line(),
                "clusters",
                "at least one cluster is needed".into(),
            ));
        }
        let mut names = HashSet::new();
        let mut regions = HashSet::new();
        for c in &raw.clusters.value {
            check_label(&c.name.value)
                .map_err(|e| invalid(c.name.referenced.line(), "name", e.to_string()))?;
            if !names.insert(c.name.value.clone()) {
                return Err(invalid(
                    c.name.referenced.line(),
                    "name",
                    format!("cluster `{}` is declared twice", c.name.value),
                ));
            }
            let region = c.region.as_ref().unwrap_or(&c.name);
            check_label(&region.value)
                .map_err(|e| invalid(region.referenced.line(), "region", e.to_string()))?;
            regions.insert(region.value.clone());
        }
        let mut clusters = Vec::new();
        let mut ports = HashSet::new();
        for c in raw.clusters.value {
            let own_region = c.region.as_ref().unwrap_or(&c.name).value.clone();
            for r in &c.region_priority {
                if !regions.contains(&r.value) {
                    return Err(invalid(
                        r.referenced.line(),
                        "region_priority",
                        format!("region `{}` is not the region of any cluster", r.value),
                    ));
                }
                if r.value == own_region {
                    return Err(invalid(
                        r.referenced.line(),
                        "region_priority",
                        format!(
                            "`{}` is this cluster's own region; list only other regions",
                            r.value
                        ),
                    ));
                }
            }
            let echo_replicas = match &c.echo_replicas {
                Some(n) if n.value == 0 || n.value > MAX_ECHO_REPLICAS => {
                    return Err(invalid(
                        n.referenced.line(),
                        "echo_replicas",
                        format!("must be between 1 and {MAX_ECHO_REPLICAS}, got {}", n.value),
                    ));
                }
                Some(n) => n.value,
                None => DEFAULT_ECHO_REPLICAS,
            };
            let client_port = c.client_port.filter(|p| *p != 0);
            if let Some(p) = client_port
                && !ports.insert(p)
            {
                return Err(invalid(
                    c.name.referenced.line(),
                    "client_port",
                    format!("port {p} is used by two clusters"),
                ));
            }
            clusters.push(ClusterSpec {
                name: c.name.value,
                region: own_region,
                region_priority: c.region_priority.into_iter().map(|r| r.value).collect(),
                echo_replicas,
                client_port,
            });
        }
        let lease_grace = match raw.lease_grace {
            Some(grace) if grace.value.is_zero() => {
                return Err(invalid(
                    grace.referenced.line(),
                    "lease_grace",
                    "must be above 0".into(),
                ));
            }
            Some(grace) => *grace.value,
            None => crate::peer_catalogs::DEFAULT_LEASE_GRACE,
        };
        Ok(Self {
            clusters,
            lease_grace,
        })
    }

    /// Every client port set to "any free port" (tests run several cluster-sets at once).
    pub fn with_ephemeral_ports(mut self) -> Self {
        for c in &mut self.clusters {
            c.client_port = None;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
clusters:
  - name: us-east
    region_priority: [eu-central]
  - name: eu-central
    echo_replicas: 3
    client_port: 0
lease_grace: 5s
";

    #[test]
    fn a_good_file_loads_with_defaults_filled_in() {
        let t = Topology::parse(GOOD, "t.yaml").unwrap();
        assert_eq!(t.clusters.len(), 2);
        assert_eq!(t.clusters[0].region, "us-east");
        assert_eq!(t.clusters[0].echo_replicas, 2);
        assert_eq!(t.clusters[1].echo_replicas, 3);
        assert_eq!(t.clusters[1].client_port, None);
        assert_eq!(t.lease_grace, Duration::from_secs(5));
    }

    fn err(text: &str) -> String {
        Topology::parse(text, "topo.yaml").unwrap_err().to_string()
    }

    #[test]
    fn unknown_fields_name_file_line_and_field() {
        let e = err("clusters:\n  - name: a\n    replicas: 3\n");
        assert!(e.starts_with("topo.yaml: line 3"), "{e}");
        assert!(e.contains("unknown field `replicas`"), "{e}");
        let e = err("clusters: []\nextra: 1\n");
        assert!(e.contains("line 2") && e.contains("`extra`"), "{e}");
    }

    #[test]
    fn durations_are_written_as_durations_and_bad_ones_are_located() {
        let t = Topology::parse("clusters:\n  - name: a\nlease_grace: 1m 30s\n", "t").unwrap();
        assert_eq!(t.lease_grace, Duration::from_secs(90));
        let e = err("clusters:\n  - name: a\nlease_grace: 30 parsecs\n");
        assert!(
            e.starts_with("topo.yaml: line 3") && e.contains("lease_grace: 30 parsecs"),
            "{e}"
        );
        let e = err("clusters:\n  - name: a\nlease_grace: 0s\n");
        assert!(
            e.contains("line 3: field `lease_grace`: must be above 0"),
            "{e}"
        );
        // The field's old name is refused like any other unknown field.
        let e = err("clusters:\n  - name: a\nlease_grace_ms: 30000\n");
        assert!(
            e.starts_with("topo.yaml: line 3") && e.contains("unknown field `lease_grace_ms`"),
            "{e}"
        );
    }

    #[test]
    fn semantic_errors_name_file_line_and_field() {
        let e = err("clusters:\n  - name: a\n  - name: a\n");
        assert!(
            e.contains("topo.yaml: line 3: field `name`") && e.contains("declared twice"),
            "{e}"
        );
        let e = err("clusters:\n  - name: a\n    region_priority:\n      - mars\n");
        assert!(
            e.contains("line 4: field `region_priority`") && e.contains("mars"),
            "{e}"
        );
        let e = err("clusters:\n  - name: a\n    echo_replicas: 0\n");
        assert!(e.contains("line 3: field `echo_replicas`"), "{e}");
        let e = err("clusters:\n  - name: Bad_Name\n");
        assert!(e.contains("line 2: field `name`"), "{e}");
        let e = err("clusters: []\n");
        assert!(e.contains("at least one cluster"), "{e}");
        let e = err("clusters:\n  - name: a\n    echo_replicas: lots\n");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn default_set_is_three_clusters_with_distinct_ports() {
        let t = Topology::default_set();
        let names: Vec<_> = t.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["us-east", "us-west", "eu-central"]);
        assert!(
            t.with_ephemeral_ports()
                .clusters
                .iter()
                .all(|c| c.client_port.is_none())
        );
    }
}
