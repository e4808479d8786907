//! The latency distributions as a hand-written SVG: one panel per protocol and rate, one curve
//! per path, latency (log scale) against percentile (the usual `1/(1-p)` axis, so the tail is
//! readable).

use std::fmt::Write;

use super::RunReport;
use crate::load::Protocol;

const WIDTH: f64 = 820.0;
const PANEL_HEIGHT: f64 = 320.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// The x axis ends at 99.999%.
const MAX_NINES: f64 = 5.0;
const COLORS: [&str; 8] = [
    "#222222", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
];

/// x position of percentile `p` in "nines": 0 -> 0, 90 -> 1, 99 -> 2, 99.9 -> 3.
fn nines(p: f64) -> f64 {
    if p >= 100.0 {
        MAX_NINES
    } else {
        (1.0 / (1.0 - p / 100.0)).log10().min(MAX_NINES)
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The SVG document.
pub fn latency_svg(r: &RunReport) -> String {
    let mut keys: Vec<(Protocol, f64)> = Vec::new();
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
    let height = PANEL_HEIGHT * keys.len().max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, (protocol, rate)) in keys.iter().enumerate() {
        panel(&mut out, r, *protocol, *rate, PANEL_HEIGHT * i as f64);
    }
    if keys.is_empty() {
        let _ = writeln!(out, r#"<text x="20" y="40">no fixed-rate runs</text>"#);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, r: &RunReport, protocol: Protocol, rate: f64, y0: f64) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = PANEL_HEIGHT - TOP - BOTTOM;
    let curves: Vec<(&str, Vec<(f64, f64)>)> = r
        .paths
        .iter()
        .filter_map(|p| {
            let run = p.run(protocol, rate)?;
            let pts: Vec<(f64, f64)> = run
                .latency
                .curve
                .iter()
                .filter(|(_, us)| *us > 0.0)
                .map(|(pct, us)| (nines(*pct), us / 1000.0))
                .collect();
            (!pts.is_empty()).then_some((p.title.as_str(), pts))
        })
        .collect();
    let all: Vec<f64> = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    } else {
        (-1.0, 1.0)
    };
    let x = |n: f64| LEFT + n / MAX_NINES * plot_w;
    let y = |ms: f64| y0 + TOP + plot_h - (ms.log10() - lo) / (hi - lo) * plot_h;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">Latency by percentile, {protocol} at {rate:.0} req/s (open loop)</text>"#,
        y0 + 22.0
    );
    // Grid: percentiles across, decades of milliseconds up.
    for (n, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ] {
        let xx = x(n);
        let _ = writeln!(
            out,
            r##"<line x1="{xx:.1}" y1="{:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            y0 + TOP,
            y0 + TOP + plot_h,
            y0 + TOP + plot_h + 16.0
        );
    }
    let mut d = lo;
    while d <= hi + 1e-9 {
        let ms = 10f64.powf(d);
        let yy = y(ms);
        let label = if ms >= 1.0 {
            format!("{ms:.0} ms")
        } else {
            format!("{ms} ms")
        };
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0
        );
        d += 1.0;
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        y0 + TOP + plot_h + 34.0
    );
    for (i, (title, pts)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = pts
            .iter()
            .map(|(n, ms)| format!("{:.1},{:.1}", x(*n), y(*ms)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let ly = y0 + TOP + 10.0 + 18.0 * i as f64;
        let lx = LEFT + plot_w + 12.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            esc(title)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_put_the_tail_on_a_readable_axis() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), MAX_NINES);
        assert_eq!(esc("a<b&c"), "a&lt;b&amp;c");
    }
}
