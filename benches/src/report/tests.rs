//! The report on a hand-made run: added latency, targets, Markdown and SVG.

use super::*;
use crate::control_plane::summarise;
use crate::latency::{new_histogram, record};

fn run(protocol: Protocol, rate: f64, base_us: u64) -> RateRun {
    let mut h = new_histogram();
    for i in 0..1000 {
        record(&mut h, base_us + i % 10 * 10);
    }
    RateRun {
        protocol,
        target_rps: rate,
        achieved_rps: rate,
        ok: 1000,
        errors: 0,
        first_error: None,
        latency: LatencySummary::of(&h),
        added_us: None,
    }
}

fn path(id: &str, base_us: u64, rps: f64, rss_mib: u64, cpu: f64) -> PathReport {
    PathReport {
        id: id.into(),
        title: format!("{id} <title>"),
        runs: vec![
            run(Protocol::Http1, 1000.0, base_us),
            run(Protocol::Http2, 1000.0, base_us),
        ],
        max_throughput: Some(ThroughputRun {
            rps,
            errors: 0,
            p50_us: 100.0,
            p99_us: 200.0,
        }),
        processes: if id == "direct" {
            vec![]
        } else {
            vec![ProcessReport {
                label: if id.starts_with("sidecar") {
                    "client sidecar".into()
                } else {
                    id.into()
                },
                rss_idle_bytes: rss_mib * 1024 * 1024,
                rss_load_bytes: rss_mib * 2 * 1024 * 1024,
                cpu_s_per_1000_requests: cpu,
            }]
        },
    }
}

fn report() -> RunReport {
    let mut paths = vec![
        path("direct", 100, 20_000.0, 0, 0.0),
        path("sidecar", 250, 9_000.0, 8, 0.05),
        path("sidecar-pair", 400, 6_000.0, 9, 0.08),
        path("nginx", 300, 10_000.0, 4, 0.03),
        path("haproxy", 250, 12_000.0, 6, 0.02),
    ];
    compute_added(&mut paths);
    RunReport {
        machine: Machine::detect("release"),
        conditions: Conditions {
            rates: vec![1000.0],
            h2_rates: vec![1000.0],
            connections: 8,
            warmup_s: 2.0,
            duration_s: 8.0,
            rounds: 2,
            body_bytes: 1024,
            max_connections: 32,
            max_duration_s: 5.0,
            pinning: "pinned".into(),
            notes: vec!["a note".into()],
        },
        paths,
        link: None,
        control_plane: Some(ControlPlaneReport {
            sizes: vec![summarise(
                10_000,
                &[std::time::Duration::from_millis(1500)],
                1,
                1,
            )],
        }),
        dns: None,
        targets: vec![],
        wall_s: 1.0,
    }
}

#[test]
fn added_latency_is_measured_against_direct_of_the_same_protocol_and_rate() {
    let r = report();
    let pair = r
        .path("sidecar-pair")
        .unwrap()
        .run(Protocol::Http1, 1000.0)
        .unwrap();
    let added = pair.added_us.unwrap();
    assert!((added[0] - 300.0).abs() < 2.0, "{added:?}");
    assert!(r.path("direct").unwrap().runs[0].added_us.is_none());
}

#[test]
fn targets_report_met_missed_and_unmeasured_with_the_shortfall() {
    let mut r = report();
    r.targets = check_targets(&r);
    let by = |s: &str| r.targets.iter().find(|t| t.target.contains(s)).unwrap();
    // Pair +300 µs vs HAProxy +150 µs: exactly 2x, met.
    assert_eq!(by("2x HAProxy").met, Some(true), "{:?}", by("2x HAProxy"));
    // 9,000 req/s is below nginx's 10,000: missed, and the report says by how much.
    let tput = by("nginx's throughput");
    assert_eq!(tput.met, Some(false));
    assert!(
        tput.shortfall.as_deref().unwrap().contains("90% of nginx"),
        "{tput:?}"
    );
    assert_eq!(by("RSS").met, Some(true));
    assert_eq!(by("vCPU").met, Some(true));
    assert_eq!(by("QUIC").met, None, "the link was not measured");
    let prop = by("propagates");
    assert_eq!(prop.met, Some(false));
    assert!(
        prop.shortfall.as_deref().unwrap().contains("+500 ms"),
        "{prop:?}"
    );
}

#[test]
fn markdown_and_svg_show_every_path() {
    let mut r = report();
    r.targets = check_targets(&r);
    let md = markdown(&r);
    for p in &r.paths {
        assert!(md.contains(&p.title), "{}", p.title);
    }
    assert!(md.contains("### HTTP/1.1 at 1000 req/s"), "{md}");
    assert!(
        md.contains("| sidecar-pair <title> | 1000 | 0.440 |"),
        "{md}"
    );
    assert!(md.contains("missed: 90% of nginx"), "{md}");
    let svg = latency_svg(&r);
    assert!(svg.starts_with("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 10, "5 paths x 2 panels");
    assert!(svg.contains("&lt;title&gt;"), "titles are escaped");
}

#[test]
fn added_latency_below_the_noise_counts_as_zero_in_the_haproxy_ratio() {
    let mut r = report();
    // HAProxy faster than direct at p99 in this run (noise), the pair slower: missed.
    let hap = r.paths.iter_mut().find(|p| p.id == "haproxy").unwrap();
    hap.runs[0].added_us = Some([50.0, 0.0, -300.0, 0.0]);
    let pair = r.paths.iter_mut().find(|p| p.id == "sidecar-pair").unwrap();
    pair.runs[0].added_us = Some([80.0, 0.0, 40.0, 0.0]);
    let t = check_targets(&r).remove(0);
    assert_eq!(t.met, Some(false), "{t:?}");
    assert!(
        t.shortfall.as_deref().unwrap().contains("p99 +40 µs"),
        "{t:?}"
    );
    // Both below the noise: nothing measurable was added, met.
    let pair = r.paths.iter_mut().find(|p| p.id == "sidecar-pair").unwrap();
    pair.runs[0].added_us = Some([80.0, 0.0, -10.0, 0.0]);
    assert_eq!(check_targets(&r)[0].met, Some(true));
}

#[test]
fn the_dns_section_shows_each_server_with_both_runs() {
    let sample = crate::dnsperf::parse(include_str!("../../tests/data/dnsperf-2.10.0.txt"))
        .expect("the captured dnsperf output parses");
    let server = |id: &str| crate::dns::DnsServerReport {
        server: id.into(),
        title: format!("{id} <title>"),
        max: sample.clone(),
        fixed: sample.clone(),
        cpu_s_per_1000_queries: 0.0719,
        rss_bytes: 24 * 1024 * 1024,
    };
    let mut r = report();
    assert!(
        !markdown(&r).contains("## DNS"),
        "no DNS section unless measured"
    );
    r.dns = Some(crate::dns::DnsReport {
        names: 100,
        outstanding: 100,
        fixed_rate: 10_000,
        duration_s: 10.0,
        servers: vec![server("mesh"), server("coredns")],
    });
    let md = markdown(&r);
    assert!(md.contains("## DNS (dnsperf)"), "{md}");
    assert!(
        md.contains(
            "| mesh | max | 13991 | 6938 | 90 | 28318 | 4387 | 0 | NOERROR 28313 | 0.0719 | 24.0 |"
        ),
        "{md}"
    );
    assert!(
        md.contains(
            "| coredns | fixed | 13991 | 6938 | 90 | 28318 | 4387 | 0 | NOERROR 28313 | - | 24.0 |"
        ),
        "{md}"
    );
    assert!(md.contains("- coredns: coredns <title>"), "{md}");
}
