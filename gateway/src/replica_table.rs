//! The controller replicas the gateway knows and what it knows of each, as pure logic: the
//! clock and the outcomes of calls are passed in, so it is tested without sockets or sleeps.
//! [`crate::controller_set`] drives it.
//!
//! - **The set** is what `--controller` resolved to last. It is resolved again every
//!   [`RESOLVE_INTERVAL`], so replicas that come and go are followed; a resolution that fails or
//!   finds nothing keeps the set as it is (replicas that vanished are merely unreachable, and a
//!   DNS hiccup must not make the gateway forget every controller) and is retried after
//!   [`RESOLVE_RETRY`].
//! - **Contact** with each replica is judged by the calls made to it: one that answered (any
//!   status) is reachable, one that could not be connected to or timed out is unreachable.
//! - **Catching up**: a replica that missed something must be brought up to date. That is one
//!   seen for the first time, one that was unreachable, and one reached over a new connection
//!   (it may have restarted in between, losing every peer's catalog). [`ReplicaTable::record`]
//!   says when a call reached such a replica; the gateway then has every peer send a fresh
//!   snapshot of its catalog (see [`crate::controller_set`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

/// How often `--controller` is resolved again.
pub(crate) const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
/// How soon a resolution that failed or found nothing is tried again.
pub(crate) const RESOLVE_RETRY: Duration = Duration::from_secs(1);

/// What the gateway knows of its contact with a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contact {
    /// Not called yet since it appeared.
    New,
    /// The last call reached it.
    Reachable,
    /// The last call could not reach it.
    Unreachable,
}

/// How a call to a replica went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It answered (whatever the status).
    Reached {
        /// The client's connection count after the call ([`mesh_core::control_client::ControlClient::connections`]).
        connections: u64,
    },
    /// It could not be connected to, or did not answer in time.
    Unreached,
}

#[derive(Debug, Clone)]
struct Replica<C> {
    client: C,
    contact: Contact,
    /// Connections of the client when it was last reached.
    connections: u64,
}

/// What a resolution changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SetChange {
    /// Replicas that appeared.
    pub added: Vec<SocketAddr>,
    /// Replicas that are gone from the name.
    pub removed: Vec<SocketAddr>,
}

