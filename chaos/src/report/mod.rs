//! The report of a suite run: a table per scenario on the terminal, one JSON file for machines,
//! and one SVG timeline per scenario.

mod svg;
mod table;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use svg::timeline_svg;
pub use table::scenario_table;

use crate::relay::RelayStats;
use crate::slo::analysis::Bucket;
use crate::slo::{SloResult, Verdict};

/// How a scenario ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every SLO held.
    Passed,
    /// An SLO was broken, or the run could not be completed.
    Failed,
    /// It needs what this machine lacks (network namespaces); nothing was claimed.
    NotRun,
    /// Ctrl-C or SIGTERM stopped it.
    Interrupted,
}

/// A fault or heal instant on the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mark {
    /// Seconds from the load's start, as executed.
    pub at_s: f64,
    /// `fault` or `heal`.
    pub kind: &'static str,
    /// E.g. `kill replicas`.
    pub label: String,
}

/// Totals of a run's load.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Requests sent.
    pub sent: u64,
    /// Requests answered 2xx with an intact body.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Requests sent more than 20 ms late (driver fell behind; their latency includes it).
    pub late_sends: u64,
    /// Median latency in milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: Option<f64>,
    /// Largest latency in milliseconds.
    pub max_ms: Option<f64>,
    /// The most frequent failure reasons with their counts.
    pub top_errors: Vec<(String, u64)>,
}

/// One scenario's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// Its file.
    pub file: PathBuf,
    /// What it proves.
    pub summary: String,
    /// `namespaces` or `loopback`.
    pub network: String,
    /// How it ended.
    pub status: Status,
    /// Why it could not run or complete, if so.
    pub error: Option<String>,
    /// Every SLO.
    pub slos: Vec<SloResult>,
    /// Load totals.
    pub totals: Totals,
    /// Fault and heal instants.
    pub marks: Vec<Mark>,
    /// Per-second series.
    pub buckets: Vec<Bucket>,
    /// Impairment relays, by `from->to`.
    pub relays: Vec<(String, RelayStats)>,
    /// What was found after teardown (should be empty).
    pub leftovers: Vec<String>,
    /// Where the component logs are.
    pub logs: PathBuf,
    /// Wall time of the whole scenario (set-up and teardown included), in seconds.
    pub wall_s: f64,
}

impl ScenarioReport {
    /// A report whose status follows from its SLO verdicts.
    pub fn status_from_slos(slos: &[SloResult]) -> Status {
        if slos.iter().any(|s| s.verdict == Verdict::Fail) {
            Status::Failed
        } else if slos.iter().any(|s| s.verdict == Verdict::NotRun) {
            Status::NotRun
        } else {
            Status::Passed
        }
    }
}

/// A whole suite run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuiteReport {
    /// Unix time of the start.
    pub started_unix_s: u64,
    /// `namespaces`, or `loopback` with the reason.
    pub network: String,
    /// The scenarios, in run order.
    pub scenarios: Vec<ScenarioReport>,
}

impl SuiteReport {
    /// Whether every SLO of every scenario held.
    pub fn all_passed(&self) -> bool {
        !self.scenarios.is_empty() && self.scenarios.iter().all(|s| s.status == Status::Passed)
    }

    /// Writes `report.json` and `<scenario>.svg` into `dir`; returns the files written.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut files = Vec::new();
        let json = dir.join("report.json");
        std::fs::write(
            &json,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        files.push(json);
        for s in &self.scenarios {
            if s.buckets.is_empty() {
                continue;
            }
            let svg = dir.join(format!("{}.svg", s.name));
            std::fs::write(&svg, timeline_svg(s))?;
            files.push(svg);
        }
        Ok(files)
    }
}
