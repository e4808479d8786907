//! Jittered exponential backoff between reconnection attempts: the one used by every
//! component that redials something (a sidecar's discovery stream and bootstrap, a gateway's
//! peer links, control streams and controller session). Pure: the randomness is passed in.

use std::time::Duration;

use rand::Rng;

/// First delay: short, so a peer (gateway, controller) that restarts is reached again almost
/// at once.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay: a peer that comes back is noticed within about 2 s, well inside the 5 s
/// failover promise, while a dead peer costs at most one attempt every 1-2 s.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Exponential backoff with "equal jitter": each delay is uniform in `[d/2, d]` where `d`
/// doubles from `min` up to `max`. The jitter keeps many sidecars or gateways that lost the same peer
/// from redialing in lockstep; the lower half bound keeps the growth meaningful.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(MIN_BACKOFF, MAX_BACKOFF)
    }
}

impl Backoff {
    /// A backoff from `min` to `max` (`max` is raised to `min` if below it).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay, drawing the jitter from `rng`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1).min(31);
        let ceiling_ns = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let floor_ns = ceiling_ns / 2;
        Duration::from_nanos(rng.random_range(floor_ns..=ceiling_ns))
    }

    /// The next delay, with jitter from the thread-local generator.
    pub fn next_random(&mut self) -> Duration {
        self.next_delay(&mut rand::rng())
    }

    /// Starts over from `min` (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn delays_stay_within_the_jitter_bounds_and_grow_to_the_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..50 {
            let mut b = Backoff::default();
            let expected_ceilings = [100, 200, 400, 800, 1600, 2000, 2000, 2000];
            for ceiling in expected_ceilings {
                let d = b.next_delay(&mut rng);
                let ceiling = Duration::from_millis(ceiling);
                assert!(
                    d <= ceiling && d >= ceiling / 2,
                    "{d:?} outside [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
            }
        }
    }

    #[test]
    fn jitter_actually_varies() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|_| Backoff::default().next_delay(&mut rng))
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn reset_starts_over_and_many_attempts_do_not_overflow() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut b = Backoff::default();
        for _ in 0..100 {
            assert!(b.next_delay(&mut rng) <= MAX_BACKOFF);
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= MIN_BACKOFF);
    }

    #[test]
    fn extreme_bounds_are_handled() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(b.max, Duration::from_secs(5));
        let d = b.next_delay(&mut rng);
        assert!(d >= Duration::from_millis(2500) && d <= Duration::from_secs(5));
        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.next_delay(&mut rng), Duration::ZERO);
    }
}
