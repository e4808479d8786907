//! The targets, checked against one run's numbers. Each check says what was measured
//! and, when missed, by how much.

use serde::{Deserialize, Serialize};

use super::RunReport;
use crate::load::Protocol;

const MIB: f64 = 1024.0 * 1024.0;

/// One target and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetCheck {
    /// The target, in words.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met, missed, or `None` when its inputs were not measured in this run.
    pub met: Option<bool>,
    /// How far off a missed target is.
    pub shortfall: Option<String>,
}

fn check(
    target: &str,
    measured: String,
    met: Option<bool>,
    shortfall: Option<String>,
) -> TargetCheck {
    TargetCheck {
        target: target.to_string(),
        measured,
        met,
        shortfall: if met == Some(false) { shortfall } else { None },
    }
}

fn unmeasured(target: &str, why: &str) -> TargetCheck {
    check(target, why.to_string(), None, None)
}

/// Checks every target.
pub fn check_targets(report: &RunReport) -> Vec<TargetCheck> {
    vec![
        pair_vs_haproxy(report),
        throughput_vs_references(report),
        policy_stack_cost(report),
        sidecar_memory(report),
        cpu_per_request(report),
        quic_vs_tcp(report),
        propagation(report),
    ]
}

fn pair_vs_haproxy(report: &RunReport) -> TargetCheck {
    let rate = report.conditions.rates.first().copied().unwrap_or(1000.0);
    let target = format!(
        "sidecar pair adds at most 2x HAProxy's added latency (p50 and p99, HTTP/1.1, {rate} req/s)"
    );
    let added = |id: &str| {
        report
            .path(id)
            .and_then(|p| p.run(Protocol::Http1, rate))
            .and_then(|r| r.added_us)
    };
    let (Some(pair), Some(hap)) = (added("sidecar-pair"), added("haproxy")) else {
        return unmeasured(&target, "the sidecar pair or HAProxy was not measured");
    };
    // A negative "added" latency is below this run's noise: count it as zero.
    let (pair, hap) = (pair.map(|v| v.max(0.0)), hap.map(|v| v.max(0.0)));
    let (p50_ok, p99_ok) = (pair[0] <= 2.0 * hap[0], pair[2] <= 2.0 * hap[2]);
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.1}x", a / b)
        } else {
            "n/a".into()
        }
    };
    let measured = format!(
        "pair +{:.0} µs p50 / +{:.0} µs p99; HAProxy +{:.0} µs p50 / +{:.0} µs p99 (ratio {} / {}; negative differences count as 0)",
        pair[0],
        pair[2],
        hap[0],
        hap[2],
        ratio(pair[0], hap[0]),
        ratio(pair[2], hap[2])
    );
    let shortfall = format!(
        "p50 {:+.0} µs, p99 {:+.0} µs over the 2x allowance",
        pair[0] - 2.0 * hap[0],
        pair[2] - 2.0 * hap[2]
    );
    check(&target, measured, Some(p50_ok && p99_ok), Some(shortfall))
}

fn throughput_vs_references(report: &RunReport) -> TargetCheck {
    let target =
        "one sidecar hop pinned to one core: at least nginx's throughput and 80% of HAProxy's";
    let rps = |id: &str| {
        report
            .path(id)
            .and_then(|p| p.max_throughput.as_ref())
            .map(|t| t.rps)
    };
    let (Some(sidecar), Some(nginx), Some(hap)) = (rps("sidecar"), rps("nginx"), rps("haproxy"))
    else {
        return unmeasured(
            target,
            "maximum throughput of the sidecar, nginx or HAProxy not measured",
        );
    };
    let measured = format!(
        "sidecar {sidecar:.0} req/s, nginx {nginx:.0} req/s ({:.0}%), HAProxy {hap:.0} req/s ({:.0}%)",
        pct(sidecar, nginx),
        pct(sidecar, hap)
    );
    let met = sidecar >= nginx && sidecar >= 0.8 * hap;
    let shortfall = format!(
        "{:.0}% of nginx (goal 100%), {:.0}% of HAProxy (goal 80%)",
        pct(sidecar, nginx),
        pct(sidecar, hap)
    );
    check(target, measured, Some(met), Some(shortfall))
}

fn policy_stack_cost(report: &RunReport) -> TargetCheck {
    let target =
        "the policy stack with 100 routes costs at most 5% of one sidecar hop's throughput";
    let rps = |id: &str| {
        report
            .path(id)
            .and_then(|p| p.max_throughput.as_ref())
            .map(|t| t.rps)
    };
    let (Some(plain), Some(routed)) = (rps("sidecar"), rps("sidecar-routes")) else {
        return unmeasured(
            target,
            "maximum throughput of the sidecar with and without routes not measured",
        );
    };
    let measured = format!(
        "no routes {plain:.0} req/s, 100 routes {routed:.0} req/s ({:.1}%)",
        pct(routed, plain)
    );
    let shortfall = format!(
        "{:.1}% of the throughput without routes (goal 95%)",
        pct(routed, plain)
    );
    check(
        target,
        measured,
        Some(routed >= 0.95 * plain),
        Some(shortfall),
    )
}

