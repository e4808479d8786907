//! Priority spill and gradual failback. Localities are priority levels: a partly healthy level
//! keeps `min(1, health x overprovisioning)` of the traffic and spills the rest to the next
//! level (Envoy's priority load), so there is no all-or-nothing cliff. When a level recovers,
//! `SlowStart` ramps its health up over a window so traffic fails back gradually instead of
//! stampeding home. It owns the split between levels; the order of levels comes from the
//! controller (`locality`) and the choice of endpoint inside a level from `balance`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Default overprovisioning factor: 1.4, so a level keeps all its traffic while at least
/// 1/1.4 (about 71%) of its endpoints are healthy, the headroom a locality is sized with.
pub const DEFAULT_OVERPROVISIONING: f64 = 1.4;

/// Default slow-start window: 10 s, long enough for connection pools and caches of a recovered
/// locality to warm up, short enough that traffic is home within seconds.
pub const DEFAULT_SLOW_START_WINDOW: Duration = Duration::from_secs(10);

/// Share of its health a recovering level starts with: 10%, enough traffic to prove itself (and
/// be caught again by outlier detection and the breaker) without a stampede.
const SLOW_START_FLOOR: f64 = 0.1;

/// Share of the traffic each level gets, given each level's health in [0, 1]. Shares sum to 1,
/// or are all 0 when no level has any health (the caller then answers 503).
pub fn priority_loads(healths: &[f64], overprovisioning: f64) -> Vec<f64> {
    // `f64::max` maps NaN to the other operand, so a NaN factor counts as 0.
    let overprovisioning = overprovisioning.max(0.0);
    let capacities: Vec<f64> = healths
        .iter()
        .map(|health| (unit_interval(*health) * overprovisioning).min(1.0))
        .collect();
    let total: f64 = capacities.iter().sum();
    if total <= 0.0 {
        return vec![0.0; healths.len()];
    }
    if total < 1.0 {
        // Degraded: all levels together cannot take everything; split in proportion.
        return capacities.iter().map(|capacity| capacity / total).collect();
    }
    let mut remaining = 1.0;
    capacities
        .iter()
        .map(|capacity| {
            let share = capacity.min(remaining);
            remaining -= share;
            share
        })
        .collect()
}

/// `value` clamped to [0, 1], with NaN read as 0.
fn unit_interval(value: f64) -> f64 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(0.0, 1.0)
    }
}

/// The level a request goes to, given the loads and a uniform `random` in [0, 1); `None` when
/// every load is 0.
pub fn pick_level(loads: &[f64], random: f64) -> Option<usize> {
    let mut cumulative = 0.0;
    let mut last_loaded = None;
    for (level, load) in loads.iter().enumerate() {
        if *load > 0.0 {
            cumulative += load;
            last_loaded = Some(level);
            if random < cumulative {
                return Some(level);
            }
        }
    }
    // Rounding can leave the sum a hair below `random`: the last loaded level takes it.
    last_loaded
}

/// How a level stands in the failback ramp.
#[derive(Debug, Clone, Copy)]
enum Ramp {
    /// Health 0: nothing to ramp yet.
    Down,
    /// Recovering since this instant.
    Since(Instant),
    /// At full raw health.
    Done,
}

/// Ramps the health of recovering levels up over a window, per level name.
#[derive(Debug, Clone)]
pub struct SlowStart {
    window: Duration,
    /// The `now` of the first evaluation: levels first seen then are not ramped.
    started_at: Option<Instant>,
    levels: HashMap<String, Ramp>,
}

impl SlowStart {
    /// Creates a ramp of length `window` with no levels known.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            started_at: None,
            levels: HashMap::new(),
        }
    }

    /// The health to use for `level`: `raw_health`, scaled from 10% up to 100% of it over the
    /// window after the level comes back from health 0 or from being absent. Levels present
    /// and healthy at the first evaluation (the first `now` passed in) are not ramped.
    pub fn effective_health(&mut self, level: &str, raw_health: f64, now: Instant) -> f64 {
        let started_at = *self.started_at.get_or_insert(now);
        if raw_health.is_nan() || raw_health <= 0.0 {
            self.levels.insert(level.to_owned(), Ramp::Down);
            return 0.0;
        }
        let ramp = match self.levels.get(level) {
            None if now == started_at => Ramp::Done,
            None | Some(Ramp::Down) => Ramp::Since(now),
            Some(ramp) => *ramp,
        };
        let (ramp, factor) = match ramp {
            Ramp::Since(since) => {
                let elapsed = now.saturating_duration_since(since);
                if elapsed >= self.window {
                    (Ramp::Done, 1.0)
                } else {
                    let progress = elapsed.as_secs_f64() / self.window.as_secs_f64();
                    (ramp, SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * progress)
                }
            }
            // `Down` was turned into `Since` above.
            Ramp::Down | Ramp::Done => (Ramp::Done, 1.0),
        };
        self.levels.insert(level.to_owned(), ramp);
        raw_health * factor
    }

    /// Forgets levels not in `levels`, so one that reappears later ramps up again.
    pub fn retain(&mut self, levels: &[&str]) {
        self.levels
            .retain(|name, _| levels.contains(&name.as_str()));
    }
}

