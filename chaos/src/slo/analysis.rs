//! Pure measurements over recorded outcomes (sorted by due time): windows, percentiles with
//! HdrHistogram, serving shares, per-second buckets for the timeline.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::Outcome;

/// Step between the starts of two candidate windows when looking for a failover.
const WINDOW_STEP: Duration = Duration::from_millis(50);
/// Share of a window that must be served by the expected cluster.
pub const SERVED_THRESHOLD: f64 = 0.99;

/// Outcomes due in `[from, to)`; `outcomes` must be sorted by due time.
pub fn window(outcomes: &[Outcome], from: Duration, to: Duration) -> &[Outcome] {
    let start = outcomes.partition_point(|o| o.scheduled < from);
    let end = outcomes.partition_point(|o| o.scheduled < to);
    &outcomes[start..end.max(start)]
}

/// The 99th percentile latency, or `None` without outcomes.
pub fn p99(outcomes: &[Outcome]) -> Option<Duration> {
    percentile(outcomes, 99.0)
}

/// A latency percentile (HdrHistogram, microseconds, 3 significant digits).
pub fn percentile(outcomes: &[Outcome], q: f64) -> Option<Duration> {
    if outcomes.is_empty() {
        return None;
    }
    // 1 us to 10 min at 3 significant digits; larger values are clamped, never dropped.
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).ok()?;
    for o in outcomes {
        h.saturating_record(o.latency.as_micros().clamp(1, 600_000_000) as u64);
    }
    Some(Duration::from_micros(h.value_at_quantile(q / 100.0)))
}

/// Share of outcomes answered successfully by `cluster`.
pub fn served_share(outcomes: &[Outcome], cluster: &str) -> Option<f64> {
    served_share_by(outcomes, cluster, None)
}

/// Share of outcomes answered successfully by `cluster` (and by `replica` there, if given).
pub fn served_share_by(outcomes: &[Outcome], cluster: &str, replica: Option<&str>) -> Option<f64> {
    if outcomes.is_empty() {
        return None;
    }
    let good = outcomes
        .iter()
        .filter(|o| o.ok() && o.served_by.as_deref() == Some(cluster))
        .filter(|o| replica.is_none_or(|r| o.replica.as_deref() == Some(r)))
        .count();
    Some(good as f64 / outcomes.len() as f64)
}

/// Time from `from` until the start of the first one-second window that is at least 99%
/// served by `cluster`, searching windows that end by `end`.
pub fn time_to_serve(
    outcomes: &[Outcome],
    from: Duration,
    end: Duration,
    cluster: &str,
) -> Option<Duration> {
    let second = Duration::from_secs(1);
    let mut t = from;
    while t + second <= end {
        if served_share(window(outcomes, t, t + second), cluster)
            .is_some_and(|s| s >= SERVED_THRESHOLD)
        {
            return Some(t - from);
        }
        t += WINDOW_STEP;
    }
    None
}

/// One second of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// Its start, in seconds from the load's start.
    pub start_s: f64,
    /// Successful requests per serving cluster.
    pub served: BTreeMap<String, u64>,
    /// Failed requests.
    pub failed: u64,
    /// 99th percentile latency of all requests due in it, in milliseconds.
    pub p99_ms: Option<f64>,
}

/// The run cut into one-second buckets from 0 to `end` (or to the last request due, if earlier).
pub fn buckets(outcomes: &[Outcome], end: Duration) -> Vec<Bucket> {
    let last = outcomes
        .iter()
        .map(|o| o.scheduled)
        .max()
        .unwrap_or_default();
    let end = end.min(last + Duration::from_nanos(1));
    let n = end.as_secs_f64().ceil() as u64;
    (0..n)
        .map(|i| {
            let from = Duration::from_secs(i);
            let w = window(outcomes, from, from + Duration::from_secs(1));
            let mut served = BTreeMap::new();
            let mut failed = 0;
            for o in w {
                match (&o.served_by, o.ok()) {
                    (Some(c), true) => *served.entry(c.clone()).or_insert(0) += 1,
                    (None, true) => *served.entry("unknown".to_string()).or_insert(0) += 1,
                    (_, false) => failed += 1,
                }
            }
            Bucket {
                start_s: i as f64,
                served,
                failed,
                p99_ms: p99(w).map(|d| d.as_secs_f64() * 1000.0),
            }
        })
        .collect()
}