fn pct(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b * 100.0 } else { 0.0 }
}

fn sidecar_memory(report: &RunReport) -> TargetCheck {
    let target = "sidecar RSS at most 10 MiB idle and 20 MiB under load";
    let sidecars: Vec<_> = report
        .paths
        .iter()
        .flat_map(|p| p.processes.iter())
        .filter(|p| p.label.contains("sidecar"))
        .collect();
    if sidecars.is_empty() {
        return unmeasured(target, "no sidecar was measured");
    }
    let idle = sidecars.iter().map(|p| p.rss_idle_bytes).max().unwrap_or(0) as f64 / MIB;
    let load = sidecars.iter().map(|p| p.rss_load_bytes).max().unwrap_or(0) as f64 / MIB;
    let measured = format!("largest sidecar: {idle:.1} MiB idle, {load:.1} MiB under load");
    let mut over = Vec::new();
    if idle > 10.0 {
        over.push(format!("idle {:.1} MiB over 10 MiB", idle - 10.0));
    }
    if load > 20.0 {
        over.push(format!("under load {:.1} MiB over 20 MiB", load - 20.0));
    }
    let shortfall = over.join(", ");
    check(
        target,
        measured,
        Some(idle <= 10.0 && load <= 20.0),
        Some(shortfall),
    )
}

fn cpu_per_request(report: &RunReport) -> TargetCheck {
    let target = "at most 0.1 vCPU per 1,000 req/s per mesh proxy";
    let worst = report
        .paths
        .iter()
        .filter(|p| !matches!(p.id.as_str(), "nginx" | "haproxy" | "direct"))
        .flat_map(|p| p.processes.iter().map(move |proc_| (p, proc_)))
        .max_by(|a, b| {
            a.1.cpu_s_per_1000_requests
                .total_cmp(&b.1.cpu_s_per_1000_requests)
        });
    let Some((path, worst)) = worst else {
        return unmeasured(target, "no mesh proxy was measured");
    };
    let refs: Vec<String> = report
        .paths
        .iter()
        .filter(|p| matches!(p.id.as_str(), "nginx" | "haproxy"))
        .flat_map(|p| p.processes.iter())
        .map(|p| format!("{} {:.3}", p.label, p.cpu_s_per_1000_requests))
        .collect();
    let measured = format!(
        "worst: {} on {} {:.3} vCPU per 1,000 req/s (references: {})",
        worst.label,
        path.id,
        worst.cpu_s_per_1000_requests,
        if refs.is_empty() {
            "none".into()
        } else {
            refs.join(", ")
        }
    );
    let shortfall = format!("{:.1}x the target", worst.cpu_s_per_1000_requests / 0.1);
    check(
        target,
        measured,
        Some(worst.cpu_s_per_1000_requests <= 0.1),
        Some(shortfall),
    )
}

fn quic_vs_tcp(report: &RunReport) -> TargetCheck {
    let target = "QUIC gateway pair carries at least 80% of the TCP+TLS tunnel's throughput";
    let Some(link) = &report.link else {
        return unmeasured(target, "the link was not measured");
    };
    let mut parts = Vec::new();
    let mut met = true;
    let mut worst = f64::INFINITY;
    for q in &link.quic {
        if let Some(t) = link.tcp_tls.iter().find(|t| t.streams == q.streams) {
            let share = pct(q.mib_per_s, t.mib_per_s);
            worst = worst.min(share);
            met &= share >= 80.0;
            parts.push(format!(
                "{} stream(s): QUIC {:.0} MiB/s vs TCP+TLS {:.0} MiB/s ({share:.0}%)",
                q.streams, q.mib_per_s, t.mib_per_s
            ));
        }
    }
    if parts.is_empty() {
        return unmeasured(target, "no matching stream counts");
    }
    check(
        target,
        parts.join("; "),
        Some(met),
        Some(format!("worst {worst:.0}% (goal 80%)")),
    )
}

fn propagation(report: &RunReport) -> TargetCheck {
    let target = "registration change propagates across clusters within 1 s at 10,000 endpoints";
    let Some(cp) = &report.control_plane else {
        return unmeasured(target, "the control plane was not measured");
    };
    let Some(largest) = cp.sizes.iter().max_by_key(|s| s.endpoints) else {
        return unmeasured(target, "no catalog size measured");
    };
    let measured = format!(
        "{} endpoints: median {:.0} ms, slowest {:.0} ms of {} trials",
        largest.endpoints,
        largest.p50_ms,
        largest.max_ms,
        largest.samples_ms.len()
    );
    if largest.endpoints < 10_000 {
        return check(target, measured + " (10,000 not run)", None, None);
    }
    check(
        target,
        measured,
        Some(largest.max_ms <= 1000.0),
        Some(format!("{:+.0} ms over 1 s", largest.max_ms - 1000.0)),
    )
}
