//! From the raw file to a [`Scenario`]: every cross-field rule checked before anything starts,
//! each refusal naming the line and the field.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use mesh_core::config::{ClusterSpec, Topology};
use mesh_core::names::check_label;
use serde_saphyr::Spanned;

use super::ScenarioError;
use super::model::*;
use super::raw::*;
use super::targets::ProcessCatalog;

/// Largest request rate: the driver and the cluster-set share this machine.
const MAX_RATE: u32 = 5_000;
/// Largest body: the demo app digests bodies up to a few MiB.
const MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;
/// Longest scenario: a suite of ten must stay runnable in an afternoon.
const MAX_DURATION_MS: u64 = 600_000;
/// Most demo replicas per cluster (two processes each on this machine).
const MAX_ECHO_REPLICAS: u32 = 8;
/// The demo service's clusterset name.
const DEFAULT_HOST: &str = "echo.demo.svc.clusterset.local";
/// Default body: big enough to span several TLS records' worth of frames, small enough for
/// hundreds of requests a second.
const DEFAULT_BODY_BYTES: u64 = 1024;
/// Default request timeout: well past any failover the SLOs allow, so a stalled request shows
/// up as latency first and as a failure only when it is really stuck.
const DEFAULT_TIMEOUT_MS: u64 = 5_000;

/// The action names, for messages.
pub const ACTIONS: &[&str] = &[
    "kill", "freeze", "rolling_restart", "partition", "wan_loss", "impair", "endpoint", "flap",
    "unlink",
];
/// The SLO kinds, for messages.
pub const SLO_KINDS: &[&str] = &[
    "failed_requests", "failover_time", "failback_time", "p99_latency", "p99_increase",
    "digest_mismatches", "lost_requests", "served_share", "locality_switches", "leftovers",
];

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, line: u64, field: &str, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid {
            file: self.file.to_string(),
            line,
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Validates a parsed scenario file.
pub(crate) fn validate(raw: RawScenario, path: &Path) -> Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    let cx = Ctx { file: &file };
    check_label(&raw.name.value).map_err(|e| cx.err(raw.name.referenced.line(), "name", e.to_string()))?;
    let summary = raw.summary.value.trim().to_string();
    if summary.is_empty() || summary.contains('\n') {
        return Err(cx.err(raw.summary.referenced.line(), "summary", "must be one non-empty line"));
    }
    let topology = topology(&cx, &raw.topology)?;
    let catalog = ProcessCatalog::of(&topology);
    let load = load(&cx, &raw.load, &topology)?;
    let duration_ms = raw.duration_ms.value;
    if duration_ms == 0 || duration_ms > MAX_DURATION_MS {
        return Err(cx.err(
            raw.duration_ms.referenced.line(),
            "duration_ms",
            format!("must be between 1 and {MAX_DURATION_MS}, got {duration_ms}"),
        ));
    }
    let timeline = timeline(&cx, &raw.timeline, &catalog, duration_ms)?;
    let mut scenario = Scenario {
        name: raw.name.value,
        file: path.to_path_buf(),
        summary,
        fast: raw.fast,
        topology,
        load,
        duration: Duration::from_millis(duration_ms),
        timeline,
        slos: Vec::new(),
    };
    if raw.slos.value.is_empty() {
        return Err(cx.err(raw.slos.referenced.line(), "slos", "a scenario needs at least one SLO"));
    }
    for slo in &raw.slos.value {
        let spec = slo_spec(&cx, slo, &scenario)?;
        scenario.slos.push(spec);
    }
    Ok(scenario)
}