/// Changes of the majority serving cluster between consecutive one-second windows of
/// `[from, to)` (windows without a successful request are skipped).
pub fn locality_switches(outcomes: &[Outcome], from: Duration, to: Duration) -> u64 {
    let second = Duration::from_secs(1);
    let mut last: Option<String> = None;
    let mut switches = 0;
    let mut t = from;
    while t < to {
        let w = window(outcomes, t, (t + second).min(to));
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for o in w.iter().filter(|o| o.ok()) {
            if let Some(c) = &o.served_by {
                *counts.entry(c.as_str()).or_insert(0) += 1;
            }
        }
        if let Some((c, _)) = counts.into_iter().max_by_key(|(_, n)| *n) {
            if last.as_deref().is_some_and(|l| l != c) {
                switches += 1;
            }
            last = Some(c.to_string());
        }
        t += second;
    }
    switches
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::load::{DigestCheck, Wire};

    /// `n` requests a second for `secs` seconds; `who(t)` says which cluster served the one due
    /// at `t` (`None` = failed).
    pub(crate) fn synth(
        rate: u64,
        secs: u64,
        who: impl Fn(Duration) -> Option<&'static str>,
    ) -> Vec<Outcome> {
        (0..rate * secs)
            .map(|i| {
                let t = Duration::from_secs_f64(i as f64 / rate as f64);
                let served = who(t);
                Outcome {
                    id: i,
                    scheduled: t,
                    latency: Duration::from_millis(if served.is_some() { 5 } else { 1000 }),
                    wire: Wire::Http1,
                    status: Some(if served.is_some() { 200 } else { 503 }),
                    served_by: served.map(str::to_string),
                    replica: served.map(|_| "echo-0".to_string()),
                    error: served.is_none().then(|| "503".to_string()),
                    digest: DigestCheck::Match,
                }
            })
            .collect()
    }

    #[test]
    fn failover_time_is_the_start_of_the_first_window_served_by_the_expected_cluster() {
        // Fault at 5 s; failures until 5.5 s, then us-west.
        let o = synth(100, 20, |t| {
            if t < Duration::from_secs(5) {
                Some("us-east")
            } else if t < Duration::from_millis(5500) {
                None
            } else {
                Some("us-west")
            }
        });
        let d = time_to_serve(
            &o,
            Duration::from_secs(5),
            Duration::from_secs(20),
            "us-west",
        )
        .unwrap();
        assert_eq!(d, Duration::from_millis(500));
        assert_eq!(
            time_to_serve(
                &o,
                Duration::from_secs(5),
                Duration::from_secs(20),
                "eu-central"
            ),
            None
        );
        assert_eq!(
            time_to_serve(&o, Duration::ZERO, Duration::from_secs(20), "us-east"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_window_needs_99_percent() {
        // 2% of requests keep failing: never 99%.
        let o = synth(100, 10, |t| {
            if (t.as_millis() / 10) % 50 == 0 {
                None
            } else {
                Some("us-west")
            }
        });
        assert_eq!(
            time_to_serve(&o, Duration::ZERO, Duration::from_secs(10), "us-west"),
            None
        );
    }

    #[test]
    fn percentiles_windows_and_buckets() {
        let o = synth(100, 10, |t| {
            if t < Duration::from_secs(1) {
                None
            } else {
                Some("us-east")
            }
        });
        assert_eq!(
            window(&o, Duration::from_secs(2), Duration::from_secs(3)).len(),
            100
        );
        let p = p99(&o).unwrap();
        assert!(
            p >= Duration::from_millis(999) && p <= Duration::from_millis(1001),
            "{p:?}"
        );
        assert!(
            p99(window(&o, Duration::from_secs(2), Duration::from_secs(10))).unwrap()
                < Duration::from_millis(6)
        );
        let b = buckets(&o, Duration::from_secs(10));
        assert_eq!(b.len(), 10);
        assert_eq!(b[0].failed, 100);
        assert_eq!(b[3].served["us-east"], 100);
        assert_eq!(p99(&[]), None);
    }

    #[test]
    fn locality_switches_count_majority_changes() {
        let flap = synth(100, 10, |t| {
            if (t.as_secs() / 2) % 2 == 0 {
                Some("us-east")
            } else {
                Some("us-west")
            }
        });
        assert_eq!(
            locality_switches(&flap, Duration::ZERO, Duration::from_secs(10)),
            4
        );
        let steady = synth(100, 10, |_| Some("us-east"));
        assert_eq!(
            locality_switches(&steady, Duration::ZERO, Duration::from_secs(10)),
            0
        );
    }
}
