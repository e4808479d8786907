//! The scenario file as written: every field located (`Spanned`) so that validation can name
//! the line of a bad value, unknown fields refused by serde. Times are durations as people write
//! them (`500ms`, `4s`, `1m 30s`).

use mesh_core::config::FileDuration;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A whole scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScenario {
    pub name: Spanned<String>,
    pub summary: Spanned<String>,
    #[serde(default)]
    pub fast: bool,
    pub topology: Spanned<RawTopology>,
    pub load: Spanned<RawLoad>,
    pub duration: Spanned<FileDuration>,
    #[serde(default)]
    pub timeline: Vec<Spanned<RawEvent>>,
    pub slos: Spanned<Vec<Spanned<RawSlo>>>,
}

/// The cluster-set (the same fields as `mesh up --topology`, client ports always ephemeral).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTopology {
    pub clusters: Spanned<Vec<RawCluster>>,
    #[serde(default)]
    pub lease_grace: Option<Spanned<FileDuration>>,
    /// Lifetime of the certificates the controllers sign (`--cert-ttl`).
    #[serde(default)]
    pub cert_ttl: Option<Spanned<FileDuration>>,
}

/// One cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub name: Spanned<String>,
    #[serde(default)]
    pub region: Option<Spanned<String>>,
    #[serde(default)]
    pub region_priority: Vec<Spanned<String>>,
    #[serde(default)]
    pub echo_replicas: Option<Spanned<u32>>,
}

/// The load.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLoad {
    pub client: Spanned<String>,
    pub rate: Spanned<u32>,
    #[serde(default)]
    pub protocol: Option<Spanned<String>>,
    #[serde(default)]
    pub method: Option<Spanned<String>>,
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    #[serde(default)]
    pub body_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    pub timeout: Option<Spanned<FileDuration>>,
    #[serde(default)]
    pub capture: Option<Spanned<bool>>,
}

/// One timeline entry: `fault: <action>` with its parameters, or `heal: <fault id>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEvent {
    pub at: Spanned<FileDuration>,
    #[serde(default)]
    pub fault: Option<Spanned<String>>,
    #[serde(default)]
    pub heal: Option<Spanned<String>>,
    #[serde(default)]
    pub id: Option<Spanned<String>>,
    #[serde(default)]
    pub targets: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub clusters: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub cluster: Option<Spanned<String>>,
    #[serde(default)]
    pub direction: Option<Spanned<String>>,
    #[serde(default)]
    pub share: Option<Spanned<f64>>,
    #[serde(default)]
    pub error_share: Option<Spanned<f64>>,
    #[serde(default)]
    pub latency: Option<Spanned<FileDuration>>,
    #[serde(default)]
    pub latency_share: Option<Spanned<f64>>,
    #[serde(default)]
    pub delay: Option<Spanned<FileDuration>>,
    #[serde(default)]
    pub jitter: Option<Spanned<FileDuration>>,
    #[serde(default)]
    pub loss: Option<Spanned<f64>>,
    #[serde(default)]
    pub reorder: Option<Spanned<f64>>,
    #[serde(default)]
    pub duplicate: Option<Spanned<f64>>,
    #[serde(default)]
    pub seed: Option<Spanned<u64>>,
    #[serde(default)]
    pub down: Option<Spanned<FileDuration>>,
    #[serde(default)]
    pub up: Option<Spanned<FileDuration>>,
    #[serde(default)]
    pub pause: Option<Spanned<FileDuration>>,
}

impl RawEvent {
    /// Names of the action parameters that are set, with their lines.
    pub(super) fn parameters(&self) -> Vec<(&'static str, u64)> {
        let mut out = Vec::new();
        macro_rules! check {
            ($($f:ident),*) => {
                $(if let Some(v) = &self.$f { out.push((stringify!($f), v.referenced.line())); })*
            };
        }
        check!(
            targets,
            clusters,
            cluster,
            direction,
            share,
            error_share,
            latency,
            latency_share,
            delay,
            jitter,
            loss,
            reorder,
            duplicate,
            seed,
            down,
            up,
            pause
        );
        out
    }
}

/// One SLO: a kind and its bound.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSlo {
    pub kind: Spanned<String>,
    #[serde(default)]
    pub phase: Option<Spanned<String>>,
    #[serde(default)]
    pub fault: Option<Spanned<String>>,
    #[serde(default)]
    pub cluster: Option<Spanned<String>>,
    #[serde(default)]
    pub replica: Option<Spanned<String>>,
    #[serde(default)]
    pub settle: Option<Spanned<FileDuration>>,
    #[serde(default)]
    pub max_count: Option<Spanned<u64>>,
    #[serde(default)]
    pub max_share: Option<Spanned<f64>>,
    #[serde(default)]
    pub min_share: Option<Spanned<f64>>,
    #[serde(default)]
    pub max: Option<Spanned<FileDuration>>,
}
