//! Timeline validation: each fault's action, parameters and targets, and each heal after its
//! fault.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mesh_core::names::check_label;
use serde_saphyr::Spanned;

use super::super::ScenarioError;
use super::super::model::*;
use super::super::raw::*;
use super::super::targets::ProcessCatalog;
use super::{ACTIONS, Ctx, cluster_name, duration_or_zero, share};

/// Parameters each action takes: (required, optional).
fn parameters_of(action: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match action {
        "kill" | "freeze" => (&["targets"], &[]),
        "rolling_restart" => (&["targets"], &["pause"]),
        "partition" => (&["clusters"], &["direction"]),
        "wan_loss" => (&["cluster", "share"], &[]),
        "impair" => (
            &["clusters"],
            &["delay", "jitter", "loss", "reorder", "duplicate", "seed"],
        ),
        "endpoint" => (&["targets"], &["error_share", "latency", "latency_share"]),
        "flap" => (&["targets", "down", "up"], &[]),
        "unlink" => (&["clusters"], &[]),
        "rotate_root" => (&["cluster"], &[]),
        _ => (&[], &[]),
    }
}

fn pair(
    cx: &Ctx,
    catalog: &ProcessCatalog,
    v: &Option<Spanned<Vec<Spanned<String>>>>,
) -> Result<(String, String), ScenarioError> {
    let Some(list) = v else {
        return Err(cx.err(0, "clusters", "missing"));
    };
    if list.value.len() != 2 {
        return Err(cx.err(
            list.referenced.line(),
            "clusters",
            format!("name exactly two clusters, got {}", list.value.len()),
        ));
    }
    let a = cluster_name(cx, catalog.topology(), &list.value[0], "clusters")?;
    let b = cluster_name(cx, catalog.topology(), &list.value[1], "clusters")?;
    if a == b {
        return Err(cx.err(
            list.referenced.line(),
            "clusters",
            format!("`{a}` twice: name two different clusters"),
        ));
    }
    Ok((a, b))
}

pub(super) fn timeline(
    cx: &Ctx,
    raw: &[Spanned<RawEvent>],
    catalog: &ProcessCatalog,
    duration: Duration,
) -> Result<Vec<TimelineEvent>, ScenarioError> {
    let mut events = Vec::new();
    let mut faults: HashMap<String, (Duration, bool)> = HashMap::new();
    // Faults first, so heals can refer to any of them wherever they are written.
    for ev in raw {
        let e = &ev.value;
        let line = ev.referenced.line();
        if *e.at.value >= duration {
            return Err(cx.err(
                e.at.referenced.line(),
                "at",
                format!(
                    "{:?} is not inside the run (duration is {duration:?})",
                    *e.at.value
                ),
            ));
        }
        match (&e.fault, &e.heal) {
            (Some(_), Some(h)) => {
                return Err(cx.err(
                    h.referenced.line(),
                    "heal",
                    "an entry is either a `fault` or a `heal`, not both",
                ));
            }
            (None, None) => {
                return Err(cx.err(
                    line,
                    "fault",
                    "each timeline entry needs `fault: <action>` or `heal: <fault id>`",
                ));
            }
            (None, Some(_)) => {
                if let Some((name, l)) = e.parameters().first() {
                    return Err(cx.err(
                        *l,
                        name,
                        "a heal takes no parameters: it undoes its fault",
                    ));
                }
                if let Some(id) = &e.id {
                    return Err(cx.err(
                        id.referenced.line(),
                        "id",
                        "a heal names its fault with `heal: <id>` and has no id of its own",
                    ));
                }
            }
            (Some(action), None) => {
                let fault = fault(cx, e, action, catalog)?;
                let Some(id) = &e.id else {
                    return Err(cx.err(
                        action.referenced.line(),
                        "id",
                        "a fault needs an `id` (its heal and the SLOs refer to it)",
                    ));
                };
                check_label(&id.value)
                    .map_err(|err| cx.err(id.referenced.line(), "id", err.to_string()))?;
                if faults
                    .insert(id.value.clone(), (*e.at.value, fault.self_healing()))
                    .is_some()
                {
                    return Err(cx.err(
                        id.referenced.line(),
                        "id",
                        format!("fault id `{}` is used twice", id.value),
                    ));
                }
                events.push(TimelineEvent {
                    at: *e.at.value,
                    line,
                    action: Action::Fault {
                        id: id.value.clone(),
                        fault,
                    },
                });
            }
        }
    }
    let mut healed = HashSet::new();
    for ev in raw {
        let e = &ev.value;
        let Some(h) = &e.heal else { continue };
        let Some((fault_at, self_healing)) = faults.get(&h.value) else {
            let known: Vec<&str> = faults.keys().map(String::as_str).collect();
            return Err(cx.err(
                h.referenced.line(),
                "heal",
                format!(
                    "no fault has id `{}` (faults: {})",
                    h.value,
                    known.join(", ")
                ),
            ));
        };
        if *self_healing {
            return Err(cx.err(
                h.referenced.line(),
                "heal",
                format!("fault `{}` ends by itself and takes no heal", h.value),
            ));
        }
        if *e.at.value <= *fault_at {
            return Err(cx.err(
                e.at.referenced.line(),
                "at",
                format!(
                    "the heal of `{}` at {:?} comes before its fault at {fault_at:?}",
                    h.value, *e.at.value
                ),
            ));
        }
        if !healed.insert(h.value.clone()) {
            return Err(cx.err(
                h.referenced.line(),
                "heal",
                format!("fault `{}` is healed twice", h.value),
            ));
        }
        events.push(TimelineEvent {
            at: *e.at.value,
            line: ev.referenced.line(),
            action: Action::Heal {
                fault: h.value.clone(),
            },
        });
    }
    events.sort_by_key(|e| (e.at, e.line));
    Ok(events)
}

