//! The report as Markdown tables.

use std::fmt::Write;

use super::RunReport;

const MIB: f64 = 1024.0 * 1024.0;

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

fn added(us: f64) -> String {
    format!("{:+.3}", us / 1000.0)
}

/// Renders the whole report.
pub fn markdown(r: &RunReport) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let _ = writeln!(out, "# mesh benchmark results\n");
    let _ = writeln!(
        out,
        "Run on {} on {} cores ({}), Linux {}, {} GiB; mesh {} ({} build); {}; {}. Whole run: {:.0} s.\n",
        m.date,
        m.cores,
        m.cpu_model,
        m.kernel,
        m.memory_gib,
        m.mesh_version,
        m.mesh_profile,
        m.nginx_version.as_deref().unwrap_or("nginx not found"),
        m.haproxy_version.as_deref().unwrap_or("HAProxy not found"),
        r.wall_s
    );
    let c = &r.conditions;
    let _ = writeln!(out, "## Conditions\n");
    let _ = writeln!(
        out,
        "- Open loop, latency measured from each request's intended send time (coordinated omission corrected), HdrHistogram."
    );
    let _ = writeln!(
        out,
        "- {} connections per run, {:.1} s warm-up then {:.1} s measured, request body {} bytes echoed back by the upstream; {} interleaved rounds (every path at one rate, then the next), histograms merged.",
        c.connections, c.warmup_s, c.duration_s, c.body_bytes, c.rounds
    );
    let _ = writeln!(
        out,
        "- Maximum throughput: closed loop, {} HTTP/1.1 connections, {:.1} s; {}.",
        c.max_connections, c.max_duration_s, c.pinning
    );
    for note in &c.notes {
        let _ = writeln!(out, "- {note}");
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## Latency at fixed rates (ms)\n");
    let mut keys: Vec<(crate::load::Protocol, f64)> = Vec::new();
    for p in &r.paths {
        for run in &p.runs {
            if !keys
                .iter()
                .any(|k| k.0 == run.protocol && k.1 == run.target_rps)
            {
                keys.push((run.protocol, run.target_rps));
            }
        }
    }
    for (protocol, rate) in keys {
        let _ = writeln!(out, "### {protocol} at {rate:.0} req/s\n");
        let _ = writeln!(
            out,
            "| path | achieved req/s | p50 | p90 | p99 | p99.9 | added p50 | added p90 | added p99 | added p99.9 | errors |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for p in &r.paths {
            let Some(run) = p.run(protocol, rate) else {
                continue;
            };
            let l = &run.latency;
            let add = match run.added_us {
                Some(a) => a.map(added).join(" | "),
                None => "- | - | - | -".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {} | {} | {} | {add} | {} |",
                p.title,
                run.achieved_rps,
                ms(l.p50_us),
                ms(l.p90_us),
                ms(l.p99_us),
                ms(l.p999_us),
                run.errors
            );
        }
        let _ = writeln!(out);
    }

    if r.paths.iter().any(|p| p.max_throughput.is_some()) {
        let _ = writeln!(out, "## Maximum throughput, proxies pinned to one core\n");
        let _ = writeln!(out, "| path | req/s | p50 ms | p99 ms | errors |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        for p in &r.paths {
            if let Some(t) = &p.max_throughput {
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {} | {} | {} |",
                    p.title,
                    t.rps,
                    ms(t.p50_us),
                    ms(t.p99_us),
                    t.errors
                );
            }
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "## CPU and memory per proxy process\n");
    let rate = c.rates.first().copied().unwrap_or(0.0);
    let _ = writeln!(
        out,
        "CPU from `/proc/<pid>/stat` (utime + stime) over the HTTP/1.1 runs at {rate:.0} req/s; CPU seconds per 1,000 requests equal vCPU per 1,000 req/s. RSS from `/proc/<pid>/status` (VmRSS) before any load and the largest seen during those runs.\n"
    );
    let _ = writeln!(
        out,
        "| path | process | CPU s / 1,000 req | RSS idle MiB | RSS under load MiB |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for p in &r.paths {
        for proc_ in &p.processes {
            let _ = writeln!(
                out,
                "| {} | {} | {:.3} | {:.1} | {:.1} |",
                p.title,
                proc_.label,
                proc_.cpu_s_per_1000_requests,
                proc_.rss_idle_bytes as f64 / MIB,
                proc_.rss_load_bytes as f64 / MIB
            );
        }
    }
    let _ = writeln!(out);

    if let Some(link) = &r.link {
        let _ = writeln!(out, "## QUIC link against a TCP+TLS tunnel\n");
        let _ = writeln!(
            out,
            "{} MiB per run, split evenly over the streams; client -> TLS -> ingress -> (QUIC | TLS over TCP) -> egress -> TCP -> sink.\n",
            link.payload_bytes / (1024 * 1024)
        );
        let _ = writeln!(
            out,
            "| streams | gateway pair (QUIC) MiB/s | TCP+TLS relays MiB/s | QUIC share |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|");
        for q in &link.quic {
            if let Some(t) = link.tcp_tls.iter().find(|t| t.streams == q.streams) {
                let share = if t.mib_per_s > 0.0 {
                    q.mib_per_s / t.mib_per_s * 100.0
                } else {
                    0.0
                };
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.0} | {share:.0}% |",
                    q.streams, q.mib_per_s, t.mib_per_s
                );
            }
        }
        let _ = writeln!(
            out,
            "\nTunnel set-up, until one round trip through it (ms):\n"
        );
        let _ = writeln!(out, "| kind | p50 | p90 | p99 | samples |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        for (name, l) in [
            (
                "mesh, new stream on a warm gateway connection",
                &link.setup_quic_warm,
            ),
            (
                "mesh, cold (TCP + mTLS + HTTP/2 to the gateway first)",
                &link.setup_quic_cold,
            ),
            ("TCP+TLS relays (always cold)", &link.setup_tcp_tls),
        ] {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} |",
                ms(l.p50_us),
                ms(l.p90_us),
                ms(l.p99_us),
                l.count
            );
        }
        let _ = writeln!(out);
    }

    if let Some(cp) = &r.control_plane {
        let _ = writeln!(out, "## Control plane\n");
        let _ = writeln!(
            out,
            "Registration of a new service in bench-a until a client sidecar in bench-b routes a request to it.\n"
        );
        let _ = writeln!(
            out,
            "| endpoints in bench-a | median ms | slowest ms | trials | controller RSS MiB | peer controller RSS MiB |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
        for s in &cp.sizes {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {} | {:.1} | {:.1} |",
                s.endpoints,
                s.p50_ms,
                s.max_ms,
                s.samples_ms.len(),
                s.controller_rss_bytes as f64 / MIB,
                s.peer_controller_rss_bytes as f64 / MIB
            );
        }
        let _ = writeln!(out);
    }

    if let Some(dns) = &r.dns {
        dns_section(&mut out, dns);
    }

    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| target | measured | verdict |");
    let _ = writeln!(out, "|---|---|---|");
    for t in &r.targets {
        let verdict = match (t.met, &t.shortfall) {
            (Some(true), _) => "met".to_string(),
            (Some(false), Some(s)) => format!("missed: {s}"),
            (Some(false), None) => "missed".to_string(),
            (None, _) => "not measured".to_string(),
        };
        let _ = writeln!(out, "| {} | {} | {verdict} |", t.target, t.measured);
    }
    let _ = writeln!(out, "\n![latency distributions](latency.svg)");
    out
}