fn topology(cx: &Ctx, raw: &Spanned<RawTopology>) -> Result<Topology, ScenarioError> {
    let clusters = &raw.value.clusters;
    if clusters.value.is_empty() {
        return Err(cx.err(clusters.referenced.line(), "clusters", "at least one cluster is needed"));
    }
    let mut names = HashSet::new();
    let mut regions = HashSet::new();
    for c in &clusters.value {
        check_label(&c.name.value).map_err(|e| cx.err(c.name.referenced.line(), "name", e.to_string()))?;
        if !names.insert(c.name.value.clone()) {
            return Err(cx.err(c.name.referenced.line(), "name", format!("cluster `{}` is declared twice", c.name.value)));
        }
        let region = c.region.as_ref().unwrap_or(&c.name);
        check_label(&region.value).map_err(|e| cx.err(region.referenced.line(), "region", e.to_string()))?;
        regions.insert(region.value.clone());
    }
    let mut specs = Vec::new();
    for c in &clusters.value {
        let own = c.region.as_ref().unwrap_or(&c.name).value.clone();
        for r in &c.region_priority {
            if !regions.contains(&r.value) {
                return Err(cx.err(r.referenced.line(), "region_priority", format!("region `{}` is not the region of any cluster", r.value)));
            }
            if r.value == own {
                return Err(cx.err(r.referenced.line(), "region_priority", format!("`{}` is this cluster's own region; list only other regions", r.value)));
            }
        }
        let echo_replicas = match &c.echo_replicas {
            Some(n) if n.value == 0 || n.value > MAX_ECHO_REPLICAS => {
                return Err(cx.err(n.referenced.line(), "echo_replicas", format!("must be between 1 and {MAX_ECHO_REPLICAS}, got {}", n.value)));
            }
            Some(n) => n.value,
            None => 2,
        };
        specs.push(ClusterSpec {
            name: c.name.value.clone(),
            region: own,
            region_priority: c.region_priority.iter().map(|r| r.value.clone()).collect(),
            echo_replicas,
            client_port: None,
        });
    }
    let lease_grace = match &raw.value.lease_grace_ms {
        Some(ms) if ms.value == 0 => return Err(cx.err(ms.referenced.line(), "lease_grace_ms", "must be above 0")),
        Some(ms) => Duration::from_millis(ms.value),
        None => mesh_core::catalog::DEFAULT_LEASE_GRACE,
    };
    Ok(Topology { clusters: specs, lease_grace })
}

fn cluster_name(cx: &Ctx, topology: &Topology, v: &Spanned<String>, field: &str) -> Result<String, ScenarioError> {
    if topology.clusters.iter().any(|c| c.name == v.value) {
        Ok(v.value.clone())
    } else {
        let known: Vec<&str> = topology.clusters.iter().map(|c| c.name.as_str()).collect();
        Err(cx.err(v.referenced.line(), field, format!("cluster `{}` is not in the topology (clusters: {})", v.value, known.join(", "))))
    }
}

fn load(cx: &Ctx, raw: &Spanned<RawLoad>, topology: &Topology) -> Result<LoadSpec, ScenarioError> {
    let l = &raw.value;
    let client = cluster_name(cx, topology, &l.client, "client")?;
    if l.rate.value == 0 || l.rate.value > MAX_RATE {
        return Err(cx.err(l.rate.referenced.line(), "rate", format!("must be between 1 and {MAX_RATE} requests per second, got {}", l.rate.value)));
    }
    let protocol = match l.protocol.as_ref().map(|p| (p.value.as_str(), p.referenced.line())) {
        None | Some(("mixed", _)) => Protocol::Mixed,
        Some(("http1", _)) => Protocol::Http1,
        Some(("http2", _)) => Protocol::Http2,
        Some((other, line)) => return Err(cx.err(line, "protocol", format!("`{other}` is not one of http1, http2, mixed"))),
    };
    let method = match &l.method {
        None => http::Method::PUT,
        Some(m) => m.value.parse::<http::Method>().map_err(|_| cx.err(m.referenced.line(), "method", format!("`{}` is not an HTTP method", m.value)))?,
    };
    let body_bytes = l.body_bytes.as_ref().map(|b| b.value).unwrap_or(if method == http::Method::GET || method == http::Method::HEAD { 0 } else { DEFAULT_BODY_BYTES });
    if body_bytes > MAX_BODY_BYTES {
        let line = l.body_bytes.as_ref().map(|b| b.referenced.line()).unwrap_or(raw.referenced.line());
        return Err(cx.err(line, "body_bytes", format!("at most {MAX_BODY_BYTES} bytes, got {body_bytes}")));
    }
    if body_bytes > 0 && (method == http::Method::GET || method == http::Method::HEAD) {
        let line = l.body_bytes.as_ref().map(|b| b.referenced.line()).unwrap_or(raw.referenced.line());
        return Err(cx.err(line, "body_bytes", format!("{method} requests carry no body; use PUT to check body digests")));
    }
    let timeout_ms = l.timeout_ms.as_ref().map(|t| t.value).unwrap_or(DEFAULT_TIMEOUT_MS);
    if timeout_ms == 0 {
        let line = l.timeout_ms.as_ref().map(|t| t.referenced.line()).unwrap_or(raw.referenced.line());
        return Err(cx.err(line, "timeout_ms", "must be above 0"));
    }
    let host = l.host.as_ref().map(|h| h.value.clone()).unwrap_or_else(|| DEFAULT_HOST.to_string());
    if host.is_empty() || host.contains('/') || host.contains(' ') {
        let line = l.host.as_ref().map(|h| h.referenced.line()).unwrap_or(raw.referenced.line());
        return Err(cx.err(line, "host", format!("`{host}` is not a host name")));
    }
    Ok(LoadSpec {
        client,
        rate: l.rate.value,
        protocol,
        method,
        host,
        body_bytes: body_bytes as usize,
        timeout: Duration::from_millis(timeout_ms),
    })
}