fn fault(
    cx: &Ctx,
    e: &RawEvent,
    action: &Spanned<String>,
    catalog: &ProcessCatalog,
) -> Result<Fault, ScenarioError> {
    let name = action.value.as_str();
    if !ACTIONS.contains(&name) {
        return Err(cx.err(
            action.referenced.line(),
            "fault",
            format!("unknown action `{name}` (actions: {})", ACTIONS.join(", ")),
        ));
    }
    let (required, optional) = parameters_of(name);
    let given = e.parameters();
    for (p, line) in &given {
        if !required.contains(p) && !optional.contains(p) {
            return Err(cx.err(
                *line,
                p,
                format!(
                    "action `{name}` takes no `{p}` (it takes {})",
                    [required, optional].concat().join(", ")
                ),
            ));
        }
    }
    for r in required {
        if !given.iter().any(|(p, _)| p == r) {
            return Err(cx.err(
                action.referenced.line(),
                r,
                format!("action `{name}` needs `{r}`"),
            ));
        }
    }
    let targets = |demo_only: bool| -> Result<Vec<ProcessRef>, ScenarioError> {
        let Some(list) = &e.targets else {
            return Ok(Vec::new());
        };
        if list.value.is_empty() {
            return Err(cx.err(
                list.referenced.line(),
                "targets",
                "name at least one process",
            ));
        }
        let mut out: Vec<ProcessRef> = Vec::new();
        for t in &list.value {
            let matched = catalog
                .select(&t.value)
                .map_err(|m| cx.err(t.referenced.line(), "targets", m))?;
            for p in matched {
                if demo_only && !p.process.starts_with("echo-") {
                    return Err(cx.err(
                        t.referenced.line(),
                        "targets",
                        format!(
                            "{p} is not a demo app (`echo-N`): only demo apps take endpoint faults"
                        ),
                    ));
                }
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        Ok(out)
    };
    Ok(match name {
        "kill" => Fault::Kill {
            targets: catalog.start_order(targets(false)?),
        },
        "freeze" => Fault::Freeze {
            targets: targets(false)?,
        },
        "rolling_restart" => Fault::RollingRestart {
            targets: targets(false)?,
            pause: duration_or_zero(&e.pause),
        },
        "partition" => {
            let (a, b) = pair(cx, catalog, &e.clusters)?;
            let direction = match e
                .direction
                .as_ref()
                .map(|d| (d.value.as_str(), d.referenced.line()))
            {
                None | Some(("both", _)) => Direction::Both,
                Some(("one_way", _)) => Direction::OneWay,
                Some((other, line)) => {
                    return Err(cx.err(
                        line,
                        "direction",
                        format!("`{other}` is not `both` or `one_way`"),
                    ));
                }
            };
            Fault::Partition { a, b, direction }
        }
        "wan_loss" => {
            let cluster = match &e.cluster {
                Some(c) => cluster_name(cx, catalog.topology(), c, "cluster")?,
                None => return Err(cx.err(action.referenced.line(), "cluster", "missing")),
            };
            let share = share(cx, &e.share, "share")?;
            if share == 0.0 {
                let line = e.share.as_ref().map(|s| s.referenced.line()).unwrap_or(0);
                return Err(cx.err(line, "share", "a loss of 0 is no fault"));
            }
            Fault::WanLoss { cluster, share }
        }
        "impair" => {
            let (a, b) = pair(cx, catalog, &e.clusters)?;
            let impairment = Impairment {
                delay: duration_or_zero(&e.delay),
                jitter: duration_or_zero(&e.jitter),
                loss: share(cx, &e.loss, "loss")?,
                reorder: share(cx, &e.reorder, "reorder")?,
                duplicate: share(cx, &e.duplicate, "duplicate")?,
                seed: e.seed.as_ref().map(|s| s.value).unwrap_or(1),
            };
            if impairment
                == (Impairment {
                    seed: impairment.seed,
                    ..Impairment::default()
                })
            {
                return Err(cx.err(
                    action.referenced.line(),
                    "impair",
                    "set at least one of delay, jitter, loss, reorder, duplicate",
                ));
            }
            if impairment.loss >= 1.0 {
                return Err(cx.err(
                    e.loss.as_ref().map(|l| l.referenced.line()).unwrap_or(0),
                    "loss",
                    "a loss of 1 is a partition: use `partition`",
                ));
            }
            Fault::Impair { a, b, impairment }
        }
        "endpoint" => {
            let behaviour = EndpointBehaviour {
                error_share: share(cx, &e.error_share, "error_share")?,
                latency: duration_or_zero(&e.latency),
                latency_share: match &e.latency_share {
                    None if e.latency.is_some() => 1.0,
                    _ => share(cx, &e.latency_share, "latency_share")?,
                },
            };
            if behaviour.error_share == 0.0
                && (behaviour.latency.is_zero() || behaviour.latency_share == 0.0)
            {
                return Err(cx.err(
                    action.referenced.line(),
                    "endpoint",
                    "set error_share, or latency (with latency_share)",
                ));
            }
            Fault::Endpoint {
                targets: targets(true)?,
                behaviour,
            }
        }
        "flap" => {
            let (down, up) = (duration_or_zero(&e.down), duration_or_zero(&e.up));
            if down.is_zero() || up.is_zero() {
                let line = e.down.as_ref().map(|d| d.referenced.line()).unwrap_or(0);
                return Err(cx.err(line, "down", "down and up must both be above 0"));
            }
            Fault::Flap {
                targets: targets(true)?,
                down,
                up,
            }
        }
        "unlink" => {
            let (a, b) = pair(cx, catalog, &e.clusters)?;
            Fault::Unlink { a, b }
        }
        "rotate_root" => match &e.cluster {
            Some(c) => Fault::RotateRoot {
                cluster: cluster_name(cx, catalog.topology(), c, "cluster")?,
            },
            None => return Err(cx.err(action.referenced.line(), "cluster", "missing")),
        },
        _ => {
            return Err(cx.err(
                action.referenced.line(),
                "fault",
                format!("unknown action `{name}`"),
            ));
        }
    })
}
