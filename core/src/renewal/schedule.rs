//! When to renew a certificate (pure: the time and the randomness are arguments).
//!
//! A certificate is renewed at a share of its lifetime (default 2/3), counted from when it was
//! received to its `notAfter` (not from `notBefore`, which the CA backdates for clock skew),
//! moved by a jitter of up to ±10% of the lifetime so the components of a cluster, started
//! together, do not all renew at once. The result never falls past [`LATEST_SHARE`] of the
//! lifetime, so some time always remains to retry before expiry.

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::backoff::Backoff;
use crate::identity::Validity;

/// Default share of the lifetime at which a certificate is renewed (about 2/3).
pub const DEFAULT_RENEW_AT: f64 = 0.67;
/// [`DEFAULT_RENEW_AT`] as the `--renew-at` flag's default.
pub const DEFAULT_RENEW_AT_FLAG: &str = "0.67";
/// Jitter, as a share of the lifetime, on either side of the renewal time.
pub const JITTER_SHARE: f64 = 0.1;
/// Latest renewal time, as a share of the lifetime, whatever the share and the jitter.
pub const LATEST_SHARE: f64 = 0.95;
/// First delay between failed renewal attempts.
pub const RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest delay between failed renewal attempts (shorter for short lifetimes, see
/// [`retry_backoff`]).
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// The share of the lifetime at which to renew (`--renew-at`), in `(0, 0.95]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewAt(f64);

// A share is never NaN (`new` refuses it), so equality is reflexive.
impl Eq for RenewAt {}

impl Default for RenewAt {
    fn default() -> Self {
        Self(DEFAULT_RENEW_AT)
    }
}

impl RenewAt {
    /// A share, checked; errors say what is allowed.
    pub fn new(share: f64) -> Result<Self, String> {
        if share.is_finite() && share > 0.0 && share <= LATEST_SHARE {
            Ok(Self(share))
        } else {
            Err(format!(
                "{share} is not a share of the certificate lifetime: use a number above 0 and at \
                 most {LATEST_SHARE} (e.g. 0.67 renews after two thirds)"
            ))
        }
    }

    /// The share.
    pub fn share(self) -> f64 {
        self.0
    }
}

impl std::str::FromStr for RenewAt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let share: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number (e.g. 0.67)"))?;
        Self::new(share)
    }
}

impl std::fmt::Display for RenewAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A jitter draw in `[-1, 1]`: scaled by [`JITTER_SHARE`] of the lifetime.
pub fn draw_jitter(rng: &mut impl Rng) -> f64 {
    rng.random_range(-1.0..=1.0)
}

/// When to renew the certificate of `validity`, for a `jitter` drawn with [`draw_jitter`].
pub fn renewal_time(validity: Validity, share: RenewAt, jitter: f64) -> SystemTime {
    let lifetime = validity
        .not_after
        .duration_since(validity.received)
        .unwrap_or(Duration::ZERO);
    let at = (share.share() + JITTER_SHARE * jitter.clamp(-1.0, 1.0)).clamp(0.0, LATEST_SHARE);
    validity.received + lifetime.mul_f64(at)
}

/// The backoff between failed attempts for a certificate living `lifetime`: from
/// [`RETRY_MIN`] up to a tenth of the lifetime, at most [`RETRY_MAX`], so a short-lived
/// certificate is retried several times before it expires.
pub fn retry_backoff(lifetime: Duration) -> Backoff {
    Backoff::new(RETRY_MIN, (lifetime / 10).clamp(RETRY_MIN, RETRY_MAX))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn validity(lifetime_secs: u64) -> Validity {
        let received = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        Validity {
            received,
            not_after: received + Duration::from_secs(lifetime_secs),
        }
    }

    fn share_of(v: Validity, at: SystemTime) -> f64 {
        at.duration_since(v.received).unwrap().as_secs_f64()
            / v.not_after
                .duration_since(v.received)
                .unwrap()
                .as_secs_f64()
    }

    #[test]
    fn renews_at_the_share_counted_from_receipt() {
        let v = validity(30);
        let at = renewal_time(v, RenewAt::default(), 0.0);
        assert_eq!(at, v.received + Duration::from_millis(20_100));
        assert_eq!(
            DEFAULT_RENEW_AT_FLAG.parse::<RenewAt>().unwrap(),
            RenewAt::default()
        );
        let at = renewal_time(v, RenewAt::new(0.5).unwrap(), 0.0);
        assert_eq!(at, v.received + Duration::from_secs(15));
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_never_past_the_latest_share() {
        let v = validity(86_400);
        let mut rng = StdRng::seed_from_u64(9);
        let shares: Vec<f64> = (0..500)
            .map(|_| {
                share_of(
                    v,
                    renewal_time(v, RenewAt::default(), draw_jitter(&mut rng)),
                )
            })
            .collect();
        for s in &shares {
            assert!(
                (DEFAULT_RENEW_AT - 0.1 - 1e-9..=DEFAULT_RENEW_AT + 0.1 + 1e-9).contains(s),
                "{s}"
            );
        }
        let spread = shares.iter().cloned().fold(f64::MIN, f64::max)
            - shares.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread > 0.15, "the draws spread the renewals: {spread}");
        // A late share plus the largest jitter still leaves time before expiry.
        let late = renewal_time(v, RenewAt::new(0.95).unwrap(), 1.0);
        assert!((share_of(v, late) - LATEST_SHARE).abs() < 1e-9);
        assert!(late < v.not_after);
        // An early share minus the jitter does not go before receipt.
        let early = renewal_time(v, RenewAt::new(0.05).unwrap(), -1.0);
        assert_eq!(early, v.received);
        // Out-of-range draws are clamped.
        assert_eq!(
            renewal_time(v, RenewAt::default(), 7.0),
            renewal_time(v, RenewAt::default(), 1.0)
        );
    }

    #[test]
    fn an_already_expired_or_odd_validity_renews_at_once() {
        let v = Validity {
            received: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
            not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(50),
        };
        assert_eq!(renewal_time(v, RenewAt::default(), 0.5), v.received);
    }

    #[test]
    fn the_share_is_checked_with_a_clear_message() {
        assert_eq!("0.67".parse::<RenewAt>().unwrap().share(), 0.67);
        for bad in ["0", "1", "0.96", "-0.5", "NaN", "two thirds"] {
            let err = bad.parse::<RenewAt>().unwrap_err();
            assert!(err.contains("0.67"), "{bad}: {err}");
        }
    }

    #[test]
    fn retries_back_off_within_a_tenth_of_the_lifetime() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut b = retry_backoff(Duration::from_secs(30));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay(&mut rng)).collect();
        assert!(delays[0] <= RETRY_MIN, "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(3)),
            "{delays:?}"
        );
        assert!(
            delays[9] >= Duration::from_millis(1500),
            "grows to the cap: {delays:?}"
        );
        let mut day = retry_backoff(Duration::from_secs(86_400));
        let last = (0..20).map(|_| day.next_delay(&mut rng)).last().unwrap();
        assert!(last <= RETRY_MAX && last >= RETRY_MAX / 2, "{last:?}");
        let mut tiny = retry_backoff(Duration::from_secs(1));
        assert!(tiny.next_delay(&mut rng) <= RETRY_MIN);
    }
}
