//! From the raw file to a [`Scenario`]: every cross-field rule checked before anything starts,
//! each refusal naming the line and the field.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use mesh_core::config::{ClusterSpec, ConfigError, FileDuration, Topology};
use mesh_core::names::check_label;
use serde_saphyr::Spanned;

mod slos;
mod timeline;

use super::ScenarioError;
use super::model::*;
use super::raw::*;
use super::targets::ProcessCatalog;

/// Largest request rate: the driver and the cluster-set share this machine.
const MAX_RATE: u32 = 5_000;
/// Largest body: the demo app digests bodies up to a few MiB.
const MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;
/// Longest scenario: a suite of ten must stay runnable in an afternoon.
const MAX_DURATION: Duration = Duration::from_secs(600);
/// Most demo replicas per cluster (two processes each on this machine).
const MAX_ECHO_REPLICAS: u32 = 8;
/// The demo service's clusterset name.
const DEFAULT_HOST: &str = "echo.demo.svc.clusterset.local";
/// Default body: big enough to span several TLS records' worth of frames, small enough for
/// hundreds of requests a second.
const DEFAULT_BODY_BYTES: u64 = 1024;
/// Default request timeout: well past any failover the SLOs allow, so a stalled request shows
/// up as latency first and as a failure only when it is really stuck.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The action names, for messages.
pub const ACTIONS: &[&str] = &[
    "kill",
    "freeze",
    "rolling_restart",
    "partition",
    "wan_loss",
    "impair",
    "endpoint",
    "flap",
    "unlink",
    "rotate_root",
];
/// The SLO kinds, for messages.
pub const SLO_KINDS: &[&str] = &[
    "failed_requests",
    "failover_time",
    "failback_time",
    "p99_latency",
    "p99_increase",
    "digest_mismatches",
    "lost_requests",
    "served_share",
    "locality_switches",
    "leftovers",
];

pub(super) struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    pub(super) fn err(&self, line: u64, field: &str, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Config(ConfigError::Invalid {
            file: self.file.to_string(),
            line,
            field: field.to_string(),
            message: message.into(),
        })
    }
}

/// Validates a parsed scenario file.
pub(crate) fn validate(raw: RawScenario, path: &Path) -> Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    let cx = Ctx { file: &file };
    check_label(&raw.name.value)
        .map_err(|e| cx.err(raw.name.referenced.line(), "name", e.to_string()))?;
    let summary = raw.summary.value.trim().to_string();
    if summary.is_empty() || summary.contains('\n') {
        return Err(cx.err(
            raw.summary.referenced.line(),
            "summary",
            "must be one non-empty line",
        ));
    }
    let topology = topology(&cx, &raw.topology)?;
    let catalog = ProcessCatalog::of(&topology);
    let load = load(&cx, &raw.load, &topology)?;
    let duration = *raw.duration.value;
    if duration.is_zero() || duration > MAX_DURATION {
        return Err(cx.err(
            raw.duration.referenced.line(),
            "duration",
            format!("must be above 0 and at most {MAX_DURATION:?}, got {duration:?}"),
        ));
    }
    let timeline = timeline::timeline(&cx, &raw.timeline, &catalog, duration)?;
    let mut scenario = Scenario {
        name: raw.name.value,
        file: path.to_path_buf(),
        summary,
        fast: raw.fast,
        cert_ttl: cert_ttl(&cx, &raw.topology)?,
        topology,
        load,
        duration,
        timeline,
        slos: Vec::new(),
    };
    if raw.slos.value.is_empty() {
        return Err(cx.err(
            raw.slos.referenced.line(),
            "slos",
            "a scenario needs at least one SLO",
        ));
    }
    for slo in &raw.slos.value {
        let spec = slos::slo_spec(&cx, slo, &scenario)?;
        scenario.slos.push(spec);
    }
    Ok(scenario)
}

/// Shortest certificate lifetime a controller accepts (its `--cert-ttl` floor).
const MIN_CERT_TTL: Duration = Duration::from_secs(10);

fn cert_ttl(cx: &Ctx, raw: &Spanned<RawTopology>) -> Result<Option<Duration>, ScenarioError> {
    match &raw.value.cert_ttl {
        Some(ttl) if *ttl.value < MIN_CERT_TTL => Err(cx.err(
            ttl.referenced.line(),
            "cert_ttl",
            format!(
                "must be at least {MIN_CERT_TTL:?} (the controller's floor), got {:?}",
                *ttl.value
            ),
        )),
        Some(ttl) => Ok(Some(*ttl.value)),
        None => Ok(None),
    }
}