impl Default for SlowStart {
    fn default() -> Self {
        Self::new(DEFAULT_SLOW_START_WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_loads(actual: &[f64], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len(), "{actual:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() < 1e-9, "{actual:?} != {expected:?}");
        }
    }

    #[test]
    fn a_healthy_first_level_takes_everything() {
        assert_loads(
            &priority_loads(&[1.0, 1.0], DEFAULT_OVERPROVISIONING),
            &[1.0, 0.0],
        );
        // 75% healthy is above 1/1.4: still everything.
        assert_loads(
            &priority_loads(&[0.75, 1.0], DEFAULT_OVERPROVISIONING),
            &[1.0, 0.0],
        );
    }

    #[test]
    fn a_partly_healthy_level_spills_the_rest_down() {
        assert_loads(
            &priority_loads(&[0.5, 1.0, 1.0], DEFAULT_OVERPROVISIONING),
            &[0.7, 0.3, 0.0],
        );
        assert_loads(
            &priority_loads(&[0.5, 0.1, 1.0], DEFAULT_OVERPROVISIONING),
            &[0.7, 0.14, 0.16],
        );
        assert_loads(
            &priority_loads(&[0.0, 1.0], DEFAULT_OVERPROVISIONING),
            &[0.0, 1.0],
        );
    }

    #[test]
    fn degraded_levels_are_normalised() {
        // Capacities 0.28 and 0.14 sum to 0.42: scaled up to 2/3 and 1/3.
        assert_loads(
            &priority_loads(&[0.2, 0.0, 0.1], DEFAULT_OVERPROVISIONING),
            &[2.0 / 3.0, 0.0, 1.0 / 3.0],
        );
    }

    #[test]
    fn no_health_anywhere_gives_no_load() {
        assert_loads(
            &priority_loads(&[0.0, 0.0], DEFAULT_OVERPROVISIONING),
            &[0.0, 0.0],
        );
        assert_loads(
            &priority_loads(&[f64::NAN], DEFAULT_OVERPROVISIONING),
            &[0.0],
        );
        assert!(priority_loads(&[], DEFAULT_OVERPROVISIONING).is_empty());
    }

    #[test]
    fn pick_level_follows_the_cumulative_loads() {
        let loads = [0.7, 0.0, 0.3];
        assert_eq!(pick_level(&loads, 0.0), Some(0));
        assert_eq!(pick_level(&loads, 0.69), Some(0));
        assert_eq!(pick_level(&loads, 0.7), Some(2));
        assert_eq!(pick_level(&loads, 0.999_999), Some(2));
        assert_eq!(
            pick_level(&[0.5, 0.499_999], 0.9999999),
            Some(1),
            "rounding goes to the last"
        );
        assert_eq!(pick_level(&[0.0, 0.0], 0.5), None);
    }

    #[test]
    fn levels_healthy_at_start_are_not_ramped() {
        let start = Instant::now();
        let mut slow_start = SlowStart::default();
        assert_eq!(slow_start.effective_health("local", 1.0, start), 1.0);
        assert_eq!(slow_start.effective_health("remote", 0.8, start), 0.8);
    }

    #[test]
    fn a_recovering_level_ramps_linearly_over_the_window() {
        let start = Instant::now();
        let mut slow_start = SlowStart::new(Duration::from_secs(10));
        assert_eq!(slow_start.effective_health("local", 0.0, start), 0.0);
        let back = start + Duration::from_secs(1);
        assert!((slow_start.effective_health("local", 1.0, back) - 0.1).abs() < 1e-9);
        let half = back + Duration::from_secs(5);
        assert!((slow_start.effective_health("local", 0.8, half) - 0.8 * 0.55).abs() < 1e-9);
        let done = back + Duration::from_secs(10);
        assert_eq!(slow_start.effective_health("local", 0.8, done), 0.8);
        assert_eq!(
            slow_start.effective_health("local", 0.8, done + Duration::from_secs(1)),
            0.8
        );
    }

    #[test]
    fn a_relapse_restarts_the_ramp() {
        let start = Instant::now();
        let mut slow_start = SlowStart::new(Duration::from_secs(10));
        slow_start.effective_health("local", 1.0, start);
        let down = start + Duration::from_secs(1);
        assert_eq!(slow_start.effective_health("local", 0.0, down), 0.0);
        let back = down + Duration::from_secs(1);
        assert!((slow_start.effective_health("local", 1.0, back) - 0.1).abs() < 1e-9);
    }

    #[test]
    fn a_level_that_appears_later_ramps() {
        let start = Instant::now();
        let mut slow_start = SlowStart::new(Duration::from_secs(10));
        slow_start.effective_health("local", 1.0, start);
        slow_start.effective_health("east", 1.0, start);
        let later = start + Duration::from_secs(3);
        assert!((slow_start.effective_health("west", 1.0, later) - 0.1).abs() < 1e-9);
        // "east" disappears from the order, then comes back: it ramps too.
        slow_start.retain(&["local", "west"]);
        assert!((slow_start.effective_health("east", 1.0, later) - 0.1).abs() < 1e-9);
        assert_eq!(slow_start.effective_health("local", 1.0, later), 1.0);
    }
}
