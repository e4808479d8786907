//! The simple endpoint choosers a backend policy may select instead of P2C over peak EWMA
//! (`core::balance`): round robin and least request. Both choose among a locality's
//! candidates, given as a slice of [`CandidateState`], and answer an index into it (pure: the
//! state is passed in, randomness too). Which endpoints are usable (healthy, not ejected, not
//! tried by this request, under their limits) is decided before; the locality itself by
//! priority spill.

use rand::Rng;

/// What a chooser knows of one candidate endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CandidateState {
    /// Whether it may take this request.
    pub usable: bool,
    /// Requests this sidecar has in flight to it.
    pub in_flight: usize,
}

/// Each candidate in turn, skipping unusable ones: a counter over the list's positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundRobin {
    /// The position tried first by the next pick (taken modulo the list's length).
    next: usize,
}

impl RoundRobin {
    /// A round robin whose first pick tries `position` first.
    pub fn starting_at(position: usize) -> Self {
        Self { next: position }
    }

    /// A round robin starting at a random position, as Envoy's does: sidecars started together
    /// would otherwise all send their first requests to the first endpoint.
    pub fn random_start(rng: &mut impl Rng) -> Self {
        Self::starting_at(rng.random::<u32>() as usize)
    }

    /// The first usable candidate from the counter's position on, wrapping around; `None` when
    /// none is usable. The counter moves past the chosen one, not by one: an endpoint after an
    /// unusable one gets its own turn, not its neighbour's too.
    pub fn pick(&mut self, candidates: &[CandidateState]) -> Option<usize> {
        let len = candidates.len();
        if len == 0 {
            return None;
        }
        let start = self.next % len;
        let chosen = (0..len)
            .map(|offset| (start + offset) % len)
            .find(|i| candidates[*i].usable)?;
        self.next = chosen + 1;
        Some(chosen)
    }
}

/// Least request as Envoy's does it for equal weights: of two distinct usable candidates drawn
/// at random, the one with fewer requests in flight; a tie goes to the first drawn, so ties
/// split evenly. `None` when no candidate is usable; the only usable one when there is one.
///
/// Two random choices rather than a scan for the fewest: the result is nearly as well spread
/// (Mitzenmacher's power of two choices), and the busiest endpoint is still never chosen while
/// another is usable, but an endpoint that just came up with nothing in flight is not sent every
/// request until its count catches up with the others'.
pub fn least_request(candidates: &[CandidateState], rng: &mut impl Rng) -> Option<usize> {
    let usable = candidates.iter().filter(|c| c.usable).count();
    let nth_usable = |n: usize| {
        candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.usable)
            .nth(n)
            .map(|(i, _)| i)
    };
    match usable {
        0 => None,
        1 => nth_usable(0),
        n => {
            let first = rng.random_range(0..n);
            // Draw from the n-1 others so the two are always distinct.
            let mut second = rng.random_range(0..n - 1);
            if second >= first {
                second += 1;
            }
            let (first, second) = (nth_usable(first)?, nth_usable(second)?);
            let second_wins = candidates[second].in_flight < candidates[first].in_flight;
            Some(if second_wins { second } else { first })
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn usable(in_flight: usize) -> CandidateState {
        CandidateState {
            usable: true,
            in_flight,
        }
    }

    const UNUSABLE: CandidateState = CandidateState {
        usable: false,
        in_flight: 0,
    };

    #[test]
    fn round_robin_takes_each_usable_candidate_in_turn() {
        let mut rr = RoundRobin::starting_at(0);
        let all = [usable(0); 3];
        let picks: Vec<_> = (0..6).map(|_| rr.pick(&all).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn round_robin_skips_unusable_candidates_without_doubling_a_turn() {
        let mut rr = RoundRobin::starting_at(0);
        let some = [usable(0), UNUSABLE, usable(0), usable(0)];
        let picks: Vec<_> = (0..6).map(|_| rr.pick(&some).unwrap()).collect();
        assert_eq!(picks, [0, 2, 3, 0, 2, 3]);
        assert_eq!(rr.pick(&[UNUSABLE, UNUSABLE]), None);
        assert_eq!(rr.pick(&[]), None);
    }

    #[test]
    fn round_robin_follows_a_list_that_shrinks() {
        let mut rr = RoundRobin::starting_at(7);
        assert_eq!(rr.pick(&[usable(0); 4]), Some(3));
        assert_eq!(
            rr.pick(&[usable(0); 2]),
            Some(0),
            "position 4 wraps to 0 of 2"
        );
        assert_eq!(rr.pick(&[usable(0); 2]), Some(1));
    }

    #[test]
    fn round_robin_random_start_is_spread() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut firsts = [0usize; 4];
        for _ in 0..400 {
            firsts[RoundRobin::random_start(&mut rng)
                .pick(&[usable(0); 4])
                .unwrap()] += 1;
        }
        assert!(firsts.iter().all(|n| (60..=140).contains(n)), "{firsts:?}");
    }

    #[test]
    fn least_request_handles_small_inputs() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(least_request(&[], &mut rng), None);
        assert_eq!(least_request(&[UNUSABLE, UNUSABLE], &mut rng), None);
        assert_eq!(least_request(&[UNUSABLE, usable(9)], &mut rng), Some(1));
        for _ in 0..100 {
            assert_eq!(least_request(&[usable(5), usable(2)], &mut rng), Some(1));
        }
    }

    #[test]
    fn least_request_never_picks_the_busiest_nor_an_unusable_one() {
        let mut rng = StdRng::seed_from_u64(42);
        let candidates = [usable(0), usable(3), UNUSABLE, usable(6), usable(9)];
        let mut counts = [0usize; 5];
        for _ in 0..4000 {
            counts[least_request(&candidates, &mut rng).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0, "unusable");
        assert_eq!(counts[4], 0, "the busiest loses every pair it is in");
        // The idlest wins every pair it is in: 3 of the 6 pairs.
        assert!((1800..=2200).contains(&counts[0]), "{counts:?}");
        assert!(counts[0] > counts[1] && counts[1] > counts[3], "{counts:?}");
    }

    #[test]
    fn least_request_splits_ties_evenly() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[least_request(&[usable(1); 3], &mut rng).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|n| (850..=1150).contains(n)),
            "{counts:?}"
        );
    }
}
