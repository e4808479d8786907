//! Checking a scenario's SLOs against what its run recorded: pure, so every verdict can be
//! reproduced from the JSON report.

use std::time::Duration;

use serde::Serialize;

use super::analysis::{locality_switches, p99, served_share_by, time_to_serve, window};
use crate::load::{DigestCheck, LoadResult};
use crate::scenario::{Phase, Scenario, SloKind, SloSpec};

/// The verdict on one SLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The bound held.
    Pass,
    /// The bound was broken (or the value could not be measured).
    Fail,
    /// The scenario could not run here (e.g. no network namespaces); never a pass.
    NotRun,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::NotRun => "not run",
        })
    }
}

/// One SLO checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloResult {
    /// Line of the SLO in the scenario file.
    pub line: u64,
    /// Its kind.
    pub kind: &'static str,
    /// What it says, in words.
    pub description: String,
    /// The bound, in words (`<= 2000 ms`).
    pub bound: String,
    /// The measured value, in words (`850 ms`), or why there is none.
    pub measured: String,
    /// The measured value as a number, in the bound's unit, when there is one.
    pub value: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
}

/// What besides the outcomes the checks need.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFacts {
    /// Processes, namespaces and links of the run found after teardown.
    pub leftovers: u64,
}

/// The `[from, to)` of a phase in a run of `scenario`.
pub fn phase_bounds(scenario: &Scenario, phase: &Phase) -> (Duration, Duration) {
    let end = scenario.duration;
    match phase {
        Phase::Whole => (Duration::ZERO, end),
        Phase::Before => (
            Duration::ZERO,
            scenario
                .faults()
                .filter_map(|(id, _)| scenario.fault_at(id))
                .min()
                .unwrap_or(end),
        ),
        Phase::During(f) => (
            scenario.fault_at(f).unwrap_or(end),
            scenario.heal_at(f).unwrap_or(end),
        ),
        Phase::After { fault, settle } => (
            (scenario.heal_at(fault).unwrap_or(end) + *settle).min(end),
            end,
        ),
    }
}

