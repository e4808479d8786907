//! How long a stored answer stays fresh and how old it is (RFC 9111 section 4.2), with the
//! clock passed in: `request_time` and `response_time` are recorded by the caller around the
//! upstream exchange, `now` is given at each use.
//!
//! - Freshness lifetime: `s-maxage`, else `max-age`, else `Expires - Date` (an invalid
//!   `Expires`, such as `0`, is in the past); else, for a heuristically cacheable status or a
//!   `public` answer, a share of `Date - Last-Modified` up to a cap; else none.
//! - A missing or invalid `Date` is the time the answer arrived (RFC 9110 section 6.6.1).
//! - Age: `apparent_age = max(0, response_time - date_value)`, `corrected_initial_age =
//!   max(apparent_age, age_value + response_time - request_time)`, `current_age =
//!   corrected_initial_age + (now - response_time)`; every difference saturates at zero, so a
//!   clock running backwards never gives a negative age.

use std::time::{Duration, SystemTime};

use http::header::{AGE, DATE, EXPIRES, HeaderName, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};

use super::directives::{MAX_DELTA_SECONDS, ResponseDirectives, delta_seconds};

/// Statuses a cache may store with heuristic freshness (RFC 9110 section 15.1). 206 is among
/// them in the RFC but this cache does not store partial content.
pub const HEURISTICALLY_CACHEABLE: [u16; 11] =
    [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// When the upstream exchange happened, recorded by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeTimes {
    /// When the request was sent upstream.
    pub request_time: SystemTime,
    /// When the response head arrived.
    pub response_time: SystemTime,
}

/// Where an answer's freshness lifetime comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Set by the origin (`s-maxage`, `max-age` or `Expires`).
    Explicit(Duration),
    /// Guessed from `Last-Modified` (section 4.2.2).
    Heuristic(Duration),
}

impl Freshness {
    /// The lifetime, whatever its source.
    pub fn lifetime(self) -> Duration {
        match self {
            Self::Explicit(d) | Self::Heuristic(d) => d,
        }
    }
}

/// The heuristic's parameters (from the route's cache rule).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heuristic {
    /// Share of `Date - Last-Modified` taken as fresh.
    pub fraction: f64,
    /// Longest heuristic lifetime.
    pub cap: Duration,
}

/// Whether `status` may be stored with heuristic freshness.
pub fn is_heuristically_cacheable(status: StatusCode) -> bool {
    HEURISTICALLY_CACHEABLE.contains(&status.as_u16())
}

