//! Consistent hashing for session affinity (`loadBalancer: consistentHash`): a hash ring with
//! virtual nodes that maps a request's key hash to an endpoint, the same endpoint in every
//! sidecar, moving as few keys as possible when endpoints come and go (pure: no I/O, no
//! clock, no randomness). `key.rs` turns a request into the key hash.
//!
//! - **Why a ring, not Maglev.** Maglev's lookup table spreads keys more evenly and looks up in
//!   O(1), but filling the table anew after a change also moves a few keys between endpoints
//!   that stayed. On a ring, removing an endpoint moves exactly the keys that were on it, and
//!   adding one moves only the keys it takes over: that is the property users rely on (a
//!   session moves only when its own endpoint goes). The ring also has a natural next
//!   candidate for an unusable endpoint: the next point clockwise. Skipping an ejected
//!   endpoint that way sends its keys where removing it would, spread over all the others, and
//!   brings them back when it returns. Lookups are a binary search over
//!   [`POINTS_PER_ENDPOINT`] x endpoints points: about 11 steps for 8 endpoints.
//! - **Stable in every sidecar.** Points come from [`stable_hash`] of the endpoint's name (never
//!   from std's per-process `RandomState`), and ties between points are broken by name, so the
//!   ring does not depend on the order the endpoints are listed in. Names must be stable and
//!   the same in every sidecar: `<cluster>/<address>` of the endpoint is a good one.
//! - **Weights are ignored**: every endpoint gets the same number of points, as the routes the
//!   controller publishes carry no endpoint weights. Weights would be a number of points
//!   proportional to each, should routes ever carry them.
//! - Build a ring when a locality's endpoint set changes, not per request: building hashes and
//!   sorts every point.

mod key;

pub use key::{hash_key, stable_hash};

/// Points each endpoint has on the ring. 256: an endpoint's share of the keys then strays from
/// the fair share by about 1/sqrt(256) = 6% (one standard deviation), at 16 bytes per point
/// (4 KiB per endpoint). The count is fixed per endpoint, unlike Envoy's ring of a minimum
/// total size (1,024 points) divided among the hosts: a count that depends on how many
/// endpoints there are would move keys between endpoints that stayed whenever one comes or
/// goes.
pub const POINTS_PER_ENDPOINT: u64 = 256;

/// A hash ring over a list of endpoints, answering indexes into that list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashRing {
    /// (position, endpoint index), sorted by position, then endpoint name.
    points: Vec<(u64, u32)>,
    /// Distinct endpoints on the ring (an endpoint named twice is there once).
    endpoints: usize,
    /// Length of the list the ring was built from: indexes are below it.
    listed: usize,
}

impl HashRing {
    /// The ring of `endpoints`, identified by their stable names. An endpoint listed twice
    /// under one name is on the ring once, at its first index.
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> HashRing {
        let mut points: Vec<(u64, &str, u32)> =
            Vec::with_capacity(endpoints.len() * POINTS_PER_ENDPOINT as usize);
        for (index, name) in endpoints.iter().enumerate() {
            let name = name.as_ref();
            // Ring sizes beyond u32 endpoints are out of reach of any service; stop there.
            let Ok(index) = u32::try_from(index) else {
                break;
            };
            let seed = stable_hash(name.as_bytes());
            points.extend(
                (1..=POINTS_PER_ENDPOINT).map(|replica| (point(seed, replica), name, index)),
            );
        }
        points.sort_unstable();
        // A name listed again has the same points: keep those of its first index.
        points.dedup_by(|later, first| later.0 == first.0 && later.1 == first.1);
        let mut seen = vec![false; endpoints.len()];
        for (_, _, index) in &points {
            seen[*index as usize] = true;
        }
        HashRing {
            endpoints: seen.iter().filter(|s| **s).count(),
            listed: endpoints.len(),
            points: points
                .into_iter()
                .map(|(position, _, index)| (position, index))
                .collect(),
        }
    }

    /// Distinct endpoints on the ring.
    pub fn len(&self) -> usize {
        self.endpoints
    }

    /// Whether the ring has no endpoint.
    pub fn is_empty(&self) -> bool {
        self.endpoints == 0
    }

    /// The endpoint owning `key_hash`: the first point at or after it, clockwise; `None` for an
    /// empty ring.
    pub fn pick(&self, key_hash: u64) -> Option<usize> {
        self.pick_where(key_hash, |_| true)
    }

    /// The first endpoint clockwise from `key_hash` that `usable` accepts (e.g. not ejected,
    /// healthy, not tried by this request); `None` when it accepts none. Skipping an endpoint
    /// sends its keys exactly where removing it from the ring would, and every other key stays.
    /// `usable` is asked at most once per endpoint.
    pub fn pick_where(
        &self,
        key_hash: u64,
        mut usable: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let start = self
            .points
            .partition_point(|(position, _)| *position < key_hash);
        let (after, before) = (&self.points[start..], &self.points[..start]);
        // Only allocated once an endpoint is refused: the common case is one lookup.
        let mut refused: Option<Vec<bool>> = None;
        let mut refused_count = 0;
        for (_, index) in after.iter().chain(before) {
            let index = *index as usize;
            if refused.as_ref().is_some_and(|r| r[index]) {
                continue;
            }
            if usable(index) {
                return Some(index);
            }
            let refused = refused.get_or_insert_with(|| vec![false; self.listed]);
            refused[index] = true;
            refused_count += 1;
            if refused_count == self.endpoints {
                return None;
            }
        }
        None
    }
}

/// Position of an endpoint's `replica`-th point: the splitmix64 sequence seeded by its name's
/// hash, so an endpoint's points are spread evenly and independently of every other's.
fn point(seed: u64, replica: u64) -> u64 {
    key::mix(seed.wrapping_add(replica.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

#[cfg(test)]
mod tests;