/// Parameters each action takes: (required, optional).
fn parameters_of(action: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match action {
        "kill" | "freeze" => (&["targets"], &[]),
        "rolling_restart" => (&["targets"], &["pause_ms"]),
        "partition" => (&["clusters"], &["direction"]),
        "wan_loss" => (&["cluster", "share"], &[]),
        "impair" => (&["clusters"], &["delay_ms", "jitter_ms", "loss", "reorder", "duplicate", "seed"]),
        "endpoint" => (&["targets"], &["error_share", "latency_ms", "latency_share"]),
        "flap" => (&["targets", "down_ms", "up_ms"], &[]),
        "unlink" => (&["clusters"], &[]),
        _ => (&[], &[]),
    }
}

fn share(cx: &Ctx, v: &Option<Spanned<f64>>, field: &str) -> Result<f64, ScenarioError> {
    match v {
        None => Ok(0.0),
        Some(s) if (0.0..=1.0).contains(&s.value) => Ok(s.value),
        Some(s) => Err(cx.err(s.referenced.line(), field, format!("a share must be between 0 and 1, got {}", s.value))),
    }
}

fn ms(v: &Option<Spanned<u64>>) -> Duration {
    Duration::from_millis(v.as_ref().map(|x| x.value).unwrap_or(0))
}

fn pair(cx: &Ctx, catalog: &ProcessCatalog, v: &Option<Spanned<Vec<Spanned<String>>>>) -> Result<(String, String), ScenarioError> {
    let Some(list) = v else {
        return Err(cx.err(0, "clusters", "missing"));
    };
    if list.value.len() != 2 {
        return Err(cx.err(list.referenced.line(), "clusters", format!("name exactly two clusters, got {}", list.value.len())));
    }
    let a = cluster_name(cx, catalog.topology(), &list.value[0], "clusters")?;
    let b = cluster_name(cx, catalog.topology(), &list.value[1], "clusters")?;
    if a == b {
        return Err(cx.err(list.referenced.line(), "clusters", format!("`{a}` twice: name two different clusters")));
    }
    Ok((a, b))
}