/// The DNS throughput table: each server as fast as it answers, then at the fixed rate.
fn dns_section(out: &mut String, dns: &crate::dns::DnsReport) {
    let _ = writeln!(out, "## DNS (dnsperf)\n");
    let _ = writeln!(
        out,
        "The same query file ({} names of `clusterset.local`, type A) against each server, {:.0} s per run, at most {} queries in flight; \"max\" sends as fast as answers come, \"fixed\" at {} queries/s.\n",
        dns.names, dns.duration_s, dns.outstanding, dns.fixed_rate
    );
    let _ = writeln!(
        out,
        "| server | run | queries/s | avg latency µs | min µs | max µs | stddev µs | lost | rcodes | server CPU s per 1,000 queries | server RSS MiB |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    for s in &dns.servers {
        for (run, r) in [("max", &s.max), ("fixed", &s.fixed)] {
            let rcodes: Vec<String> = r.rcodes.iter().map(|(c, n)| format!("{c} {n}")).collect();
            // CPU is sampled over the max run only.
            let cpu = match run {
                "max" => format!("{:.4}", s.cpu_s_per_1000_queries),
                _ => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "| {} | {run} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {cpu} | {:.1} |",
                s.server,
                r.qps,
                r.avg_latency_us,
                r.min_latency_us,
                r.max_latency_us,
                r.stddev_latency_us,
                r.lost,
                rcodes.join(", "),
                s.rss_bytes as f64 / MIB
            );
        }
    }
    let _ = writeln!(out);
    for s in &dns.servers {
        let _ = writeln!(out, "- {}: {}", s.server, s.title);
    }
    let _ = writeln!(out);
}