fn phase_words(phase: &Phase) -> String {
    match phase {
        Phase::Whole => "over the whole run".into(),
        Phase::Before => "before any fault".into(),
        Phase::During(f) => format!("during `{f}`"),
        Phase::After { fault, settle } if settle.is_zero() => format!("after `{fault}` is healed"),
        Phase::After { fault, settle } => {
            format!("from {} ms after `{fault}` is healed", settle.as_millis())
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Marks every SLO of `scenario` as not run, with the reason.
pub fn not_run(scenario: &Scenario, reason: &str) -> Vec<SloResult> {
    scenario
        .slos
        .iter()
        .map(|s| {
            let mut r = check(scenario, s, &LoadResult::default(), RunFacts::default());
            r.measured = reason.to_string();
            r.value = None;
            r.verdict = Verdict::NotRun;
            r
        })
        .collect()
}

/// Checks every SLO of `scenario` against `load`.
pub fn evaluate(scenario: &Scenario, load: &LoadResult, facts: RunFacts) -> Vec<SloResult> {
    scenario
        .slos
        .iter()
        .map(|s| check(scenario, s, load, facts))
        .collect()
}

fn check(scenario: &Scenario, slo: &SloSpec, load: &LoadResult, facts: RunFacts) -> SloResult {
    let o = &load.outcomes;
    let end = scenario.duration;
    let mut r = SloResult {
        line: slo.line,
        kind: slo.kind.name(),
        description: String::new(),
        bound: String::new(),
        measured: String::new(),
        value: None,
        verdict: Verdict::Fail,
    };
    let mut judge =
        |value: Option<f64>, unit: &str, ok: &dyn Fn(f64) -> bool, missing: &str| match value {
            Some(v) => {
                r.value = Some(v);
                r.measured = if unit == "ms" {
                    format!("{v:.0} ms")
                } else if unit == "%" {
                    format!("{:.2}%", v * 100.0)
                } else {
                    format!("{v:.0}{unit}")
                };
                r.verdict = if ok(v) { Verdict::Pass } else { Verdict::Fail };
            }
            None => {
                r.measured = missing.to_string();
                r.verdict = Verdict::Fail;
            }
        };
    match &slo.kind {
        SloKind::FailedRequests {
            phase,
            max_count,
            max_share,
        } => {
            let (from, to) = phase_bounds(scenario, phase);
            let w = window(o, from, to);
            let failed = w.iter().filter(|x| !x.ok()).count() as u64;
            let share = if w.is_empty() {
                0.0
            } else {
                failed as f64 / w.len() as f64
            };
            r.description = format!("failed requests {}", phase_words(phase));
            let mut bounds = Vec::new();
            if let Some(c) = max_count {
                bounds.push(format!("<= {c}"));
            }
            if let Some(s) = max_share {
                bounds.push(format!("<= {:.2}%", s * 100.0));
            }
            r.bound = bounds.join(" and ");
            r.value = Some(failed as f64);
            r.measured = format!("{failed} of {} ({:.2}%)", w.len(), share * 100.0);
            let ok = max_count.is_none_or(|c| failed <= c)
                && max_share.is_none_or(|s| share <= s)
                && !w.is_empty();
            if w.is_empty() {
                r.measured = "no requests in this phase".into();
            }
            r.verdict = if ok { Verdict::Pass } else { Verdict::Fail };
        }
        SloKind::FailoverTime {
            fault,
            cluster,
            max,
        }
        | SloKind::FailbackTime {
            fault,
            cluster,
            max,
        } => {
            let failback = matches!(slo.kind, SloKind::FailbackTime { .. });
            let from = if failback {
                scenario.heal_at(fault)
            } else {
                scenario.fault_at(fault)
            }
            .unwrap_or(end);
            // A failover must happen while its fault lasts; a failback before the next fault.
            let until = if failback {
                scenario
                    .faults()
                    .filter_map(|(id, _)| scenario.fault_at(id))
                    .filter(|t| *t > from)
                    .min()
                    .unwrap_or(end)
            } else {
                scenario.heal_at(fault).unwrap_or(end)
            };
            r.description = if failback {
                format!(
                    "from the heal of `{fault}` until 99% of a second is served by {cluster} again"
                )
            } else {
                format!("from `{fault}` until 99% of a second is served by {cluster}")
            };
            r.bound = format!("<= {} ms", max.as_millis());
            let t = time_to_serve(o, from, until, cluster).map(ms);
            let max = ms(*max);
            judge(
                t,
                "ms",
                &|v| v <= max,
                &format!("never ({cluster} did not serve 99% of any second)"),
            );
        }
        SloKind::P99Latency { phase, max } => {
            let (from, to) = phase_bounds(scenario, phase);
            r.description = format!("p99 latency {}", phase_words(phase));
            r.bound = format!("<= {} ms", max.as_millis());
            let max = ms(*max);
            judge(
                p99(window(o, from, to)).map(ms),
                "ms",
                &|v| v <= max,
                "no requests in this phase",
            );
        }
        SloKind::P99Increase { phase, max } => {
            let (from, to) = phase_bounds(scenario, phase);
            let (b0, b1) = phase_bounds(scenario, &Phase::Before);
            r.description = format!(
                "p99 latency {} minus p99 before any fault",
                phase_words(phase)
            );
            r.bound = format!("<= {} ms", max.as_millis());
            let max = ms(*max);
            let v = match (p99(window(o, from, to)), p99(window(o, b0, b1))) {
                (Some(a), Some(b)) => Some(ms(a) - ms(b)),
                _ => None,
            };
            judge(v, "ms", &|v| v <= max, "no requests in one of the phases");
        }
        SloKind::DigestMismatches { max_count } => {
            r.description = "echoed bodies whose SHA-256 differs from the sent body".into();
            r.bound = format!("<= {max_count}");
            let n = o
                .iter()
                .filter(|x| x.digest == DigestCheck::Mismatch)
                .count() as u64;
            let checked = o
                .iter()
                .filter(|x| x.digest != DigestCheck::NotChecked)
                .count();
            judge(Some(n as f64), "", &|v| v <= *max_count as f64, "");
            r.measured = format!("{n} of {checked} checked");
        }
        SloKind::LostRequests { max_count } => {
            r.description = "requests sent without a recorded outcome".into();
            r.bound = format!("<= {max_count}");
            judge(
                Some(load.lost() as f64),
                "",
                &|v| v <= *max_count as f64,
                "",
            );
            r.measured = format!("{} of {} sent", load.lost(), load.sent);
        }
        SloKind::ServedShare {
            phase,
            cluster,
            replica,
            min_share,
        } => {
            let (from, to) = phase_bounds(scenario, phase);
            let who = replica
                .as_ref()
                .map_or(cluster.clone(), |r| format!("{cluster}/{r}"));
            r.description = format!("share served by {who} {}", phase_words(phase));
            r.bound = format!(">= {:.1}%", min_share * 100.0);
            judge(
                served_share_by(window(o, from, to), cluster, replica.as_deref()),
                "%",
                &|v| v >= *min_share,
                "no requests in this phase",
            );
        }
        SloKind::LocalitySwitches { phase, max_count } => {
            let (from, to) = phase_bounds(scenario, phase);
            r.description = format!(
                "changes of the serving cluster between seconds {}",
                phase_words(phase)
            );
            r.bound = format!("<= {max_count}");
            judge(
                Some(locality_switches(o, from, to) as f64),
                "",
                &|v| v <= *max_count as f64,
                "",
            );
        }
        SloKind::Leftovers { max_count } => {
            r.description = "processes, namespaces and links of the run left after teardown".into();
            r.bound = format!("<= {max_count}");
            judge(
                Some(facts.leftovers as f64),
                "",
                &|v| v <= *max_count as f64,
                "",
            );
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::slo::analysis::tests::synth;

    const SCENARIO: &str = "\
name: t
summary: t
topology:
  clusters:
    - { name: us-east, region_priority: [us-west] }
    - { name: us-west, region_priority: [us-east] }
load: { client: us-east, rate: 100 }
duration: 20s
timeline:
  - { at: 5s, fault: kill, id: f, targets: [us-east/echo-*] }
  - { at: 12s, heal: f }
slos:
  - { kind: failover_time, fault: f, cluster: us-west, max: 1s }
  - { kind: failback_time, fault: f, cluster: us-east, max: 1s }
  - { kind: failed_requests, max_count: 100 }
  - { kind: failed_requests, max_share: 0.01 }
  - { kind: p99_latency, phase: after, fault: f, settle: 2s, max: 10ms }
  - { kind: served_share, phase: during, fault: f, cluster: us-west, min_share: 0.9 }
  - { kind: digest_mismatches, max_count: 0 }
  - { kind: lost_requests, max_count: 0 }
  - { kind: locality_switches, max_count: 2 }
  - { kind: leftovers, max_count: 0 }
";

    fn scenario() -> Scenario {
        crate::scenario::parse(SCENARIO, Path::new("t.yaml")).unwrap()
    }

    fn run(who: impl Fn(Duration) -> Option<&'static str>) -> LoadResult {
        let outcomes = synth(100, 20, who);
        LoadResult {
            sent: outcomes.len() as u64,
            outcomes,
            late_sends: 0,
        }
    }

    #[test]
    fn a_clean_failover_and_failback_passes() {
        let load = run(|t| {
            let ms = t.as_millis();
            if !(5000..12500).contains(&ms) {
                Some("us-east")
            } else if ms < 5300 {
                None
            } else {
                Some("us-west")
            }
        });
        let r = evaluate(&scenario(), &load, RunFacts::default());
        let failed: Vec<_> = r.iter().filter(|r| r.verdict != Verdict::Pass).collect();
        assert!(
            failed
                .iter()
                .all(|f| f.kind == "failed_requests" && f.bound.contains('%')),
            "{failed:#?}"
        );
        assert_eq!(r[0].value, Some(300.0));
        assert_eq!(r[1].value, Some(500.0));
        assert_eq!(r[2].measured, "30 of 2000 (1.50%)");
        assert_eq!(r[3].verdict, Verdict::Fail, "1.5% failed is above 1%");
    }

    #[test]
    fn no_failover_fails_with_a_reason() {
        let load = run(|t| {
            if t.as_millis() < 5000 || t.as_millis() >= 12000 {
                Some("us-east")
            } else {
                None
            }
        });
        let r = evaluate(&scenario(), &load, RunFacts { leftovers: 2 });
        assert_eq!(r[0].verdict, Verdict::Fail);
        assert!(r[0].measured.starts_with("never"), "{}", r[0].measured);
        assert_eq!(r[5].verdict, Verdict::Fail);
        assert_eq!(r[9].verdict, Verdict::Fail, "leftovers are a failure");
        let lost = LoadResult {
            sent: load.sent + 3,
            ..load
        };
        assert_eq!(
            evaluate(&scenario(), &lost, RunFacts::default())[7].verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn a_failover_only_counts_while_its_fault_lasts() {
        // us-west serves only after the heal at 12 s: no failover happened during the fault.
        let load = run(|t| {
            let ms = t.as_millis();
            if ms < 5000 {
                Some("us-east")
            } else if ms < 12000 {
                None
            } else {
                Some("us-west")
            }
        });
        let r = evaluate(&scenario(), &load, RunFacts::default());
        assert_eq!(r[0].verdict, Verdict::Fail);
        assert!(r[0].measured.starts_with("never"), "{}", r[0].measured);
    }

    #[test]
    fn not_run_is_never_a_pass() {
        let r = not_run(&scenario(), "needs network namespaces (not root)");
        assert!(
            r.iter()
                .all(|r| r.verdict == Verdict::NotRun && r.measured.contains("namespaces"))
        );
    }

    #[test]
    fn phases_are_cut_from_the_timeline() {
        let s = scenario();
        let secs = |a: u64, b: u64| (Duration::from_secs(a), Duration::from_secs(b));
        assert_eq!(phase_bounds(&s, &Phase::Before), secs(0, 5));
        assert_eq!(phase_bounds(&s, &Phase::During("f".into())), secs(5, 12));
        assert_eq!(
            phase_bounds(
                &s,
                &Phase::After {
                    fault: "f".into(),
                    settle: Duration::from_secs(2)
                }
            ),
            secs(14, 20)
        );
    }
}