impl SetChange {
    /// Whether the set changed.
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// The replicas, each with its client `C` (a `ControlClient` in the gateway, `()` in tests).
#[derive(Debug)]
pub(crate) struct ReplicaTable<C> {
    replicas: BTreeMap<SocketAddr, Replica<C>>,
    next_resolve: Instant,
}

impl<C: Clone> ReplicaTable<C> {
    /// An empty table, due for resolution at once.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            replicas: BTreeMap::new(),
            next_resolve: now,
        }
    }

    /// When the name should be resolved next.
    pub(crate) fn next_resolve(&self) -> Instant {
        self.next_resolve
    }

    /// Takes the result of a resolution made at `now`: new addresses join (`client` makes their
    /// client), addresses the name no longer has leave. A failed or empty resolution changes
    /// nothing and is retried sooner.
    pub(crate) fn resolved(
        &mut self,
        result: Result<Vec<SocketAddr>, String>,
        now: Instant,
        mut client: impl FnMut(SocketAddr) -> C,
    ) -> SetChange {
        let addrs = match result {
            Ok(addrs) if !addrs.is_empty() => addrs,
            Ok(_) | Err(_) => {
                self.next_resolve = now + RESOLVE_RETRY;
                return SetChange::default();
            }
        };
        self.next_resolve = now + RESOLVE_INTERVAL;
        let mut change = SetChange::default();
        self.replicas.retain(|addr, _| {
            let keep = addrs.contains(addr);
            if !keep {
                change.removed.push(*addr);
            }
            keep
        });
        for addr in addrs {
            if self.replicas.contains_key(&addr) {
                continue;
            }
            self.replicas.insert(
                addr,
                Replica {
                    client: client(addr),
                    contact: Contact::New,
                    connections: 0,
                },
            );
            change.added.push(addr);
        }
        change.added.sort_unstable();
        change
    }

    /// Records how a call to `addr` went; true when it reached a replica that must catch up
    /// (new, back from unreachable, or reached over a new connection).
    pub(crate) fn record(&mut self, addr: SocketAddr, outcome: Outcome) -> bool {
        let Some(replica) = self.replicas.get_mut(&addr) else {
            return false;
        };
        match outcome {
            Outcome::Unreached => {
                replica.contact = Contact::Unreachable;
                false
            }
            Outcome::Reached { connections } => {
                let caught_up =
                    replica.contact == Contact::Reachable && replica.connections == connections;
                replica.contact = Contact::Reachable;
                replica.connections = connections;
                !caught_up
            }
        }
    }

    /// Every replica with its client.
    pub(crate) fn all(&self) -> Vec<(SocketAddr, C)> {
        self.replicas
            .iter()
            .map(|(addr, r)| (*addr, r.client.clone()))
            .collect()
    }

    /// Where a message goes: every replica not known to be unreachable (those are skipped so
    /// that one dead replica does not hold up every delivery with a connect timeout; they catch
    /// up when they come back), or every replica when none is known to be reachable.
    pub(crate) fn delivery_targets(&self) -> Vec<(SocketAddr, C)> {
        let live: Vec<_> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.contact != Contact::Unreachable)
            .map(|(addr, r)| (*addr, r.client.clone()))
            .collect();
        if live.is_empty() { self.all() } else { live }
    }

    /// The replica to follow the snapshot stream of next, after the one that was followed
    /// (`after`): the next one in address order that is not known to be unreachable, wrapping
    /// around, else simply the next one.
    pub(crate) fn stream_candidate(&self, after: Option<SocketAddr>) -> Option<(SocketAddr, C)> {
        let ordered: Vec<(&SocketAddr, &Replica<C>)> = match after {
            Some(a) => self
                .replicas
                .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
                .chain(self.replicas.range(..=a))
                .collect(),
            None => self.replicas.iter().collect(),
        };
        ordered
            .iter()
            .find(|(_, r)| r.contact != Contact::Unreachable)
            .or_else(|| ordered.first())
            .map(|(addr, r)| (**addr, r.client.clone()))
    }

    /// Replicas known, and of those the ones whose last call reached them.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let reachable = self
            .replicas
            .values()
            .filter(|r| r.contact == Contact::Reachable)
            .count();
        (self.replicas.len(), reachable)
    }

    /// The contact with `addr`, when it is in the set.
    #[cfg(test)]
    fn contact(&self, addr: SocketAddr) -> Option<Contact> {
        self.replicas.get(&addr).map(|r| r.contact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 15012))
    }

    fn resolved(t: &mut ReplicaTable<()>, addrs: &[SocketAddr], now: Instant) -> SetChange {
        t.resolved(Ok(addrs.to_vec()), now, |_| ())
    }

    const REACHED: Outcome = Outcome::Reached { connections: 1 };

    #[test]
    fn the_set_follows_resolutions_on_the_interval_and_survives_failed_ones() {
        let t0 = Instant::now();
        let mut t = ReplicaTable::new(t0);
        assert_eq!(t.next_resolve(), t0, "due at once");
        let change = resolved(&mut t, &[a(2), a(1)], t0);
        assert_eq!(change.added, vec![a(1), a(2)]);
        assert!(change.removed.is_empty());
        assert_eq!(t.next_resolve(), t0 + RESOLVE_INTERVAL);
        assert_eq!(t.counts(), (2, 0), "known, none reached yet");

        // A replica replaced by another (a pod rescheduled): one leaves, one joins.
        let t1 = t0 + RESOLVE_INTERVAL;
        let change = resolved(&mut t, &[a(1), a(3)], t1);
        assert_eq!((change.added, change.removed), (vec![a(3)], vec![a(2)]));
        assert_eq!(t.contact(a(3)), Some(Contact::New));
        assert_eq!(t.contact(a(2)), None);

        // The same answer again changes nothing.
        assert!(resolved(&mut t, &[a(3), a(1)], t1).is_empty());

        // DNS failing or answering nothing keeps the set and retries sooner.
        let t2 = t1 + RESOLVE_INTERVAL;
        assert!(t.resolved(Err("timed out".into()), t2, |_| ()).is_empty());
        assert_eq!(t.next_resolve(), t2 + RESOLVE_RETRY);
        assert!(resolved(&mut t, &[], t2).is_empty());
        assert_eq!(t.next_resolve(), t2 + RESOLVE_RETRY);
        assert_eq!(t.counts().0, 2);
    }

    #[test]
    fn a_replica_must_catch_up_when_new_back_or_reconnected_and_only_then() {
        let mut t = ReplicaTable::new(Instant::now());
        resolved(&mut t, &[a(1)], Instant::now());
        assert!(t.record(a(1), REACHED), "first contact: it has nothing yet");
        assert!(!t.record(a(1), REACHED), "same connection: up to date");
        assert_eq!(t.counts(), (1, 1));

        assert!(!t.record(a(1), Outcome::Unreached));
        assert!(!t.record(a(1), Outcome::Unreached));
        assert_eq!(t.counts(), (1, 0));
        assert!(
            t.record(a(1), Outcome::Reached { connections: 2 }),
            "back after missing calls"
        );
        assert!(!t.record(a(1), Outcome::Reached { connections: 2 }));

        // A restart between two calls shows only as a new connection.
        assert!(t.record(a(1), Outcome::Reached { connections: 3 }));
        assert!(!t.record(a(1), Outcome::Reached { connections: 3 }));

        // Outcomes of replicas that left the set are ignored.
        assert!(!t.record(a(9), REACHED));
    }

    #[test]
    fn a_replica_that_leaves_and_returns_starts_over() {
        let t0 = Instant::now();
        let mut t = ReplicaTable::new(t0);
        resolved(&mut t, &[a(1), a(2)], t0);
        t.record(a(1), REACHED);
        t.record(a(2), REACHED);
        resolved(&mut t, &[a(1)], t0 + RESOLVE_INTERVAL);
        let change = resolved(&mut t, &[a(1), a(2)], t0 + 2 * RESOLVE_INTERVAL);
        assert_eq!(change.added, vec![a(2)]);
        assert_eq!(t.contact(a(2)), Some(Contact::New));
        assert!(
            t.record(a(2), REACHED),
            "same connection count, but a new replica"
        );
    }

    #[test]
    fn deliveries_skip_unreachable_replicas_unless_none_is_reachable() {
        let mut t = ReplicaTable::new(Instant::now());
        resolved(&mut t, &[a(1), a(2), a(3)], Instant::now());
        let targets = |t: &ReplicaTable<()>| -> Vec<SocketAddr> {
            t.delivery_targets().into_iter().map(|(a, _)| a).collect()
        };
        assert_eq!(targets(&t), vec![a(1), a(2), a(3)], "new ones are tried");
        t.record(a(1), REACHED);
        t.record(a(2), Outcome::Unreached);
        assert_eq!(targets(&t), vec![a(1), a(3)]);
        t.record(a(1), Outcome::Unreached);
        t.record(a(3), Outcome::Unreached);
        assert_eq!(
            targets(&t),
            vec![a(1), a(2), a(3)],
            "all unreachable: try them all"
        );
        assert_eq!(t.counts(), (3, 0));
    }

    #[test]
    fn the_stream_moves_to_the_next_live_replica_and_wraps_around() {
        let mut t = ReplicaTable::new(Instant::now());
        assert_eq!(t.stream_candidate(None), None, "nothing known");
        resolved(&mut t, &[a(1), a(2), a(3)], Instant::now());
        let next = |t: &ReplicaTable<()>, after| t.stream_candidate(after).map(|(a, _)| a);
        assert_eq!(next(&t, None), Some(a(1)));
        assert_eq!(next(&t, Some(a(1))), Some(a(2)));
        assert_eq!(next(&t, Some(a(3))), Some(a(1)), "wraps around");
        t.record(a(2), Outcome::Unreached);
        assert_eq!(next(&t, Some(a(1))), Some(a(3)), "skips the unreachable");
        t.record(a(3), Outcome::Unreached);
        t.record(a(1), REACHED);
        assert_eq!(
            next(&t, Some(a(1))),
            Some(a(1)),
            "the one it followed is the only live one"
        );
        t.record(a(1), Outcome::Unreached);
        assert_eq!(
            next(&t, Some(a(1))),
            Some(a(2)),
            "none live: still the next one"
        );
        // The one followed before may have left the set.
        resolved(&mut t, &[a(3)], Instant::now() + RESOLVE_INTERVAL);
        assert_eq!(next(&t, Some(a(1))), Some(a(3)));
    }
}
