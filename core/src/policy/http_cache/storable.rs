//! Which answers the cache stores (RFC 9111 section 3, shared cache). Requests that bypass the
//! cache (see `request.rs`) have their answers refused first.
//!
//! An answer is stored when all of these hold:
//! - the status is final and not 206 or 304 (this cache neither combines partial content nor
//!   revalidates); with `must-understand`, the status is also a registered one, and then
//!   `no-store` is overridden as section 5.2.2.3 says;
//! - no `no-store`, no `private` (section 3), no `no-cache`: such an answer needs revalidation at
//!   every use, which this cache does not do, so storing it would only spend memory;
//! - after a request with `Authorization`: `public`, `s-maxage` or `must-revalidate` (3.5);
//! - no `Set-Cookie`: the RFC allows storing it, but a shared cache replaying one caller's
//!   session cookie to others is a leak, and nginx and Varnish refuse it by default too;
//! - not `Vary: *`;
//! - explicit freshness, or a heuristically cacheable status or `public` (section 4.2.2), and
//!   still fresh on arrival: an answer that is stale already could only be served to
//!   `max-stale` requests, never worth its memory;
//! - its size within the rule's `maxEntryBytes` (checked early on `Content-Length`).

use std::time::SystemTime;

use http::StatusCode;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderName, SET_COOKIE};

use super::directives::{RequestDirectives, ResponseDirectives};
use super::freshness::{self, ExchangeTimes, Freshness, Heuristic};
use super::key::{PrimaryKey, Vary};
use super::request::{BypassReason, RequestHead, ResponseHead, request_bypass};
use super::rule::CacheRule;

/// Why an answer is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// The request bypassed the cache.
    Bypassed(BypassReason),
    /// The request said `no-store`.
    RequestNoStore,
    /// The status is not final, is 206 or 304, or is unknown under `must-understand`.
    Status,
    /// The answer said `no-store`.
    NoStore,
    /// The answer said `private`.
    Private,
    /// The answer said `no-cache` (needs revalidation at every use).
    NoCache,
    /// The request had `Authorization` and the answer did not allow sharing it (3.5).
    Authorization,
    /// The answer sets a cookie.
    SetCookie,
    /// The answer said `Vary: *`.
    VaryAny,
    /// Neither explicit freshness nor a heuristically cacheable status.
    NoFreshness,
    /// Stale on arrival.
    AlreadyStale,
    /// Larger than `maxEntryBytes` or than the whole store.
    TooLarge,
}

impl NotStored {
    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bypassed(reason) => reason.as_str(),
            Self::RequestNoStore => "request_no_store",
            Self::Status => "status",
            Self::NoStore => "no_store",
            Self::Private => "private",
            Self::NoCache => "no_cache",
            Self::Authorization => "authorization_not_shared",
            Self::SetCookie => "set_cookie",
            Self::VaryAny => "vary_any",
            Self::NoFreshness => "no_freshness",
            Self::AlreadyStale => "already_stale",
            Self::TooLarge => "too_large",
        }
    }
}

/// Whether the answer to `request` may be stored, judged on its head (so the caller knows
/// whether to buffer the body); [`CacheStore::store`](super::CacheStore::store) checks again
/// with the body.
pub fn check_storable(
    rule: &CacheRule,
    request: RequestHead<'_>,
    response: ResponseHead<'_>,
    times: ExchangeTimes,
) -> Result<(), NotStored> {
    plan(rule, request, response, times)?;
    let declared = response
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > rule.max_entry_bytes) {
        return Err(NotStored::TooLarge);
    }
    Ok(())
}

/// What storing an answer needs, worked out once.
#[derive(Debug, Clone)]
pub(crate) struct StorePlan {
    pub(crate) key: PrimaryKey,
    pub(crate) vary: Vec<HeaderName>,
    pub(crate) directives: ResponseDirectives,
    pub(crate) freshness: Freshness,
    pub(crate) corrected_initial_age: std::time::Duration,
    pub(crate) date: SystemTime,
}

