//! Latency histograms and their summary: percentiles in microseconds and the percentile curve
//! the SVG draws.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded, in microseconds (60 s); slower answers are clamped to it.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Percentiles the distribution curve is sampled at (the SVG's x axis is `1/(1-p)`).
pub const CURVE_PERCENTILES: [f64; 13] = [
    0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0,
];

/// A new latency histogram: 1 µs to 60 s at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

/// Records one latency, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, micros: u64) {
    let _ = h.record(micros.clamp(1, MAX_LATENCY_US));
}

/// A latency distribution, summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Requests measured.
    pub count: u64,
    /// Median, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Largest, µs.
    pub max_us: f64,
    /// Mean, µs.
    pub mean_us: f64,
    /// (percentile, µs) at [`CURVE_PERCENTILES`], for the picture.
    pub curve: Vec<(f64, f64)>,
}

impl LatencySummary {
    /// Summarises `h` (all zeros when it is empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        let at = |p: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_percentile(p) as f64
            }
        };
        Self {
            count: h.len(),
            p50_us: at(50.0),
            p90_us: at(90.0),
            p99_us: at(99.0),
            p999_us: at(99.9),
            max_us: if h.is_empty() { 0.0 } else { h.max() as f64 },
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            curve: CURVE_PERCENTILES.iter().map(|p| (*p, at(*p))).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_values() {
        let mut h = new_histogram();
        for v in 1..=1000 {
            record(&mut h, v);
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() <= 1.0, "{}", s.p50_us);
        assert!((s.p99_us - 990.0).abs() <= 1.0, "{}", s.p99_us);
        assert_eq!(s.max_us, 1000.0);
        assert_eq!(s.curve.len(), CURVE_PERCENTILES.len());
        assert!(s.curve.windows(2).all(|w| w[0].1 <= w[1].1), "monotonic");
    }

    #[test]
    fn out_of_range_values_are_clamped_and_empty_is_zero() {
        let mut h = new_histogram();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert_eq!(LatencySummary::of(&new_histogram()).p99_us, 0.0);
    }
}