fn timeline(cx: &Ctx, raw: &[Spanned<RawEvent>], catalog: &ProcessCatalog, duration_ms: u64) -> Result<Vec<TimelineEvent>, ScenarioError> {
    let mut events = Vec::new();
    let mut faults: HashMap<String, (u64, bool)> = HashMap::new();
    // Faults first, so heals can refer to any of them wherever they are written.
    for ev in raw {
        let e = &ev.value;
        let line = ev.referenced.line();
        if e.at_ms.value >= duration_ms {
            return Err(cx.err(e.at_ms.referenced.line(), "at_ms", format!("{} ms is not inside the run (duration_ms is {duration_ms})", e.at_ms.value)));
        }
        match (&e.fault, &e.heal) {
            (Some(_), Some(h)) => return Err(cx.err(h.referenced.line(), "heal", "an entry is either a `fault` or a `heal`, not both")),
            (None, None) => return Err(cx.err(line, "fault", "each timeline entry needs `fault: <action>` or `heal: <fault id>`")),
            (None, Some(_)) => {
                if let Some((name, l)) = e.parameters().first() {
                    return Err(cx.err(*l, name, "a heal takes no parameters: it undoes its fault"));
                }
                if let Some(id) = &e.id {
                    return Err(cx.err(id.referenced.line(), "id", "a heal names its fault with `heal: <id>` and has no id of its own"));
                }
            }
            (Some(action), None) => {
                let fault = fault(cx, e, action, catalog)?;
                let Some(id) = &e.id else {
                    return Err(cx.err(action.referenced.line(), "id", "a fault needs an `id` (its heal and the SLOs refer to it)"));
                };
                check_label(&id.value).map_err(|err| cx.err(id.referenced.line(), "id", err.to_string()))?;
                if faults.insert(id.value.clone(), (e.at_ms.value, fault.self_healing())).is_some() {
                    return Err(cx.err(id.referenced.line(), "id", format!("fault id `{}` is used twice", id.value)));
                }
                events.push(TimelineEvent {
                    at: Duration::from_millis(e.at_ms.value),
                    line,
                    action: Action::Fault { id: id.value.clone(), fault },
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
            return Err(cx.err(h.referenced.line(), "heal", format!("no fault has id `{}` (faults: {})", h.value, known.join(", "))));
        };
        if *self_healing {
            return Err(cx.err(h.referenced.line(), "heal", format!("fault `{}` ends by itself and takes no heal", h.value)));
        }
        if e.at_ms.value <= *fault_at {
            return Err(cx.err(e.at_ms.referenced.line(), "at_ms", format!("the heal of `{}` at {} ms comes before its fault at {fault_at} ms", h.value, e.at_ms.value)));
        }
        if !healed.insert(h.value.clone()) {
            return Err(cx.err(h.referenced.line(), "heal", format!("fault `{}` is healed twice", h.value)));
        }
        events.push(TimelineEvent {
            at: Duration::from_millis(e.at_ms.value),
            line: ev.referenced.line(),
            action: Action::Heal { fault: h.value.clone() },
        });
    }
    events.sort_by_key(|e| (e.at, e.line));
    Ok(events)
}

fn fault(cx: &Ctx, e: &RawEvent, action: &Spanned<String>, catalog: &ProcessCatalog) -> Result<Fault, ScenarioError> {
    let name = action.value.as_str();
    if !ACTIONS.contains(&name) {
        return Err(cx.err(action.referenced.line(), "fault", format!("unknown action `{name}` (actions: {})", ACTIONS.join(", "))));
    }
    let (required, optional) = parameters_of(name);
    let given = e.parameters();
    for (p, line) in &given {
        if !required.contains(p) && !optional.contains(p) {
            return Err(cx.err(*line, p, format!("action `{name}` takes no `{p}` (it takes {})", [required, optional].concat().join(", "))));
        }
    }
    for r in required {
        if !given.iter().any(|(p, _)| p == r) {
            return Err(cx.err(action.referenced.line(), r, format!("action `{name}` needs `{r}`")));
        }
    }
    let targets = |demo_only: bool| -> Result<Vec<ProcessRef>, ScenarioError> {
        let Some(list) = &e.targets else { return Ok(Vec::new()) };
        if list.value.is_empty() {
            return Err(cx.err(list.referenced.line(), "targets", "name at least one process"));
        }
        let mut out: Vec<ProcessRef> = Vec::new();
        for t in &list.value {
            let matched = catalog.select(&t.value).map_err(|m| cx.err(t.referenced.line(), "targets", m))?;
            for p in matched {
                if demo_only && !p.process.starts_with("echo-") {
                    return Err(cx.err(t.referenced.line(), "targets", format!("{p} is not a demo app (`echo-N`): only demo apps take endpoint faults")));
                }
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        Ok(out)
    };
    Ok(match name {
        "kill" => Fault::Kill { targets: catalog.start_order(targets(false)?) },
        "freeze" => Fault::Freeze { targets: targets(false)? },
        "rolling_restart" => Fault::RollingRestart { targets: targets(false)?, pause: ms(&e.pause_ms) },
        "partition" => {
            let (a, b) = pair(cx, catalog, &e.clusters)?;
            let direction = match e.direction.as_ref().map(|d| (d.value.as_str(), d.referenced.line())) {
                None | Some(("both", _)) => Direction::Both,
                Some(("one_way", _)) => Direction::OneWay,
                Some((other, line)) => return Err(cx.err(line, "direction", format!("`{other}` is not `both` or `one_way`"))),
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
                delay: ms(&e.delay_ms),
                jitter: ms(&e.jitter_ms),
                loss: share(cx, &e.loss, "loss")?,
                reorder: share(cx, &e.reorder, "reorder")?,
                duplicate: share(cx, &e.duplicate, "duplicate")?,
                seed: e.seed.as_ref().map(|s| s.value).unwrap_or(1),
            };
            if impairment == (Impairment { seed: impairment.seed, ..Impairment::default() }) {
                return Err(cx.err(action.referenced.line(), "impair", "set at least one of delay_ms, jitter_ms, loss, reorder, duplicate"));
            }
            if impairment.loss >= 1.0 {
                return Err(cx.err(e.loss.as_ref().map(|l| l.referenced.line()).unwrap_or(0), "loss", "a loss of 1 is a partition: use `partition`"));
            }
            Fault::Impair { a, b, impairment }
        }
        "endpoint" => {
            let behaviour = EndpointBehaviour {
                error_share: share(cx, &e.error_share, "error_share")?,
                latency: ms(&e.latency_ms),
                latency_share: match &e.latency_share {
                    None if e.latency_ms.is_some() => 1.0,
                    _ => share(cx, &e.latency_share, "latency_share")?,
                },
            };
            if behaviour.error_share == 0.0 && (behaviour.latency.is_zero() || behaviour.latency_share == 0.0) {
                return Err(cx.err(action.referenced.line(), "endpoint", "set error_share, or latency_ms (with latency_share)"));
            }
            Fault::Endpoint { targets: targets(true)?, behaviour }
        }
        "flap" => {
            let (down, up) = (ms(&e.down_ms), ms(&e.up_ms));
            if down.is_zero() || up.is_zero() {
                let line = e.down_ms.as_ref().map(|d| d.referenced.line()).unwrap_or(0);
                return Err(cx.err(line, "down_ms", "down_ms and up_ms must both be above 0"));
            }
            Fault::Flap { targets: targets(true)?, down, up }
        }
        "unlink" => {
            let (a, b) = pair(cx, catalog, &e.clusters)?;
            Fault::Unlink { a, b }
        }
        _ => return Err(cx.err(action.referenced.line(), "fault", format!("unknown action `{name}`"))),
    })
}

/// Fields each SLO kind takes: (required, optional).
fn slo_fields(kind: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        "failed_requests" => (&[], &["phase", "fault", "settle_ms", "max_count", "max_share"]),
        "failover_time" | "failback_time" => (&["fault", "cluster", "max_ms"], &[]),
        "p99_latency" | "p99_increase" => (&["max_ms"], &["phase", "fault", "settle_ms"]),
        "digest_mismatches" | "lost_requests" | "leftovers" => (&["max_count"], &[]),
        "served_share" => (&["cluster", "min_share"], &["phase", "fault", "settle_ms"]),
        "locality_switches" => (&["max_count"], &["phase", "fault", "settle_ms"]),
        _ => (&[], &[]),
    }
}

fn slo_spec(cx: &Ctx, raw: &Spanned<RawSlo>, scenario: &Scenario) -> Result<SloSpec, ScenarioError> {
    let s = &raw.value;
    let line = raw.referenced.line();
    let kind = s.kind.value.as_str();
    if !SLO_KINDS.contains(&kind) {
        return Err(cx.err(s.kind.referenced.line(), "kind", format!("unknown SLO kind `{kind}` (kinds: {})", SLO_KINDS.join(", "))));
    }
    let mut given: BTreeMap<&str, u64> = BTreeMap::new();
    macro_rules! note {
        ($($f:ident),*) => { $(if let Some(v) = &s.$f { given.insert(stringify!($f), v.referenced.line()); })* };
    }
    note!(phase, fault, cluster, settle_ms, max_count, max_share, min_share, max_ms);
    let (required, optional) = slo_fields(kind);
    for (f, l) in &given {
        if !required.contains(f) && !optional.contains(f) {
            return Err(cx.err(*l, f, format!("SLO `{kind}` takes no `{f}` (it takes {})", [required, optional].concat().join(", "))));
        }
    }
    let bounds = ["max_count", "max_share", "min_share", "max_ms"];
    if !given.keys().any(|f| bounds.contains(f)) {
        let wanted: Vec<&str> = [required, optional].concat().into_iter().filter(|f| bounds.contains(f)).collect();
        return Err(cx.err(s.kind.referenced.line(), "kind", format!("SLO `{kind}` has no bound: set {}", wanted.join(" or "))));
    }
    for r in required {
        if !given.contains_key(r) {
            return Err(cx.err(s.kind.referenced.line(), r, format!("SLO `{kind}` needs `{r}`")));
        }
    }
    let fault_ref = |healed: bool| -> Result<String, ScenarioError> {
        let Some(f) = &s.fault else {
            return Err(cx.err(s.kind.referenced.line(), "fault", format!("SLO `{kind}` needs the `fault` it is about")));
        };
        if scenario.fault_at(&f.value).is_none() {
            let known: Vec<&str> = scenario.faults().map(|(id, _)| id).collect();
            return Err(cx.err(f.referenced.line(), "fault", format!("no fault has id `{}` (faults: {})", f.value, known.join(", "))));
        }
        if healed && scenario.heal_at(&f.value).is_none() {
            return Err(cx.err(f.referenced.line(), "fault", format!("fault `{}` is never healed, so there is no time after it", f.value)));
        }
        Ok(f.value.clone())
    };
    let phase = || -> Result<Phase, ScenarioError> {
        let settle = ms(&s.settle_ms);
        let p = s.phase.as_ref().map(|p| (p.value.as_str(), p.referenced.line()));
        if let Some((other, l)) = p
            && !["whole", "before", "during", "after"].contains(&other)
        {
            return Err(cx.err(l, "phase", format!("`{other}` is not one of whole, before, during, after")));
        }
        if s.settle_ms.is_some() && !matches!(p, Some(("after", _))) {
            return Err(cx.err(s.settle_ms.as_ref().map(|x| x.referenced.line()).unwrap_or(line), "settle_ms", "only the `after` phase has a settle time"));
        }
        match p {
            None | Some(("whole", _)) | Some(("before", _)) => {
                if let Some(f) = &s.fault {
                    return Err(cx.err(f.referenced.line(), "fault", "only the `during` and `after` phases refer to a fault"));
                }
                if scenario.timeline.is_empty() && matches!(p, Some(("before", _))) {
                    return Err(cx.err(line, "phase", "`before` needs a fault on the timeline"));
                }
                Ok(if matches!(p, Some(("before", _))) { Phase::Before } else { Phase::Whole })
            }
            Some(("during", _)) => Ok(Phase::During(fault_ref(false)?)),
            Some(("after", _)) => Ok(Phase::After { fault: fault_ref(true)?, settle }),
            Some((other, l)) => Err(cx.err(l, "phase", format!("`{other}` is not one of whole, before, during, after"))),
        }
    };
    let max_ms = || Duration::from_millis(s.max_ms.as_ref().map(|m| m.value).unwrap_or(0));
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
        "failover_time" => SloKind::FailoverTime { fault: fault_ref(false)?, cluster: cluster()?, max: max_ms() },
        "failback_time" => SloKind::FailbackTime { fault: fault_ref(true)?, cluster: cluster()?, max: max_ms() },
        "p99_latency" => SloKind::P99Latency { phase: phase()?, max: max_ms() },
        "p99_increase" => {
            let phase = phase()?;
            if matches!(phase, Phase::Before | Phase::Whole) {
                return Err(cx.err(line, "phase", "`p99_increase` compares a `during` or `after` phase with the time before the first fault"));
            }
            SloKind::P99Increase { phase, max: max_ms() }
        }
        "digest_mismatches" => SloKind::DigestMismatches { max_count: count() },
        "lost_requests" => SloKind::LostRequests { max_count: count() },
        "leftovers" => SloKind::Leftovers { max_count: count() },
        "served_share" => SloKind::ServedShare {
            phase: phase()?,
            cluster: cluster()?,
            min_share: s.min_share.as_ref().map(|c| c.value).unwrap_or(0.0),
        },
        "locality_switches" => SloKind::LocalitySwitches { phase: phase()?, max_count: count() },
        other => return Err(cx.err(s.kind.referenced.line(), "kind", format!("unknown SLO kind `{other}`"))),
    };
    if let SloKind::DigestMismatches { .. } = kind
        && scenario.load.body_bytes == 0
    {
        return Err(cx.err(line, "kind", "`digest_mismatches` needs a load with a body (body_bytes above 0)"));
    }
    Ok(SloSpec { line, kind })
}