/// Checks every storage rule of the module doc but the size, and works out the key and the
/// freshness.
pub(crate) fn plan(
    rule: &CacheRule,
    request: RequestHead<'_>,
    response: ResponseHead<'_>,
    times: ExchangeTimes,
) -> Result<StorePlan, NotStored> {
    if let Some(reason) = request_bypass(rule, request) {
        return Err(NotStored::Bypassed(reason));
    }
    let key = PrimaryKey::from_request(request.uri, request.headers)
        .ok_or(NotStored::Bypassed(BypassReason::NoAuthority))?;
    if RequestDirectives::parse(request.headers).no_store {
        return Err(NotStored::RequestNoStore);
    }
    let status = response.status;
    let directives = ResponseDirectives::parse(response.headers);
    let generic = !status.is_informational()
        && status != StatusCode::PARTIAL_CONTENT
        && status != StatusCode::NOT_MODIFIED;
    let understood = generic && status.canonical_reason().is_some();
    if !generic || (directives.must_understand && !understood) {
        return Err(NotStored::Status);
    }
    if directives.no_store && !directives.must_understand {
        return Err(NotStored::NoStore);
    }
    if directives.private {
        return Err(NotStored::Private);
    }
    if directives.no_cache {
        return Err(NotStored::NoCache);
    }
    if request.headers.contains_key(AUTHORIZATION)
        && !(directives.public || directives.s_maxage.is_some() || directives.must_revalidate)
    {
        return Err(NotStored::Authorization);
    }
    if response.headers.contains_key(SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    let vary = match Vary::parse(response.headers) {
        Vary::Any => return Err(NotStored::VaryAny),
        Vary::Fields(names) => names,
    };
    let date = freshness::date_value(response.headers, times.response_time);
    let heuristic = Heuristic {
        fraction: rule.heuristic_fraction,
        cap: rule.heuristic_cap,
    };
    let freshness =
        freshness::freshness_lifetime(status, &directives, response.headers, date, heuristic)
            .ok_or(NotStored::NoFreshness)?;
    let corrected_initial_age = freshness::corrected_initial_age(response.headers, times);
    if freshness.lifetime() <= corrected_initial_age {
        return Err(NotStored::AlreadyStale);
    }
    Ok(StorePlan {
        key,
        vary,
        directives,
        freshness,
        corrected_initial_age,
        date,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderMap, HeaderValue, Method, Uri};

    use super::*;

    const NOON: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn times() -> ExchangeTimes {
        ExchangeTimes {
            request_time: at(NOON),
            response_time: at(NOON),
        }
    }

    fn headers(lines: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in lines {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    /// Judges a GET of `/a` on `echo` with `req` headers answered by `status` and `rsp`.
    fn judge(
        rule: &CacheRule,
        method: Method,
        req: &[(&'static str, &str)],
        status: u16,
        rsp: &[(&'static str, &str)],
    ) -> Result<(), NotStored> {
        let mut req_headers = headers(req);
        req_headers.insert("host", HeaderValue::from_static("echo"));
        let uri: Uri = "/a".parse().unwrap();
        let rsp_headers = headers(rsp);
        check_storable(
            rule,
            RequestHead {
                method: &method,
                uri: &uri,
                headers: &req_headers,
            },
            ResponseHead {
                status: StatusCode::from_u16(status).unwrap(),
                headers: &rsp_headers,
            },
            times(),
        )
    }

    fn get(
        req: &[(&'static str, &str)],
        status: u16,
        rsp: &[(&'static str, &str)],
    ) -> Result<(), NotStored> {
        judge(&CacheRule::default(), Method::GET, req, status, rsp)
    }

    const FRESH: (&str, &str) = ("cache-control", "max-age=60");

    #[test]
    fn explicit_freshness_or_a_heuristic_status_is_needed() {
        assert_eq!(get(&[], 200, &[FRESH]), Ok(()));
        assert_eq!(
            get(&[], 500, &[FRESH]),
            Ok(()),
            "explicit: any final status"
        );
        assert_eq!(
            get(&[], 200, &[]),
            Err(NotStored::AlreadyStale),
            "nothing to guess from"
        );
        let old = httpdate::fmt_http_date(at(NOON - 36_000));
        assert_eq!(
            get(&[], 404, &[("last-modified", &old)]),
            Ok(()),
            "heuristic"
        );
        assert_eq!(
            get(&[], 302, &[("last-modified", &old)]),
            Err(NotStored::NoFreshness)
        );
        let past = httpdate::fmt_http_date(at(NOON - 1));
        assert_eq!(
            get(&[], 200, &[("expires", &past)]),
            Err(NotStored::AlreadyStale),
            "Expires in the past"
        );
        assert_eq!(
            get(&[], 200, &[("cache-control", "max-age=60"), ("age", "60")]),
            Err(NotStored::AlreadyStale),
            "aged out upstream"
        );
    }

    #[test]
    fn status_must_be_final_and_whole() {
        for status in [100, 206, 304] {
            assert_eq!(
                get(&[], status, &[FRESH]),
                Err(NotStored::Status),
                "{status}"
            );
        }
    }

    #[test]
    fn no_store_private_and_no_cache_are_honoured() {
        let cases = [
            ("no-store, max-age=60", NotStored::NoStore),
            ("private, max-age=60", NotStored::Private),
            ("public, private=\"x-user\", max-age=60", NotStored::Private),
            ("no-cache, max-age=60", NotStored::NoCache),
        ];
        for (cc, why) in cases {
            assert_eq!(get(&[], 200, &[("cache-control", cc)]), Err(why), "{cc}");
        }
        assert_eq!(
            get(&[("cache-control", "no-store")], 200, &[FRESH]),
            Err(NotStored::RequestNoStore)
        );
    }

    #[test]
    fn must_understand_overrides_no_store_for_known_statuses_only() {
        let cc = ("cache-control", "must-understand, no-store, max-age=60");
        assert_eq!(get(&[], 200, &[cc]), Ok(()));
        assert_eq!(get(&[], 299, &[cc]), Err(NotStored::Status));
        assert_eq!(
            get(&[], 299, &[FRESH]),
            Ok(()),
            "unknown is fine without it"
        );
    }

    #[test]
    fn authorized_requests_follow_the_rule_then_section_3_5() {
        let auth = [("authorization", "Bearer x")];
        assert_eq!(
            get(&auth, 200, &[("cache-control", "public, max-age=60")]),
            Err(NotStored::Bypassed(BypassReason::Authorization)),
            "the default rule bypasses them"
        );
        let allow = CacheRule {
            allow_authorized: true,
            ..CacheRule::default()
        };
        let with = |cc: &str| judge(&allow, Method::GET, &auth, 200, &[("cache-control", cc)]);
        assert_eq!(with("max-age=60"), Err(NotStored::Authorization));
        assert_eq!(with("public, max-age=60"), Ok(()));
        assert_eq!(with("s-maxage=60"), Ok(()));
        assert_eq!(with("must-revalidate, max-age=60"), Ok(()));
    }

    #[test]
    fn set_cookie_and_vary_star_are_not_stored() {
        assert_eq!(
            get(&[], 200, &[FRESH, ("set-cookie", "s=1")]),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            get(&[], 200, &[FRESH, ("vary", "*")]),
            Err(NotStored::VaryAny)
        );
        assert_eq!(get(&[], 200, &[FRESH, ("vary", "accept")]), Ok(()));
    }

    #[test]
    fn answers_to_bypassed_requests_are_not_stored() {
        assert_eq!(
            get(&[("if-none-match", "\"v\"")], 200, &[FRESH]),
            Err(NotStored::Bypassed(BypassReason::Conditional))
        );
        assert_eq!(
            judge(&CacheRule::default(), Method::POST, &[], 200, &[FRESH]),
            Err(NotStored::Bypassed(BypassReason::Method))
        );
        assert_eq!(
            judge(&CacheRule::default(), Method::HEAD, &[], 200, &[FRESH]),
            Ok(())
        );
    }

    #[test]
    fn a_declared_length_over_the_bound_is_refused_before_buffering() {
        let small = CacheRule {
            max_entry_bytes: 100,
            ..CacheRule::default()
        };
        let judge_len = |len: &str| {
            judge(
                &small,
                Method::GET,
                &[],
                200,
                &[FRESH, ("content-length", len)],
            )
        };
        assert_eq!(judge_len("101"), Err(NotStored::TooLarge));
        assert_eq!(judge_len("100"), Ok(()));
    }
}