/// The answer's freshness lifetime, or `None` when it has no explicit freshness and may not be
/// given a heuristic one. `date` is the answer's date value ([`date_value`]).
pub fn freshness_lifetime(
    status: StatusCode,
    directives: &ResponseDirectives,
    headers: &HeaderMap,
    date: SystemTime,
    heuristic: Heuristic,
) -> Option<Freshness> {
    if let Some(lifetime) = directives.s_maxage.or(directives.max_age) {
        return Some(Freshness::Explicit(lifetime));
    }
    if headers.contains_key(EXPIRES) {
        // Several or invalid values: read as already expired, the most restrictive reading.
        let lifetime = match single_date(headers, &EXPIRES) {
            Some(expires) => since(expires, date),
            None => Duration::ZERO,
        };
        return Some(Freshness::Explicit(lifetime));
    }
    if !(is_heuristically_cacheable(status) || directives.public) {
        return None;
    }
    let lifetime = single_date(headers, &LAST_MODIFIED).map_or(Duration::ZERO, |modified| {
        let fraction = if heuristic.fraction.is_finite() {
            heuristic.fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Duration::try_from_secs_f64(since(date, modified).as_secs_f64() * fraction)
            .unwrap_or(heuristic.cap)
            .min(heuristic.cap)
    });
    Some(Freshness::Heuristic(lifetime))
}

/// The answer's `Date`, or `response_time` when it has none or it cannot be read.
pub fn date_value(headers: &HeaderMap, response_time: SystemTime) -> SystemTime {
    single_date(headers, &DATE).unwrap_or(response_time)
}

/// The age of the answer when it arrived (section 4.2.3's `corrected_initial_age`).
pub fn corrected_initial_age(headers: &HeaderMap, times: ExchangeTimes) -> Duration {
    let date = date_value(headers, times.response_time);
    let apparent_age = since(times.response_time, date);
    let response_delay = since(times.response_time, times.request_time);
    apparent_age.max(age_value(headers).saturating_add(response_delay))
}

/// The `Age` the upstream sent; 0 when absent or invalid (section 4.2.3 "or 0, if not
/// available"); several values: the largest, the most conservative.
pub fn age_value(headers: &HeaderMap) -> Duration {
    let seconds = headers
        .get_all(AGE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| delta_seconds(v.trim()))
        .max()
        .unwrap_or(0);
    Duration::from_secs(seconds)
}

/// The age of a stored answer at `now`.
pub fn current_age(
    corrected_initial_age: Duration,
    response_time: SystemTime,
    now: SystemTime,
) -> Duration {
    corrected_initial_age.saturating_add(since(now, response_time))
}

/// The `Age` field value for `age`: whole seconds, at most 2^31 (section 5.1).
pub(crate) fn age_header_seconds(age: Duration) -> u64 {
    age.as_secs().min(MAX_DELTA_SECONDS)
}

/// `later - earlier`, or zero when `later` is not later.
pub(crate) fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

/// The field's date when it has exactly one valid value.
fn single_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    httpdate::parse_http_date(first.to_str().ok()?.trim()).ok()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const NOON: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn headers(lines: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in lines {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    const RULE: Heuristic = Heuristic {
        fraction: 0.1,
        cap: Duration::from_secs(24 * 3600),
    };

    fn lifetime(status: u16, lines: &[(&'static str, String)]) -> Option<Freshness> {
        let h = headers(lines);
        let d = ResponseDirectives::parse(&h);
        let status = StatusCode::from_u16(status).unwrap();
        freshness_lifetime(status, &d, &h, date_value(&h, at(NOON)), RULE)
    }

    fn explicit(secs: u64) -> Option<Freshness> {
        Some(Freshness::Explicit(Duration::from_secs(secs)))
    }

    #[test]
    fn s_maxage_then_max_age_then_expires() {
        let expires = ("expires", date(NOON + 300));
        let now = ("date", date(NOON));
        let all = [
            ("cache-control", "max-age=60, s-maxage=30".to_string()),
            expires.clone(),
            now.clone(),
        ];
        assert_eq!(lifetime(200, &all), explicit(30));
        let no_s = [
            ("cache-control", "max-age=60".to_string()),
            expires.clone(),
            now.clone(),
        ];
        assert_eq!(lifetime(200, &no_s), explicit(60), "max-age beats Expires");
        assert_eq!(
            lifetime(200, &[expires.clone(), now.clone()]),
            explicit(300)
        );
        assert_eq!(
            lifetime(500, &[expires, now]),
            explicit(300),
            "explicit freshness stores any status"
        );
    }

    #[test]
    fn expires_in_the_past_or_invalid_is_already_expired() {
        let now = ("date", date(NOON));
        assert_eq!(
            lifetime(200, &[("expires", date(NOON - 60)), now.clone()]),
            explicit(0)
        );
        assert_eq!(
            lifetime(200, &[("expires", "0".into()), now.clone()]),
            explicit(0)
        );
        let twice = [
            ("expires", date(NOON + 60)),
            ("expires", date(NOON + 90)),
            now,
        ];
        assert_eq!(lifetime(200, &twice), explicit(0));
    }

    #[test]
    fn expires_without_date_counts_from_the_arrival() {
        // No Date: the response time (NOON) stands in for it.
        assert_eq!(
            lifetime(200, &[("expires", date(NOON + 120))]),
            explicit(120)
        );
    }

    #[test]
    fn heuristic_freshness_is_a_capped_share_of_the_last_modified_age() {
        let now = ("date", date(NOON));
        let ten_hours = [("last-modified", date(NOON - 36_000)), now.clone()];
        assert_eq!(
            lifetime(200, &ten_hours),
            Some(Freshness::Heuristic(Duration::from_secs(3_600)))
        );
        let a_year = [("last-modified", date(NOON - 365 * 86_400)), now.clone()];
        assert_eq!(
            lifetime(404, &a_year),
            Some(Freshness::Heuristic(Duration::from_secs(86_400))),
            "capped"
        );
        let future = [("last-modified", date(NOON + 60)), now.clone()];
        assert_eq!(
            lifetime(200, &future),
            Some(Freshness::Heuristic(Duration::ZERO))
        );
        assert_eq!(
            lifetime(200, std::slice::from_ref(&now)),
            Some(Freshness::Heuristic(Duration::ZERO)),
            "no Last-Modified: nothing to guess from"
        );
        assert_eq!(lifetime(302, &ten_hours), None, "302 is not heuristic");
        let public = [
            ("cache-control", "public".to_string()),
            ("last-modified", date(NOON - 36_000)),
            now,
        ];
        assert_eq!(
            lifetime(302, &public),
            Some(Freshness::Heuristic(Duration::from_secs(3_600))),
            "public allows a heuristic"
        );
    }

    #[test]
    fn age_arithmetic_follows_section_4_2_3() {
        let times = ExchangeTimes {
            request_time: at(NOON),
            response_time: at(NOON + 2),
        };
        // Apparent age (10 s, the origin's clock behind) beats Age + delay (3 + 2).
        let h = headers(&[("date", date(NOON - 8)), ("age", "3".into())]);
        assert_eq!(corrected_initial_age(&h, times), Duration::from_secs(10));
        // Age + delay (30 + 2) beats the apparent age.
        let h = headers(&[("date", date(NOON + 2)), ("age", "30".into())]);
        assert_eq!(corrected_initial_age(&h, times), Duration::from_secs(32));
        // A Date ahead of our clock gives no negative apparent age.
        let h = headers(&[("date", date(NOON + 100))]);
        assert_eq!(corrected_initial_age(&h, times), Duration::from_secs(2));
        // Resident time adds on.
        assert_eq!(
            current_age(Duration::from_secs(32), at(NOON + 2), at(NOON + 12)),
            Duration::from_secs(42)
        );
        assert_eq!(
            current_age(Duration::from_secs(5), at(NOON + 2), at(NOON)),
            Duration::from_secs(5),
            "a clock stepping back adds nothing"
        );
    }

    #[test]
    fn age_values_read_leniently() {
        assert_eq!(
            age_value(&headers(&[("age", "abc".into())])),
            Duration::ZERO
        );
        assert_eq!(age_value(&HeaderMap::new()), Duration::ZERO);
        let two = headers(&[("age", "5".into()), ("age", "7".into())]);
        assert_eq!(age_value(&two), Duration::from_secs(7));
        assert_eq!(
            age_value(&headers(&[("age", "99999999999".into())])),
            Duration::from_secs(1 << 31)
        );
        assert_eq!(age_header_seconds(Duration::from_millis(1_999)), 1);
    }

    #[test]
    fn dates_in_every_http_format_parse_and_bad_ones_fall_back() {
        let arrival = at(NOON);
        for value in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            let h = headers(&[("date", value.into())]);
            assert_eq!(date_value(&h, arrival), at(784_111_777), "{value}");
        }
        let bad = headers(&[("date", "yesterday".into())]);
        assert_eq!(date_value(&bad, arrival), arrival);
    }
}