fn topology(cx: &Ctx, raw: &Spanned<RawTopology>) -> Result<Topology, ScenarioError> {
    let clusters = &raw.value.clusters;
    if clusters.value.is_empty() {
        return Err(cx.err(
            clusters.referenced.line(),
            "clusters",
            "at least one cluster is needed",
        ));
    }
    let mut names = HashSet::new();
    let mut regions = HashSet::new();
    for c in &clusters.value {
        check_label(&c.name.value)
            .map_err(|e| cx.err(c.name.referenced.line(), "name", e.to_string()))?;
        if !names.insert(c.name.value.clone()) {
            return Err(cx.err(
                c.name.referenced.line(),
                "name",
                format!("cluster `{}` is declared twice", c.name.value),
            ));
        }
        let region = c.region.as_ref().unwrap_or(&c.name);
        check_label(&region.value)
            .map_err(|e| cx.err(region.referenced.line(), "region", e.to_string()))?;
        regions.insert(region.value.clone());
    }
    let mut specs = Vec::new();
    for c in &clusters.value {
        let own = c.region.as_ref().unwrap_or(&c.name).value.clone();
        for r in &c.region_priority {
            if !regions.contains(&r.value) {
                return Err(cx.err(
                    r.referenced.line(),
                    "region_priority",
                    format!("region `{}` is not the region of any cluster", r.value),
                ));
            }
            if r.value == own {
                return Err(cx.err(
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
                return Err(cx.err(
                    n.referenced.line(),
                    "echo_replicas",
                    format!("must be between 1 and {MAX_ECHO_REPLICAS}, got {}", n.value),
                ));
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
    let lease_grace = match &raw.value.lease_grace {
        Some(grace) if grace.value.is_zero() => {
            return Err(cx.err(grace.referenced.line(), "lease_grace", "must be above 0"));
        }
        Some(grace) => *grace.value,
        None => mesh_core::peer_catalogs::DEFAULT_LEASE_GRACE,
    };
    Ok(Topology {
        clusters: specs,
        lease_grace,
    })
}

pub(super) fn cluster_name(
    cx: &Ctx,
    topology: &Topology,
    v: &Spanned<String>,
    field: &str,
) -> Result<String, ScenarioError> {
    if topology.clusters.iter().any(|c| c.name == v.value) {
        Ok(v.value.clone())
    } else {
        let known: Vec<&str> = topology.clusters.iter().map(|c| c.name.as_str()).collect();
        Err(cx.err(
            v.referenced.line(),
            field,
            format!(
                "cluster `{}` is not in the topology (clusters: {})",
                v.value,
                known.join(", ")
            ),
        ))
    }
}

fn load(cx: &Ctx, raw: &Spanned<RawLoad>, topology: &Topology) -> Result<LoadSpec, ScenarioError> {
    let l = &raw.value;
    let client = cluster_name(cx, topology, &l.client, "client")?;
    if l.rate.value == 0 || l.rate.value > MAX_RATE {
        return Err(cx.err(
            l.rate.referenced.line(),
            "rate",
            format!(
                "must be between 1 and {MAX_RATE} requests per second, got {}",
                l.rate.value
            ),
        ));
    }
    let protocol = match l
        .protocol
        .as_ref()
        .map(|p| (p.value.as_str(), p.referenced.line()))
    {
        None | Some(("mixed", _)) => Protocol::Mixed,
        Some(("http1", _)) => Protocol::Http1,
        Some(("http2", _)) => Protocol::Http2,
        Some((other, line)) => {
            return Err(cx.err(
                line,
                "protocol",
                format!("`{other}` is not one of http1, http2, mixed"),
            ));
        }
    };
    let method = match &l.method {
        None => http::Method::PUT,
        Some(m) => m.value.parse::<http::Method>().map_err(|_| {
            cx.err(
                m.referenced.line(),
                "method",
                format!("`{}` is not an HTTP method", m.value),
            )
        })?,
    };
    let body_bytes = l.body_bytes.as_ref().map(|b| b.value).unwrap_or(
        if method == http::Method::GET || method == http::Method::HEAD {
            0
        } else {
            DEFAULT_BODY_BYTES
        },
    );
    if body_bytes > MAX_BODY_BYTES {
        let line = l
            .body_bytes
            .as_ref()
            .map(|b| b.referenced.line())
            .unwrap_or(raw.referenced.line());
        return Err(cx.err(
            line,
            "body_bytes",
            format!("at most {MAX_BODY_BYTES} bytes, got {body_bytes}"),
        ));
    }
    if body_bytes > 0 && (method == http::Method::GET || method == http::Method::HEAD) {
        let line = l
            .body_bytes
            .as_ref()
            .map(|b| b.referenced.line())
            .unwrap_or(raw.referenced.line());
        return Err(cx.err(
            line,
            "body_bytes",
            format!("{method} requests carry no body; use PUT to check body digests"),
        ));
    }
    let timeout = l
        .timeout
        .as_ref()
        .map(|t| *t.value)
        .unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        let line = l
            .timeout
            .as_ref()
            .map(|t| t.referenced.line())
            .unwrap_or(raw.referenced.line());
        return Err(cx.err(line, "timeout", "must be above 0"));
    }
    let host = l
        .host
        .as_ref()
        .map(|h| h.value.clone())
        .unwrap_or_else(|| DEFAULT_HOST.to_string());
    if host.is_empty() || host.contains('/') || host.contains(' ') {
        let line = l
            .host
            .as_ref()
            .map(|h| h.referenced.line())
            .unwrap_or(raw.referenced.line());
        return Err(cx.err(line, "host", format!("`{host}` is not a host name")));
    }
    Ok(LoadSpec {
        client,
        rate: l.rate.value,
        protocol,
        method,
        host,
        body_bytes: body_bytes as usize,
        timeout,
        capture: l.capture.as_ref().is_some_and(|c| c.value),
    })
}

pub(super) fn share(cx: &Ctx, v: &Option<Spanned<f64>>, field: &str) -> Result<f64, ScenarioError> {
    match v {
        None => Ok(0.0),
        Some(s) if (0.0..=1.0).contains(&s.value) => Ok(s.value),
        Some(s) => Err(cx.err(
            s.referenced.line(),
            field,
            format!("a share must be between 0 and 1, got {}", s.value),
        )),
    }
}

/// An optional duration, zero when absent.
pub(super) fn duration_or_zero(v: &Option<Spanned<FileDuration>>) -> Duration {
    v.as_ref().map(|x| *x.value).unwrap_or_default()
}
