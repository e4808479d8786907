//! Endpoint choice within a locality: a peak-EWMA latency estimate per endpoint (Finagle) and
//! power-of-two-choices over the resulting costs. Callers compute each endpoint's cost as
//! `ewma * (in_flight + 1)`, so a slow or busy endpoint loses the comparison. It owns the
//! choice only; which endpoints are candidates (not ejected, in this locality) is decided
//! before.

use std::time::{Duration, Instant};

use rand::Rng;

/// Default decay time of the latency estimate: 10 s, so one slow response is forgotten within
/// seconds, while a consistently slow endpoint keeps its high cost.
pub const DEFAULT_EWMA_DECAY: Duration = Duration::from_secs(10);

/// Peak-EWMA round-trip time estimate of one endpoint.
#[derive(Debug, Clone)]
pub struct Ewma {
    decay: Duration,
    /// Current estimate, in seconds.
    estimate: f64,
    /// Time of the last observation; `None` until the first one.
    updated_at: Option<Instant>,
}

impl Ewma {
    /// Creates an estimate at `default_rtt` (used until the first sample) decaying over `decay`.
    pub fn new(default_rtt: Duration, decay: Duration) -> Self {
        Self {
            decay,
            estimate: default_rtt.as_secs_f64(),
            updated_at: None,
        }
    }

    /// Adds a sample: a peak replaces the estimate at once, a lower value blends in with a
    /// weight that grows with the time since the last sample.
    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let sample = rtt.as_secs_f64();
        if sample > self.estimate {
            self.estimate = sample;
        } else {
            let kept = self.kept_weight(now);
            self.estimate = self.estimate * kept + sample * (1.0 - kept);
        }
        self.updated_at = Some(now);
    }

    /// The estimate at `now`, in seconds. It decays toward zero while no sample arrives, so an
    /// endpoint once slow is eventually tried again rather than starved forever.
    pub fn get(&self, now: Instant) -> f64 {
        self.estimate * self.kept_weight(now)
    }

    /// Share of the current estimate still trusted at `now`.
    fn kept_weight(&self, now: Instant) -> f64 {
        let Some(updated_at) = self.updated_at else {
            return 1.0;
        };
        let elapsed = now.saturating_duration_since(updated_at);
        if elapsed.is_zero() {
            return 1.0;
        }
        if self.decay.is_zero() {
            return 0.0;
        }
        (-elapsed.as_secs_f64() / self.decay.as_secs_f64()).exp()
    }
}

/// Power of two choices: index of the cheaper of two distinct random candidates (a tie goes to
/// the first pick); 0 for one candidate, `None` for none.
pub fn p2c_pick(costs: &[f64], rng: &mut impl Rng) -> Option<usize> {
    match costs.len() {
        0 => None,
        1 => Some(0),
        n => {
            let first = rng.random_range(0..n);
            // Draw from the n-1 others so the two picks are always distinct.
            let mut second = rng.random_range(0..n - 1);
            if second >= first {
                second += 1;
            }
            // A NaN cost loses: a broken estimate must not attract traffic.
            let second_cheaper = costs[first].is_nan() || costs[second] < costs[first];
            Some(if second_cheaper { second } else { first })
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starts_at_the_default_rtt() {
        let ewma = Ewma::new(ms(30), DEFAULT_EWMA_DECAY);
        assert!((ewma.get(Instant::now()) - 0.030).abs() < 1e-12);
    }

    #[test]
    fn a_peak_replaces_the_estimate_at_once() {
        let now = Instant::now();
        let mut ewma = Ewma::new(ms(10), DEFAULT_EWMA_DECAY);
        ewma.observe(ms(200), now);
        assert!((ewma.get(now) - 0.200).abs() < 1e-12);
    }

    #[test]
    fn a_lower_sample_blends_in_by_elapsed_time() {
        let start = Instant::now();
        let mut ewma = Ewma::new(ms(10), DEFAULT_EWMA_DECAY);
        ewma.observe(ms(200), start);
        // Right away, a low sample barely moves the estimate.
        ewma.observe(ms(100), start);
        assert!((ewma.get(start) - 0.200).abs() < 1e-12);
        // One decay time later it weighs 1 - 1/e.
        let later = start + DEFAULT_EWMA_DECAY;
        ewma.observe(ms(100), later);
        let kept = (-1.0f64).exp();
        let expected = 0.200 * kept + 0.100 * (1.0 - kept);
        assert!(
            (ewma.get(later) - expected).abs() < 1e-9,
            "{}",
            ewma.get(later)
        );
    }

    #[test]
    fn an_idle_estimate_decays_toward_zero() {
        let start = Instant::now();
        let mut ewma = Ewma::new(ms(10), DEFAULT_EWMA_DECAY);
        ewma.observe(ms(500), start);
        let idle = ewma.get(start + DEFAULT_EWMA_DECAY * 5);
        assert!(idle < 0.500 * 0.01, "{idle}");
    }

    #[test]
    fn p2c_handles_small_inputs() {
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(p2c_pick(&[], &mut rng), None);
        assert_eq!(p2c_pick(&[3.0], &mut rng), Some(0));
        for _ in 0..100 {
            assert_eq!(
                p2c_pick(&[5.0, 1.0], &mut rng),
                Some(1),
                "two candidates: always the cheaper"
            );
        }
    }

    #[test]
    fn p2c_never_picks_the_most_expensive_and_favours_the_cheapest() {
        let mut rng = StdRng::seed_from_u64(42);
        let costs = [1.0, 2.0, 3.0, f64::NAN];
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[p2c_pick(&costs, &mut rng).unwrap()] += 1;
        }
        assert_eq!(counts[3], 0, "NaN counts as the most expensive");
        // The cheapest wins every pair it is in: 3 of the 6 pairs.
        assert!(counts[0] > 1800 && counts[0] < 2200, "{counts:?}");
        assert!(counts[0] > counts[1] && counts[1] > counts[2], "{counts:?}");
    }
}
