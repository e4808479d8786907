//! The timeline picture of one scenario, drawn as SVG text: requests per second stacked by
//! serving cluster with failures on top, p99 latency below, fault and heal instants marked
//! across both.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::ScenarioReport;

const W: f64 = 1000.0;
const H: f64 = 530.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP_A: f64 = 96.0;
const HEIGHT_A: f64 = 250.0;
const TOP_B: f64 = 384.0;
const HEIGHT_B: f64 = 110.0;
/// Colours of serving clusters, in name order (colour-blind safe palette).
const PALETTE: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#9467bd", "#17becf", "#8c564b", "#bcbd22", "#e377c2", "#7f7f7f",
];
const FAILED: &str = "#d62728";
const FAULT: &str = "#d62728";
const HEAL: &str = "#2ca02c";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round number at or above `v` for an axis maximum (1, 2 or 5 times a power of ten).
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|m| *m >= v)
        .unwrap_or(10.0 * p)
}

/// The SVG document.
pub fn timeline_svg(r: &ScenarioReport) -> String {
    let mut s = String::new();
    let n = r.buckets.len().max(1) as f64;
    let plot_w = W - LEFT - RIGHT;
    let x = |t: f64| LEFT + t / n * plot_w;
    let clusters: BTreeSet<&str> = r
        .buckets
        .iter()
        .flat_map(|b| b.served.keys().map(String::as_str))
        .collect();
    let colour =
        |c: &str| PALETTE[clusters.iter().position(|k| *k == c).unwrap_or(0) % PALETTE.len()];
    let max_total = r
        .buckets
        .iter()
        .map(|b| b.served.values().sum::<u64>() + b.failed)
        .max()
        .unwrap_or(0) as f64;
    let ymax_a = nice_max(max_total);
    let max_p99 = r
        .buckets
        .iter()
        .filter_map(|b| b.p99_ms)
        .fold(0.0, f64::max);
    let ymax_b = nice_max(max_p99);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{} — {:?}</text>"#,
        esc(&r.name),
        r.status
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="42" fill="#555">{}</text>"##,
        esc(&r.summary)
    );

    // Panel A: requests per second by serving cluster, failures on top.
    let ya = |v: f64| TOP_A + HEIGHT_A - v / ymax_a * HEIGHT_A;
    for i in 0..=4 {
        let v = ymax_a * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            W - RIGHT,
            ya(v),
            ya(v),
            LEFT - 6.0,
            ya(v) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">requests / s</text>"#,
        TOP_A + HEIGHT_A / 2.0,
        TOP_A + HEIGHT_A / 2.0
    );
    let bw = (plot_w / n).max(1.0);
    for b in &r.buckets {
        let mut base = 0.0;
        let x0 = x(b.start_s);
        for (c, v) in &b.served {
            let v = *v as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{:.0} s: {v} served by {}</title></rect>"#,
                ya(base + v),
                bw * 0.92,
                v / ymax_a * HEIGHT_A,
                colour(c),
                b.start_s,
                esc(c)
            );
            base += v;
        }
        if b.failed > 0 {
            let v = b.failed as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{FAILED}"><title>{:.0} s: {} failed</title></rect>"#,
                ya(base + v),
                bw * 0.92,
                v / ymax_a * HEIGHT_A,
                b.start_s,
                b.failed
            );
        }
    }

    // Panel B: p99 latency.
    let yb = |v: f64| TOP_B + HEIGHT_B - v / ymax_b * HEIGHT_B;
    for i in 0..=2 {
        let v = ymax_b * f64::from(i) / 2.0;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            W - RIGHT,
            yb(v),
            yb(v),
            LEFT - 6.0,
            yb(v) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">p99 ms</text>"#,
        TOP_B + HEIGHT_B / 2.0,
        TOP_B + HEIGHT_B / 2.0
    );
    let points: Vec<String> = r
        .buckets
        .iter()
        .filter_map(|b| {
            b.p99_ms
                .map(|p| format!("{:.1},{:.1}", x(b.start_s + 0.5), yb(p)))
        })
        .collect();
    if !points.is_empty() {
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#333" stroke-width="1.5"/>"##,
            points.join(" ")
        );
    }

    // Time axis.
    let step = if n <= 30.0 {
        5.0
    } else if n <= 120.0 {
        10.0
    } else {
        30.0
    };
    let mut t = 0.0;
    while t <= n {
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#999"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0} s</text>"##,
            x(t),
            x(t),
            TOP_B + HEIGHT_B,
            TOP_B + HEIGHT_B + 5.0,
            x(t),
            TOP_B + HEIGHT_B + 18.0
        );
        t += step;
    }

    // Fault and heal instants across both panels.
    for (i, m) in r.marks.iter().enumerate() {
        let c = if m.kind == "fault" { FAULT } else { HEAL };
        let xm = x(m.at_s);
        // Labels sit in a band above the bars, staggered so neighbours do not overlap.
        let ty = 60.0 + (i % 3) as f64 * 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{xm:.1}" x2="{xm:.1}" y1="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="2" stroke-dasharray="6 4"/>"#,
            ty + 3.0,
            TOP_B + HEIGHT_B
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{ty:.1}" fill="{c}" font-weight="bold">{} {}</text>"#,
            xm + 4.0,
            m.kind,
            esc(&m.label)
        );
    }

    // Legend.
    let lx = W - RIGHT + 16.0;
    let mut ly = TOP_A + 4.0;
    let _ = writeln!(
        s,
        r#"<text x="{lx}" y="{ly}" font-weight="bold">served by</text>"#
    );
    for c in &clusters {
        ly += 18.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 10.0,
            colour(c),
            lx + 18.0,
            esc(c)
        );
    }
    ly += 18.0;
    let _ = writeln!(
        s,
        r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{FAILED}"/><text x="{:.1}" y="{ly:.1}">failed</text>"#,
        ly - 10.0,
        lx + 18.0
    );
    ly += 26.0;
    let _ = writeln!(
        s,
        r#"<line x1="{lx}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{FAULT}" stroke-width="2" stroke-dasharray="6 4"/><text x="{:.1}" y="{ly:.1}">fault</text>"#,
        lx + 12.0,
        ly - 4.0,
        ly - 4.0,
        lx + 18.0
    );
    ly += 18.0;
    let _ = writeln!(
        s,
        r#"<line x1="{lx}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{HEAL}" stroke-width="2" stroke-dasharray="6 4"/><text x="{:.1}" y="{ly:.1}">heal</text>"#,
        lx + 12.0,
        ly - 4.0,
        ly - 4.0,
        lx + 18.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::{Mark, Status, Totals};
    use crate::slo::analysis::Bucket;

    fn report() -> ScenarioReport {
        let buckets = (0..20)
            .map(|i| Bucket {
                start_s: f64::from(i),
                served: BTreeMap::from([(
                    (if (5..12).contains(&i) {
                        "us-west"
                    } else {
                        "us-east"
                    })
                    .to_string(),
                    100,
                )]),
                failed: if i == 5 { 7 } else { 0 },
                p99_ms: Some(if i == 5 { 900.0 } else { 4.0 }),
            })
            .collect();
        ScenarioReport {
            name: "replicas-die".into(),
            file: "s.yaml".into(),
            summary: "replicas <die> & return".into(),
            network: "namespaces".into(),
            status: Status::Passed,
            error: None,
            slos: Vec::new(),
            totals: Totals::default(),
            marks: vec![
                Mark {
                    at_s: 5.0,
                    kind: "fault",
                    label: "kill replicas".into(),
                },
                Mark {
                    at_s: 12.0,
                    kind: "heal",
                    label: "replicas".into(),
                },
            ],
            buckets,
            relays: Vec::new(),
            leftovers: Vec::new(),
            logs: "/tmp".into(),
            wall_s: 30.0,
        }
    }

    #[test]
    fn the_svg_shows_clusters_failures_latency_and_marks() {
        let svg = timeline_svg(&report());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("us-west") && svg.contains("us-east"));
        assert!(svg.contains("7 failed"));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("fault kill replicas") && svg.contains("heal replicas"));
        assert!(
            svg.contains("replicas &lt;die&gt; &amp; return"),
            "text is escaped"
        );
        // Bars of the two clusters have different colours.
        let colour_of = |c: &str| {
            svg.lines()
                .find(|l| l.contains(&format!("served by {c}")))
                .and_then(|l| l.split("fill=\"").nth(1))
                .map(|f| f[..7].to_string())
        };
        assert_ne!(colour_of("us-east"), colour_of("us-west"));
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(87.0), 100.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(0.0), 1.0);
    }
}
