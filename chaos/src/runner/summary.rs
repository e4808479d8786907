//! Load totals for the report.

use std::collections::BTreeMap;

use crate::load::LoadResult;
use crate::report::Totals;
use crate::slo::analysis::percentile;

/// How many distinct failure reasons the report lists.
const TOP_ERRORS: usize = 5;

/// Totals of a load run.
pub(crate) fn totals(load: &LoadResult) -> Totals {
    let o = &load.outcomes;
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for e in o.iter().filter(|x| !x.ok()) {
        let reason = e
            .error
            .clone()
            .unwrap_or_else(|| "body digest mismatch".into());
        // Request-specific details (ids, ports) would split one cause into many lines.
        let key: String = reason.chars().take(120).collect();
        *errors.entry(key).or_insert(0) += 1;
    }
    let mut top: Vec<(String, u64)> = errors.into_iter().collect();
    top.sort_by_key(|e| std::cmp::Reverse(e.1));
    top.truncate(TOP_ERRORS);
    let failed = o.iter().filter(|x| !x.ok()).count() as u64;
    Totals {
        sent: load.sent,
        ok: o.len() as u64 - failed,
        failed,
        late_sends: load.late_sends,
        p50_ms: ms(percentile(o, 50.0)),
        p99_ms: ms(percentile(o, 99.0)),
        max_ms: ms(percentile(o, 100.0)),
        top_errors: top,
    }
}
