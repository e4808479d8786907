//! Per-client rate limit (pure, clock injected): a token bucket per source IP address.
//!
//! The table of buckets is bounded: when it is full, buckets that have refilled completely
//! (clients idle for a whole burst) are forgotten first; if none has, the table is cleared, so
//! a flood of spoofed sources costs memory only up to the bound and never locks out a client
//! for longer than one refill.

use std::net::IpAddr;
use std::time::Instant;

use crate::caller_rate::CallerRate;

/// Token buckets by client address: the generic per-key bucket ([`CallerRate`]) keyed by the
/// source address, answering only yes or no (a refused query is dropped, no wait is said).
#[derive(Debug)]
pub(crate) struct ClientRateLimit(CallerRate<IpAddr>);

impl ClientRateLimit {
    /// `per_second` queries per client on average, up to `burst` at once; at most
    /// `max_clients` buckets are kept. A zero rate disables the limit.
    pub(crate) fn new(per_second: u32, burst: u32, max_clients: usize) -> Self {
        Self(CallerRate::new(per_second, burst, max_clients))
    }

    /// Whether a query from `client` at `now` may be answered (takes a token when it may).
    pub(crate) fn allow(&mut self, client: IpAddr, now: Instant) -> bool {
        self.0.check(client, now).is_ok()
    }

    /// How many clients have a bucket.
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.0.callers()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut limit = ClientRateLimit::new(10, 3, 100);
        assert!((0..3).all(|_| limit.allow(ip(1), t0)));
        assert!(!limit.allow(ip(1), t0), "burst spent");
        assert!(limit.allow(ip(2), t0), "another client has its own bucket");
        assert!(!limit.allow(ip(1), t0 + Duration::from_millis(50)));
        assert!(
            limit.allow(ip(1), t0 + Duration::from_millis(160)),
            "one token after 100 ms"
        );
        assert!(!limit.allow(ip(1), t0 + Duration::from_millis(170)));
        let later = t0 + Duration::from_secs(60);
        assert!(
            (0..3).all(|_| limit.allow(ip(1), later)),
            "refills to the burst, not beyond"
        );
        assert!(!limit.allow(ip(1), later));
    }

    #[test]
    fn the_table_is_bounded_and_idle_clients_go_first() {
        let t0 = Instant::now();
        let mut limit = ClientRateLimit::new(1, 2, 3);
        assert!(limit.allow(ip(1), t0));
        assert!(limit.allow(ip(2), t0));
        // Client 0 drains its bucket 2 s later, when 1 and 2 have refilled completely.
        let t1 = t0 + Duration::from_secs(2);
        assert!(limit.allow(ip(0), t1));
        assert!(limit.allow(ip(0), t1));
        assert!(
            limit.allow(ip(3), t1),
            "room made by forgetting the idle clients"
        );
        assert_eq!(limit.clients(), 2);
        assert!(
            !limit.allow(ip(0), t1 + Duration::from_millis(100)),
            "the busy client keeps its state"
        );
        // Never more than the bound, whatever the number of sources.
        for i in 0..200u8 {
            limit.allow(ip(i), t1);
        }
        assert!(limit.clients() <= 3);
    }

    #[test]
    fn zero_disables() {
        let mut limit = ClientRateLimit::new(0, 0, 1);
        let t0 = Instant::now();
        assert!((0..1000).all(|i| limit.allow(ip((i % 250) as u8), t0)));
    }
}
