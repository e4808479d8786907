//! The per-caller buckets of one limiter, bounded in number.
//!
//! Only buckets with debt are kept: a full bucket says nothing a missing one does not, so
//! every write first drops the buckets that have refilled (their TAT has passed). The map
//! therefore holds the callers active within one bucket's refill time, not every caller ever
//! seen. When it still reaches its cap, the bucket closest to full (the smallest TAT) goes:
//! that forgives the least debt of any choice, and the total limit keeps bounding everyone.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// Most callers tracked at once by default. 10,000: far more than the distinct identities
/// calling one workload in a refill window, and at most a few MB even with long SPIFFE IDs.
pub const DEFAULT_MAX_CALLERS: usize = 10_000;

/// TATs of the callers that have debt, indexed by caller and by TAT.
#[derive(Debug)]
pub(crate) struct CallerBuckets {
    max: usize,
    tats: HashMap<Arc<str>, Instant>,
    /// The same entries ordered by TAT, so the full ones and the one closest to full are first.
    by_tat: BTreeSet<(Instant, Arc<str>)>,
}

impl CallerBuckets {
    /// An empty set tracking at most `max` callers (at least 1).
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            tats: HashMap::new(),
            by_tat: BTreeSet::new(),
        }
    }

    /// The caller's TAT, `None` when it has no bucket (full).
    pub(crate) fn tat(&self, caller: &str) -> Option<Instant> {
        self.tats.get(caller).copied()
    }

    /// Records the caller's new TAT after a request was let through at `now`.
    pub(crate) fn set(&mut self, caller: &str, tat: Instant, now: Instant) {
        if let Some((key, old)) = self.tats.get_key_value(caller) {
            let key = Arc::clone(key);
            self.by_tat.remove(&(*old, Arc::clone(&key)));
            self.by_tat.insert((tat, Arc::clone(&key)));
            self.tats.insert(key, tat);
            self.drop_full(now);
            return;
        }
        self.drop_full(now);
        if self.tats.len() >= self.max {
            // Evict before inserting, so a newcomer is never the one evicted: evicting it would
            // forgive its debt on every request and leave it unlimited.
            if let Some((_, evicted)) = self.by_tat.pop_first() {
                self.tats.remove(&evicted);
            }
        }
        let key: Arc<str> = Arc::from(caller);
        self.by_tat.insert((tat, Arc::clone(&key)));
        self.tats.insert(key, tat);
    }

    /// Callers with a bucket.
    pub(crate) fn len(&self) -> usize {
        self.tats.len()
    }

    /// Drops the buckets that are full at `now`.
    fn drop_full(&mut self, now: Instant) {
        while let Some((tat, _)) = self.by_tat.first()
            && *tat <= now
        {
            if let Some((_, caller)) = self.by_tat.pop_first() {
                self.tats.remove(&caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn refilled_buckets_are_dropped_on_the_next_write() {
        let now = Instant::now();
        let mut b = CallerBuckets::new(10);
        b.set("a", now + Duration::from_secs(1), now);
        b.set("b", now + Duration::from_secs(3), now);
        assert_eq!(b.len(), 2);
        let later = now + Duration::from_secs(2);
        b.set("c", later + Duration::from_secs(1), later);
        assert_eq!(b.tat("a"), None, "a's bucket was full again");
        assert_eq!(b.tat("b"), Some(now + Duration::from_secs(3)));
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn at_the_cap_the_bucket_closest_to_full_goes_never_the_newcomer() {
        let now = Instant::now();
        let s = Duration::from_secs;
        let mut b = CallerBuckets::new(3);
        b.set("deep", now + s(30), now);
        b.set("shallow", now + s(5), now);
        b.set("middle", now + s(10), now);
        b.set("new", now + s(1), now);
        assert_eq!(b.len(), 3);
        assert_eq!(b.tat("shallow"), None, "the least debt is forgiven");
        assert_eq!(b.tat("new"), Some(now + s(1)));
        assert_eq!(b.tat("deep"), Some(now + s(30)));
        // Updating a tracked caller evicts nobody and moves it in the order.
        b.set("new", now + s(40), now);
        assert_eq!(b.len(), 3);
        b.set("other", now + s(2), now);
        assert_eq!(b.tat("middle"), None);
        assert_eq!(b.tat("new"), Some(now + s(40)));
    }
}
