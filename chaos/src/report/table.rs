//! The terminal table of one scenario: each SLO with its bound, measured value and verdict.

use super::{ScenarioReport, Status};

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Passed => "PASSED",
        Status::Failed => "FAILED",
        Status::NotRun => "NOT RUN",
        Status::Interrupted => "INTERRUPTED",
    }
}

/// The table, ready to print.
pub fn scenario_table(r: &ScenarioReport) -> String {
    let mut out = format!(
        "== {} [{}] {} ({}, {:.0} s)\n",
        r.name,
        status_word(r.status),
        r.summary,
        r.network,
        r.wall_s
    );
    if let Some(e) = &r.error {
        out.push_str(&format!("   {e}\n"));
    }
    let rows: Vec<[String; 4]> = r
        .slos
        .iter()
        .map(|s| {
            [
                format!("{} (line {})", s.kind, s.line),
                s.bound.clone(),
                s.measured.clone(),
                s.verdict.to_string(),
            ]
        })
        .collect();
    let header = [
        "SLO".to_string(),
        "bound".into(),
        "measured".into(),
        "verdict".into(),
    ];
    let mut widths = [0usize; 4];
    for row in rows.iter().chain(std::iter::once(&header)) {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[String; 4]| {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("   {}\n", cells.join("  ").trim_end())
    };
    out.push_str(&line(&header));
    for (row, s) in rows.iter().zip(&r.slos) {
        out.push_str(&line(row));
        out.push_str(&format!("     {}\n", s.description));
    }
    let t = &r.totals;
    if t.sent > 0 {
        let ms = |v: Option<f64>| {
            v.map(|v| format!("{v:.1} ms"))
                .unwrap_or_else(|| "-".into())
        };
        out.push_str(&format!(
            "   load: {} sent, {} ok, {} failed, {} sent late; latency p50 {}, p99 {}, max {}\n",
            t.sent,
            t.ok,
            t.failed,
            t.late_sends,
            ms(t.p50_ms),
            ms(t.p99_ms),
            ms(t.max_ms)
        ));
        for (e, n) in &t.top_errors {
            out.push_str(&format!("   {n:>6} x {e}\n"));
        }
    }
    if !r.leftovers.is_empty() {
        out.push_str(&format!("   left behind: {}\n", r.leftovers.join(", ")));
    }
    out
}
