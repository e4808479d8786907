//! Detects a peer that stopped acknowledging: the half of a link failure QUIC's idle timeout
//! misses.
//!
//! The idle timeout only fires when nothing at all *arrives*. When packets to the peer are lost
//! but the peer's own packets still arrive (a one-way partition, a firewall rule in one
//! direction), our side keeps hearing keep-alives while everything it sends vanishes: the peer
//! times out, drops the connection silently (an idle timeout sends no CONNECTION_CLOSE), and
//! only then, one more idle timeout later, do we notice. Every request in flight meanwhile is
//! stuck. On a working path the peer acknowledges what we send within a round trip (plus its
//! ACK delay), so ack-eliciting frames sent and no ACK frame for longer than the limit mean the
//! path is broken in at least one direction, whatever else still arrives. Silence while we send
//! nothing ack-eliciting proves nothing (on an idle link only one side may be pinging; QUIC
//! restarts the keep-alive timer on every packet received), so it is not judged.
//!
//! Pure logic: the caller samples the connection's frame counters with `now`.

use std::time::{Duration, Instant};

/// Share of the idle timeout a link may go without any acknowledgement: 2/3, so a one-way
/// failure is noticed before the idle timeout would notice a two-way one (1 s by default).
const SHARE_OF_IDLE_TIMEOUT: f64 = 2.0 / 3.0;

/// Round trips a link may go without an acknowledgement, for long paths where the share of the
/// idle timeout is only a few round trips (a keep-alive and its ACK can each be lost).
const ROUND_TRIPS: u32 = 4;

/// How long a link may go without any acknowledgement from the peer, given the connection's
/// idle timeout and current round-trip estimate.
pub(crate) fn silence_limit(idle_timeout: Duration, rtt: Duration) -> Duration {
    idle_timeout
        .mul_f64(SHARE_OF_IDLE_TIMEOUT)
        .max(rtt.saturating_mul(ROUND_TRIPS))
}

/// What the peer has acknowledged since we last sent something it must acknowledge.
#[derive(Debug, Clone, Default)]
pub(crate) struct AckWatch {
    sent: u64,
    acks: u64,
    /// Since when ack-eliciting frames have been sent with no ACK frame received.
    unanswered_since: Option<Instant>,
}

impl AckWatch {
    /// Takes a sample of the counters of ack-eliciting frames sent and ACK frames received;
    /// returns how long the peer has left us unanswered when that is longer than `limit`.
    pub(crate) fn check(
        &mut self,
        sent: u64,
        acks: u64,
        limit: Duration,
        now: Instant,
    ) -> Option<Duration> {
        if acks != self.acks {
            self.acks = acks;
            self.unanswered_since = None;
        }
        if sent != self.sent {
            self.sent = sent;
            self.unanswered_since.get_or_insert(now);
        }
        let silence = now.saturating_duration_since(self.unanswered_since?);
        (silence > limit).then_some(silence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_limit_is_two_thirds_of_the_idle_timeout_or_four_round_trips() {
        assert_eq!(silence_limit(ms(1500), ms(1)), ms(1000));
        assert_eq!(silence_limit(ms(1500), ms(340)), ms(1360));
    }

    #[test]
    fn frames_left_unanswered_beyond_the_limit_are_reported() {
        let start = Instant::now();
        let limit = ms(1000);
        let mut watch = AckWatch::default();
        assert_eq!(watch.check(5, 3, limit, start), None);
        // Sent more, nothing answered for 1.1 s: counted from the first unanswered send.
        assert_eq!(watch.check(9, 3, limit, start + ms(600)), None);
        assert_eq!(watch.check(12, 3, limit, start + ms(1100)), Some(ms(1100)));
    }

    #[test]
    fn an_acknowledgement_restarts_the_clock() {
        let start = Instant::now();
        let limit = ms(1000);
        let mut watch = AckWatch::default();
        watch.check(5, 3, limit, start);
        assert_eq!(watch.check(6, 4, limit, start + ms(900)), None);
        // Sent again together with that ACK: the clock starts at that sample.
        assert_eq!(watch.check(6, 4, limit, start + ms(1800)), None);
        assert_eq!(watch.check(6, 4, limit, start + ms(2000)), Some(ms(1100)));
    }

    #[test]
    fn silence_while_sending_nothing_is_not_judged() {
        let start = Instant::now();
        let limit = ms(1000);
        let mut watch = AckWatch::default();
        watch.check(5, 3, limit, start);
        watch.check(5, 4, limit, start + ms(100));
        // Only the peer pings (we answer with ACK-only packets, not counted): no verdict.
        assert_eq!(watch.check(5, 4, limit, start + ms(10_000)), None);
    }
}
