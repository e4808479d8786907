//! Whether a stored answer that matches a request may answer it at `now`, fresh or stale (RFC
//! 9111 sections 4.2 and 5.2.1). Pure arithmetic on the answer's age and lifetime, so every
//! boundary is tested here.
//!
//! - Fresh means `freshness_lifetime > current_age` (section 4.2): at equality it is stale.
//! - The request's `max-age=N` refuses answers older than N (fresh or not); `min-fresh=N`
//!   refuses answers that will not stay fresh N more seconds; `no-cache`, in the request or in
//!   the stored answer, refuses it (this cache does not revalidate).
//! - A stale answer is used only when the request's `max-stale` allows its staleness (any, or
//!   at most N) and the answer has none of `must-revalidate`, `proxy-revalidate`, `s-maxage`,
//!   `no-cache` (sections 4.2.4, 5.2.2). `min-fresh` asks for a fresh answer, so it rules
//!   stale ones out too.
//! - Serving stale when the upstream is unreachable (section 4.2.4's "disconnected") is not
//!   done here: it is the layer's call, on an error, and is not built yet.

use std::time::Duration;

use super::directives::{MaxStale, RequestDirectives, ResponseDirectives};

/// What a stored answer can do for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// Serve it as fresh.
    Fresh,
    /// Serve it although stale (the request allowed it).
    Stale,
    /// Do not serve it.
    No,
}

/// Judges an answer of `age` with `lifetime` and `stored` directives for a request's.
pub(crate) fn judge(
    lifetime: Duration,
    age: Duration,
    stored: &ResponseDirectives,
    request: &RequestDirectives,
) -> Reuse {
    if request.no_cache || stored.no_cache || request.max_age.is_some_and(|max| age > max) {
        return Reuse::No;
    }
    if lifetime > age {
        let remaining = lifetime - age;
        return if request.min_fresh.is_some_and(|min| remaining < min) {
            Reuse::No
        } else {
            Reuse::Fresh
        };
    }
    let staleness = age - lifetime;
    let allowed = match request.max_stale {
        Some(MaxStale::Any) => true,
        Some(MaxStale::Limit(limit)) => staleness <= limit,
        None => false,
    };
    if allowed && request.min_fresh.is_none() && !stored.forbids_stale() {
        Reuse::Stale
    } else {
        Reuse::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn request(f: impl FnOnce(&mut RequestDirectives)) -> RequestDirectives {
        let mut r = RequestDirectives::default();
        f(&mut r);
        r
    }

    const PLAIN: ResponseDirectives = ResponseDirectives {
        max_age: None,
        s_maxage: None,
        no_cache: false,
        no_store: false,
        no_transform: false,
        must_revalidate: false,
        proxy_revalidate: false,
        must_understand: false,
        private: false,
        public: false,
    };

    #[test]
    fn fresh_until_the_age_reaches_the_lifetime() {
        let any = RequestDirectives::default();
        assert_eq!(judge(s(60), s(0), &PLAIN, &any), Reuse::Fresh);
        assert_eq!(
            judge(s(60), s(59) + Duration::from_millis(999), &PLAIN, &any),
            Reuse::Fresh
        );
        assert_eq!(
            judge(s(60), s(60), &PLAIN, &any),
            Reuse::No,
            "equal is stale"
        );
        assert_eq!(judge(s(60), s(61), &PLAIN, &any), Reuse::No);
    }

    #[test]
    fn request_max_age_bounds_the_age_even_when_fresh() {
        let max10 = request(|r| r.max_age = Some(s(10)));
        assert_eq!(judge(s(60), s(10), &PLAIN, &max10), Reuse::Fresh);
        assert_eq!(judge(s(60), s(11), &PLAIN, &max10), Reuse::No);
        let zero = request(|r| r.max_age = Some(s(0)));
        assert_eq!(judge(s(60), s(1), &PLAIN, &zero), Reuse::No);
        let with_stale = request(|r| {
            r.max_age = Some(s(100));
            r.max_stale = Some(MaxStale::Any);
        });
        assert_eq!(judge(s(60), s(90), &PLAIN, &with_stale), Reuse::Stale);
        assert_eq!(judge(s(60), s(101), &PLAIN, &with_stale), Reuse::No);
    }

    #[test]
    fn min_fresh_needs_that_much_freshness_left() {
        let min20 = request(|r| r.min_fresh = Some(s(20)));
        assert_eq!(judge(s(60), s(40), &PLAIN, &min20), Reuse::Fresh);
        assert_eq!(judge(s(60), s(41), &PLAIN, &min20), Reuse::No);
        let both = request(|r| {
            r.min_fresh = Some(s(0));
            r.max_stale = Some(MaxStale::Any);
        });
        assert_eq!(judge(s(60), s(70), &PLAIN, &both), Reuse::No, "wants fresh");
    }

    #[test]
    fn max_stale_allows_staleness_up_to_its_limit() {
        let any = request(|r| r.max_stale = Some(MaxStale::Any));
        assert_eq!(judge(s(60), s(60), &PLAIN, &any), Reuse::Stale);
        assert_eq!(judge(s(60), s(1_000_000), &PLAIN, &any), Reuse::Stale);
        let ten = request(|r| r.max_stale = Some(MaxStale::Limit(s(10))));
        assert_eq!(judge(s(60), s(70), &PLAIN, &ten), Reuse::Stale);
        assert_eq!(judge(s(60), s(71), &PLAIN, &ten), Reuse::No);
    }

    #[test]
    fn stale_is_never_served_against_revalidation_directives() {
        let any = request(|r| r.max_stale = Some(MaxStale::Any));
        let forbidding = [
            ResponseDirectives {
                must_revalidate: true,
                ..PLAIN
            },
            ResponseDirectives {
                proxy_revalidate: true,
                ..PLAIN
            },
            ResponseDirectives {
                s_maxage: Some(s(60)),
                ..PLAIN
            },
        ];
        for stored in forbidding {
            assert_eq!(judge(s(60), s(61), &stored, &any), Reuse::No, "{stored:?}");
            assert_eq!(
                judge(s(60), s(59), &stored, &any),
                Reuse::Fresh,
                "{stored:?}"
            );
        }
    }

    #[test]
    fn no_cache_on_either_side_refuses_the_stored_answer() {
        let no_cache = request(|r| r.no_cache = true);
        assert_eq!(judge(s(60), s(0), &PLAIN, &no_cache), Reuse::No);
        let stored = ResponseDirectives {
            no_cache: true,
            ..PLAIN
        };
        let plain = RequestDirectives::default();
        assert_eq!(
            judge(s(60), s(0), &stored, &plain),
            Reuse::No,
            "nor a no-cache answer"
        );
    }
}
