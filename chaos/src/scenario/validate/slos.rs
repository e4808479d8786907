//! SLO validation: a known kind, the fields it takes, a bound, and references to faults and
//! clusters that exist.

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::super::ScenarioError;
use super::super::model::*;
use super::super::raw::*;
use super::{Ctx, SLO_KINDS, cluster_name, duration_or_zero, share};

/// Fields each SLO kind takes: (required, optional).
fn slo_fields(kind: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        "failed_requests" => (&[], &["phase", "fault", "settle", "max_count", "max_share"]),
        "failover_time" | "failback_time" => (&["fault", "cluster", "max"], &[]),
        "p99_latency" | "p99_increase" => (&["max"], &["phase", "fault", "settle"]),
        "digest_mismatches" | "lost_requests" | "leftovers" => (&["max_count"], &[]),
        "served_share" => (
            &["cluster", "min_share"],
            &["replica", "phase", "fault", "settle"],
        ),
        "locality_switches" => (&["max_count"], &["phase", "fault", "settle"]),
        _ => (&[], &[]),
    }
}

pub(super) fn slo_spec(
    cx: &Ctx,
    raw: &Spanned<RawSlo>,
    scenario: &Scenario,
) -> Result<SloSpec, ScenarioError> {
    let s = &raw.value;
    let line = raw.referenced.line();
    let kind = s.kind.value.as_str();
    if !SLO_KINDS.contains(&kind) {
        return Err(cx.err(
            s.kind.referenced.line(),
            "kind",
            format!(
                "unknown SLO kind `{kind}` (kinds: {})",
                SLO_KINDS.join(", ")
            ),
        ));
    }
    let mut given: BTreeMap<&str, u64> = BTreeMap::new();
    macro_rules! note {
        ($($f:ident),*) => { $(if let Some(v) = &s.$f { given.insert(stringify!($f), v.referenced.line()); })* };
    }
    note!(
        phase, fault, cluster, replica, settle, max_count, max_share, min_share, max
    );
    let (required, optional) = slo_fields(kind);
    for (f, l) in &given {
        if !required.contains(f) && !optional.contains(f) {
            return Err(cx.err(
                *l,
                f,
                format!(
                    "SLO `{kind}` takes no `{f}` (it takes {})",
                    [required, optional].concat().join(", ")
                ),
            ));
        }
    }
    let bounds = ["max_count", "max_share", "min_share", "max"];
    if !given.keys().any(|f| bounds.contains(f)) {
        let wanted: Vec<&str> = [required, optional]
            .concat()
            .into_iter()
            .filter(|f| bounds.contains(f))
            .collect();
        return Err(cx.err(
            s.kind.referenced.line(),
            "kind",
            format!("SLO `{kind}` has no bound: set {}", wanted.join(" or ")),
        ));
    }
    for r in required {
        if !given.contains_key(r) {
            return Err(cx.err(
                s.kind.referenced.line(),
                r,
                format!("SLO `{kind}` needs `{r}`"),
            ));
        }
    }
    let fault_ref = |healed: bool| -> Result<String, ScenarioError> {
        let Some(f) = &s.fault else {
            return Err(cx.err(
                s.kind.referenced.line(),
                "fault",
                format!("SLO `{kind}` needs the `fault` it is about"),
            ));
        };
        if scenario.fault_at(&f.value).is_none() {
            let known: Vec<&str> = scenario.faults().map(|(id, _)| id).collect();
            return Err(cx.err(
                f.referenced.line(),
                "fault",
                format!(
                    "no fault has id `{}` (faults: {})",
                    f.value,
                    known.join(", ")
                ),
            ));
        }
        if healed && scenario.heal_at(&f.value).is_none() {
            return Err(cx.err(
                f.referenced.line(),
                "fault",
                format!(
                    "fault `{}` is never healed, so there is no time after it",
                    f.value
                ),
            ));
        }
        Ok(f.value.clone())
    };
    let phase = || -> Result<Phase, ScenarioError> {
        let settle = duration_or_zero(&s.settle);
        let p = s
            .phase
            .as_ref()
            .map(|p| (p.value.as_str(), p.referenced.line()));
        if let Some((other, l)) = p
            && !["whole", "before", "during", "after"].contains(&other)
        {
            return Err(cx.err(
                l,
                "phase",
                format!("`{other}` is not one of whole, before, during, after"),
            ));
        }
        if s.settle.is_some() && !matches!(p, Some(("after", _))) {
            return Err(cx.err(
                s.settle
                    .as_ref()
                    .map(|x| x.referenced.line())
                    .unwrap_or(line),
                "settle",
                "only the `after` phase has a settle time",
            ));
        }
        match p {
            None | Some(("whole", _)) | Some(("before", _)) => {
                if let Some(f) = &s.fault {
                    return Err(cx.err(
                        f.referenced.line(),
                        "fault",
                        "only the `during` and `after` phases refer to a fault",
                    ));
                }
                if scenario.timeline.is_empty() && matches!(p, Some(("before", _))) {
                    return Err(cx.err(line, "phase", "`before` needs a fault on the timeline"));
                }
                Ok(if matches!(p, Some(("before", _))) {
                    Phase::Before
                } else {
                    Phase::Whole
                })
            }
            Some(("during", _)) => Ok(Phase::During(fault_ref(false)?)),
            Some(("after", _)) => Ok(Phase::After {
                fault: fault_ref(true)?,
                settle,
            }),
            Some((other, l)) => Err(cx.err(
                l,
                "phase",
                format!("`{other}` is not one of whole, before, during, after"),
            )),
        }
    };
    let max = || duration_or_zero(&s.max);
    let count = || s.max_count.as_ref().map(|c| c.value).unwrap_or(0);
    let cluster = || -> Result<String, ScenarioError> {
        match &s.cluster {
            Some(c) => cluster_name(cx, &scenario.topology, c, "cluster"),
            None => Err(cx.err(line, "cluster", "missing")),
        }
    };
    for (f, v) in [("max_share", &s.max_share), ("min_share", &s.min_share)] {
        share(cx, v, f)?;
    }
    let kind = match kind {
        "failed_requests" => SloKind::FailedRequests {
            phase: phase()?,
            max_count: s.max_count.as_ref().map(|c| c.value),
            max_share: s.max_share.as_ref().map(|c| c.value),
        },
        "failover_time" => SloKind::FailoverTime {
            fault: fault_ref(false)?,
            cluster: cluster()?,
            max: max(),
        },
        "failback_time" => SloKind::FailbackTime {
            fault: fault_ref(true)?,
            cluster: cluster()?,
            max: max(),
        },
        "p99_latency" => SloKind::P99Latency {
            phase: phase()?,
            max: max(),
        },
        "p99_increase" => {
            let phase = phase()?;
            if matches!(phase, Phase::Before | Phase::Whole) {
                return Err(cx.err(line, "phase", "`p99_increase` compares a `during` or `after` phase with the time before the first fault"));
            }
            SloKind::P99Increase { phase, max: max() }
        }
        "digest_mismatches" => SloKind::DigestMismatches { max_count: count() },
        "lost_requests" => SloKind::LostRequests { max_count: count() },
        "leftovers" => SloKind::Leftovers { max_count: count() },
        "served_share" => SloKind::ServedShare {
            phase: phase()?,
            cluster: cluster()?,
            replica: match &s.replica {
                None => None,
                Some(r) => {
                    let cluster = cluster()?;
                    let selector = format!("{cluster}/{}", r.value);
                    let catalog = super::super::targets::ProcessCatalog::of(&scenario.topology);
                    match catalog.select(&selector) {
                        Ok(found) if found.len() == 1 && r.value.starts_with("echo-") => {
                            Some(r.value.clone())
                        }
                        _ => {
                            return Err(cx.err(
                                r.referenced.line(),
                                "replica",
                                format!(
                                    "`{}` is not a demo replica of {cluster} (echo-0 ...)",
                                    r.value
                                ),
                            ));
                        }
                    }
                }
            },
            min_share: s.min_share.as_ref().map(|c| c.value).unwrap_or(0.0),
        },
        "locality_switches" => SloKind::LocalitySwitches {
            phase: phase()?,
            max_count: count(),
        },
        other => {
            return Err(cx.err(
                s.kind.referenced.line(),
                "kind",
                format!("unknown SLO kind `{other}`"),
            ));
        }
    };
    if let SloKind::DigestMismatches { .. } = kind
        && scenario.load.body_bytes == 0
    {
        return Err(cx.err(
            line,
            "kind",
            "`digest_mismatches` needs a load with a body (body_bytes above 0)",
        ));
    }
    Ok(SloSpec { line, kind })
}
