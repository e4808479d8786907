//! The pure decision of what happens to each datagram on an impaired path: dropped, delayed,
//! held back to be overtaken, sent twice. Driven by a seeded generator, so a seed replays the
//! same decisions.
//!
//! Jitter keeps datagrams in order, as the FIFO queues of a real WAN path do (a datagram never
//! leaves before the one sent ahead of it); reordering happens only where the `reorder` share
//! says so. Unlike netem's default, jitter alone does not reorder nearly every back-to-back pair,
//! which no real link does and which QUIC would read as massive loss.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::scenario::Impairment;

/// Extra hold of a reordered datagram, on top of its delay: long enough for the next few
/// datagrams of a busy path to overtake it, short enough to stay below QUIC's loss detection
/// (9/8 of the RTT plus timer granularity), so it is reordered rather than declared lost.
const REORDER_HOLD: Duration = Duration::from_millis(8);

/// What to do with one datagram.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// One entry per copy to send, each with its delay; empty = dropped.
    pub sends: Vec<Duration>,
    /// Whether it was held back to be reordered.
    pub reordered: bool,
}

impl Decision {
    /// Whether the datagram is dropped.
    pub fn dropped(&self) -> bool {
        self.sends.is_empty()
    }
}

/// The impairment of one direction of a path and its random stream.
#[derive(Debug)]
pub struct ImpairmentSchedule {
    impairment: Impairment,
    rng: StdRng,
}

impl ImpairmentSchedule {
    /// A schedule for `impairment`; `stream` separates the directions of one path (same seed,
    /// independent decisions).
    pub fn new(impairment: Impairment, stream: u64) -> Self {
        let seed = impairment.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            impairment,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The impairment applied.
    pub fn impairment(&self) -> Impairment {
        self.impairment
    }

    /// Whether datagrams pass untouched (forwarded at once, in order).
    pub fn is_clear(&self) -> bool {
        let i = &self.impairment;
        i.delay.is_zero()
            && i.jitter.is_zero()
            && i.loss == 0.0
            && i.reorder == 0.0
            && i.duplicate == 0.0
    }

    /// Decides the fate of the next datagram.
    pub fn decide(&mut self) -> Decision {
        let i = self.impairment;
        // Draw every number every time, so one decision does not shift the stream of the next.
        let lose = self.rng.random::<f64>() < i.loss;
        let reorder = self.rng.random::<f64>() < i.reorder;
        let duplicate = self.rng.random::<f64>() < i.duplicate;
        let jitter_a = self.rng.random::<f64>();
        let jitter_b = self.rng.random::<f64>();
        if lose {
            return Decision::default();
        }
        let delay = |u: f64| -> Duration {
            let j = i.jitter.as_secs_f64();
            let d = i.delay.as_secs_f64() + (u * 2.0 - 1.0) * j;
            Duration::from_secs_f64(d.max(0.0))
        };
        let mut first = delay(jitter_a);
        if reorder {
            first += REORDER_HOLD;
        }
        let mut sends = vec![first];
        if duplicate {
            sends.push(delay(jitter_b));
        }
        Decision {
            sends,
            reordered: reorder,
        }
    }
}

/// When each copy of a datagram decided at `now` leaves: delays are clamped so that in-order
/// copies never overtake the last one released (`last`, updated); a held-back copy may be
/// overtaken and does not hold the queue.
pub fn release_times(
    decision: &Decision,
    now: Instant,
    last: &mut Option<Instant>,
) -> Vec<Instant> {
    decision
        .sends
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let at = now + *d;
            if i == 0 && decision.reordered {
                return at;
            }
            let at = last.map_or(at, |l| at.max(l));
            *last = Some(at);
            at
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imp(loss: f64, reorder: f64, duplicate: f64) -> Impairment {
        Impairment {
            delay: Duration::from_millis(150),
            jitter: Duration::from_millis(20),
            loss,
            reorder,
            duplicate,
            seed: 42,
        }
    }

    fn run(s: &mut ImpairmentSchedule, n: usize) -> Vec<Decision> {
        (0..n).map(|_| s.decide()).collect()
    }

    #[test]
    fn the_same_seed_replays_the_same_decisions_and_directions_differ() {
        let a = run(&mut ImpairmentSchedule::new(imp(0.1, 0.1, 0.1), 0), 500);
        let b = run(&mut ImpairmentSchedule::new(imp(0.1, 0.1, 0.1), 0), 500);
        let c = run(&mut ImpairmentSchedule::new(imp(0.1, 0.1, 0.1), 1), 500);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn shares_and_delays_follow_the_impairment() {
        let n = 20_000;
        let d = run(&mut ImpairmentSchedule::new(imp(0.05, 0.02, 0.03), 7), n);
        let share = |k: usize| k as f64 / n as f64;
        let lost = d.iter().filter(|d| d.dropped()).count();
        let dup = d.iter().filter(|d| d.sends.len() == 2).count();
        let reord = d.iter().filter(|d| d.reordered).count();
        assert!((share(lost) - 0.05).abs() < 0.01, "loss {}", share(lost));
        assert!(
            (share(dup) - 0.03 * 0.95).abs() < 0.01,
            "dup {}",
            share(dup)
        );
        assert!(
            (share(reord) - 0.02 * 0.95).abs() < 0.01,
            "reorder {}",
            share(reord)
        );
        for x in d
            .iter()
            .filter(|d| !d.reordered)
            .flat_map(|d| d.sends.iter())
        {
            assert!(
                *x >= Duration::from_millis(130) && *x <= Duration::from_millis(170),
                "{x:?}"
            );
        }
        let held = d.iter().find(|d| d.reordered).unwrap();
        assert!(held.sends[0] >= Duration::from_millis(130) + REORDER_HOLD);
    }

    #[test]
    fn jitter_keeps_order_and_only_held_back_datagrams_are_overtaken() {
        let t0 = Instant::now();
        let mut last = None;
        let ms = Duration::from_millis;
        let d = |delay: u64, reordered: bool| Decision {
            sends: vec![ms(delay)],
            reordered,
        };
        // Sent 1 ms apart with delays 160, 140: the second waits for the first.
        assert_eq!(release_times(&d(160, false), t0, &mut last), [t0 + ms(160)]);
        assert_eq!(
            release_times(&d(140, false), t0 + ms(1), &mut last),
            [t0 + ms(160)]
        );
        // A held-back one leaves late without holding the queue.
        assert_eq!(
            release_times(&d(200, true), t0 + ms(2), &mut last),
            [t0 + ms(202)]
        );
        assert_eq!(
            release_times(&d(150, false), t0 + ms(3), &mut last),
            [t0 + ms(160)]
        );
        // Duplicates queue behind too.
        let dup = Decision {
            sends: vec![ms(100), ms(100)],
            reordered: false,
        };
        assert_eq!(
            release_times(&dup, t0 + ms(4), &mut last),
            [t0 + ms(160), t0 + ms(160)]
        );
    }

    #[test]
    fn a_clear_schedule_forwards_everything_at_once() {
        let mut s = ImpairmentSchedule::new(Impairment::default(), 0);
        assert!(s.is_clear());
        assert!(run(&mut s, 100).iter().all(|d| d.sends == [Duration::ZERO]));
    }
}
