//! `Cache-Control` as RFC 9111 section 5.2 defines it, for requests and for responses.
//!
//! - Every field line is read and the directives of all of them combined; names compare without
//!   case; an argument is a token or a quoted string (recipients accept both, section 5.2).
//! - Unknown directives (extensions such as `stale-while-revalidate`) are ignored (5.2.3).
//! - Repeated or conflicting directives resolve to the most restrictive reading (4.2.1): the
//!   smallest `max-age`, `s-maxage` and `max-stale`, the largest `min-fresh`; `private` beats
//!   `public`. An argument that is not a number reads as its most restrictive value (`max-age`
//!   0, `min-fresh` forever), as section 4.2.1 encourages for invalid freshness information.
//! - The qualified forms `no-cache="field"` and `private="field"` are read as unqualified, as
//!   section 5.2.2 notes most caches do: stricter, never wrong.
//! - Numbers beyond 2^31 seconds are 2^31 (section 1.2.2).
//! - A request without `Cache-Control` but with `Pragma: no-cache` reads as `no-cache` (5.4).

use std::borrow::Cow;
use std::time::Duration;

use http::HeaderMap;
use http::header::{CACHE_CONTROL, PRAGMA};

/// Largest delta-seconds kept (RFC 9111 section 1.2.2): larger values, or overflows, are this.
pub const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// How much staleness a request accepts (`max-stale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    /// `max-stale` without a value: any staleness.
    Any,
    /// `max-stale=N`: stale by at most this much.
    Limit(Duration),
}

/// The request directives a shared cache acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `max-age`: the client wants an answer no older than this.
    pub max_age: Option<Duration>,
    /// `max-stale`: the client accepts a stale answer.
    pub max_stale: Option<MaxStale>,
    /// `min-fresh`: the client wants an answer that stays fresh at least this much longer.
    pub min_fresh: Option<Duration>,
    /// `no-cache` (or `Pragma: no-cache`): no stored answer without revalidation.
    pub no_cache: bool,
    /// `no-store`: store neither this request nor its answer.
    pub no_store: bool,
    /// `no-transform`.
    pub no_transform: bool,
    /// `only-if-cached`: answer from the store or with 504, never forward.
    pub only_if_cached: bool,
}

/// The response directives a shared cache acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    /// `max-age`: fresh for this long.
    pub max_age: Option<Duration>,
    /// `s-maxage`: fresh for this long in shared caches (overrides `max-age`, forbids serving
    /// stale).
    pub s_maxage: Option<Duration>,
    /// `no-cache` (qualified or not): never served without revalidation.
    pub no_cache: bool,
    /// `no-store`: never stored.
    pub no_store: bool,
    /// `no-transform`.
    pub no_transform: bool,
    /// `must-revalidate`: never served stale.
    pub must_revalidate: bool,
    /// `proxy-revalidate`: never served stale by a shared cache.
    pub proxy_revalidate: bool,
    /// `must-understand`: store only if the status code's caching rules are understood.
    pub must_understand: bool,
    /// `private` (qualified or not): never stored by a shared cache.
    pub private: bool,
    /// `public`: storable even where it would not be otherwise.
    pub public: bool,
}

/// One directive: its lowercased name and its argument, unquoted.
struct Directive<'a> {
    name: String,
    argument: Option<Cow<'a, str>>,
}

impl RequestDirectives {
    /// Reads the request's `Cache-Control` lines (or `Pragma: no-cache` when there are none).
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut out = Self::default();
        let mut any = false;
        for line in headers.get_all(CACHE_CONTROL) {
            any = true;
            for d in directives(&String::from_utf8_lossy(line.as_bytes())) {
                match d.name.as_str() {
                    "max-age" => out.max_age = min(out.max_age, seconds_or(&d, 0)),
                    "max-stale" => {
                        let this = match d.argument {
                            None => MaxStale::Any,
                            Some(_) => MaxStale::Limit(seconds_or(&d, 0)),
                        };
                        out.max_stale = Some(match (out.max_stale, this) {
                            (Some(MaxStale::Limit(a)), MaxStale::Limit(b)) => {
                                MaxStale::Limit(a.min(b))
                            }
                            (Some(MaxStale::Limit(a)), MaxStale::Any) => MaxStale::Limit(a),
                            (_, this) => this,
                        });
                    }
                    "min-fresh" => {
                        let this = seconds_or(&d, MAX_DELTA_SECONDS);
                        out.min_fresh = Some(out.min_fresh.map_or(this, |m| m.max(this)));
                    }
                    "no-cache" => out.no_cache = true,
                    "no-store" => out.no_store = true,
                    "no-transform" => out.no_transform = true,
                    "only-if-cached" => out.only_if_cached = true,
                    _ => {}
                }
            }
        }
        if !any {
            out.no_cache = headers.get_all(PRAGMA).iter().any(|line| {
                directives(&String::from_utf8_lossy(line.as_bytes())).any(|d| d.name == "no-cache")
            });
        }
        out
    }
}

impl ResponseDirectives {
    /// Reads the response's `Cache-Control` lines (`Pragma` has no defined meaning in
    /// responses, section 5.4, and is ignored).
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut out = Self::default();
        for line in headers.get_all(CACHE_CONTROL) {
            for d in directives(&String::from_utf8_lossy(line.as_bytes())) {
                match d.name.as_str() {
                    "max-age" => out.max_age = min(out.max_age, seconds_or(&d, 0)),
                    "s-maxage" => out.s_maxage = min(out.s_maxage, seconds_or(&d, 0)),
                    "no-cache" => out.no_cache = true,
                    "no-store" => out.no_store = true,
                    "no-transform" => out.no_transform = true,
                    "must-revalidate" => out.must_revalidate = true,
                    "proxy-revalidate" => out.proxy_revalidate = true,
                    "must-understand" => out.must_understand = true,
                    "private" => out.private = true,
                    "public" => out.public = true,
                    _ => {}
                }
            }
        }
        // `private` is the more restrictive of the two.
        out.public &= !out.private;
        out
    }

    /// Whether a stale copy may never be served without revalidation (`must-revalidate`,
    /// `proxy-revalidate`, `s-maxage` or `no-cache`, sections 4.2.4 and 5.2.2).
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }
}

fn min(current: Option<Duration>, this: Duration) -> Option<Duration> {
    Some(current.map_or(this, |c| c.min(this)))
}

/// The directive's argument as delta-seconds, or `invalid` seconds when it is missing or not a
/// number.
fn seconds_or(d: &Directive<'_>, invalid: u64) -> Duration {
    Duration::from_secs(
        d.argument
            .as_deref()
            .and_then(delta_seconds)
            .unwrap_or(invalid),
    )
}

/// `1*DIGIT`, saturating at 2^31.
pub(crate) fn delta_seconds(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        s.parse::<u64>()
            .map_or(MAX_DELTA_SECONDS, |n| n.min(MAX_DELTA_SECONDS)),
    )
}

/// The directives of one field line: comma-separated outside quoted strings.
fn directives(line: &str) -> impl Iterator<Item = Directive<'_>> {
    split_list(line).into_iter().filter_map(|item| {
        let (name, argument) = match item.split_once('=') {
            Some((n, a)) => (n.trim(), Some(unquote(a.trim()))),
            None => (item, None),
        };
        (!name.is_empty()).then(|| Directive {
            name: name.to_ascii_lowercase(),
            argument,
        })
    })
}

/// The elements of a comma-separated list, trimmed, empty ones dropped, commas inside quoted
/// strings kept (RFC 9110 section 5.6.1).
pub(crate) fn split_list(line: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(line[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(line[start..].trim());
    items.retain(|item| !item.is_empty());
    items
}

/// A quoted string's content with its escapes resolved; a token as is.
fn unquote(s: &str) -> Cow<'_, str> {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return Cow::Borrowed(s);
    };
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in lines {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn response_directives_with_and_without_arguments() {
        let d = ResponseDirectives::parse(&headers(&[(
            "cache-control",
            "Public, MAX-AGE=60, s-maxage=\"30\", must-revalidate, proxy-revalidate, \
             no-transform, must-understand",
        )]));
        assert_eq!(d.max_age, secs(60));
        assert_eq!(d.s_maxage, secs(30), "quoted arguments are accepted");
        assert!(d.public && d.must_revalidate && d.proxy_revalidate);
        assert!(d.no_transform && d.must_understand);
        assert!(!d.no_store && !d.no_cache && !d.private);
        assert!(d.forbids_stale());
        assert_eq!(
            ResponseDirectives::parse(&HeaderMap::new()),
            ResponseDirectives::default()
        );
    }

    #[test]
    fn unknown_extensions_are_ignored_and_quoted_commas_do_not_split() {
        let d = ResponseDirectives::parse(&headers(&[(
            "cache-control",
            "stale-while-revalidate=30, community=\"UCI, max-age=0\", x-ext, max-age=10",
        )]));
        assert_eq!(d.max_age, secs(10), "the quoted max-age=0 is an argument");
        assert!(!d.forbids_stale());
    }

    #[test]
    fn qualified_no_cache_and_private_read_as_unqualified() {
        let d = ResponseDirectives::parse(&headers(&[(
            "cache-control",
            "no-cache=\"set-cookie, x-user\", private=\"x-user\", public",
        )]));
        assert!(d.no_cache && d.private);
        assert!(!d.public, "private beats public");
    }

    #[test]
    fn repeated_directives_across_lines_resolve_to_the_most_restrictive() {
        let d = ResponseDirectives::parse(&headers(&[
            ("cache-control", "max-age=600"),
            ("cache-control", "max-age=60, s-maxage=100"),
            ("cache-control", "s-maxage=200"),
        ]));
        assert_eq!(d.max_age, secs(60));
        assert_eq!(d.s_maxage, secs(100));
        let r = RequestDirectives::parse(&headers(&[
            ("cache-control", "max-stale, min-fresh=5, max-age=50"),
            (
                "cache-control",
                "max-stale=20, min-fresh=10, max-age=40, max-stale=30",
            ),
        ]));
        assert_eq!(r.max_stale, Some(MaxStale::Limit(Duration::from_secs(20))));
        assert_eq!(r.min_fresh, secs(10));
        assert_eq!(r.max_age, secs(40));
    }

    #[test]
    fn invalid_arguments_read_as_their_most_restrictive_value() {
        let d = ResponseDirectives::parse(&headers(&[("cache-control", "max-age=ten")]));
        assert_eq!(d.max_age, secs(0), "invalid freshness is stale");
        let d = ResponseDirectives::parse(&headers(&[("cache-control", "max-age=-5, s-maxage")]));
        assert_eq!((d.max_age, d.s_maxage), (secs(0), secs(0)));
        let r =
            RequestDirectives::parse(&headers(&[("cache-control", "max-stale=x, min-fresh=1.5")]));
        assert_eq!(r.max_stale, Some(MaxStale::Limit(Duration::ZERO)));
        assert_eq!(r.min_fresh, secs(MAX_DELTA_SECONDS));
    }

    #[test]
    fn huge_numbers_saturate_at_two_to_the_31() {
        let d = ResponseDirectives::parse(&headers(&[(
            "cache-control",
            "max-age=99999999999999999999999",
        )]));
        assert_eq!(d.max_age, secs(1 << 31));
        assert_eq!(delta_seconds("2147483649"), Some(1 << 31));
        assert_eq!(delta_seconds("12"), Some(12));
        assert_eq!(delta_seconds("+12"), None);
        assert_eq!(delta_seconds(""), None);
    }

    #[test]
    fn request_directives() {
        let r = RequestDirectives::parse(&headers(&[(
            "cache-control",
            "no-cache, no-store, no-transform, only-if-cached, max-stale",
        )]));
        assert!(r.no_cache && r.no_store && r.no_transform && r.only_if_cached);
        assert_eq!(r.max_stale, Some(MaxStale::Any));
        assert_eq!(r.max_age, None);
    }

    #[test]
    fn pragma_no_cache_counts_only_without_cache_control() {
        let pragma = headers(&[("pragma", "No-Cache")]);
        assert!(RequestDirectives::parse(&pragma).no_cache);
        let both = headers(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]);
        assert!(!RequestDirectives::parse(&both).no_cache);
        assert!(!RequestDirectives::parse(&headers(&[("pragma", "x-other")])).no_cache);
    }

    #[test]
    fn lists_split_outside_quotes_with_escapes() {
        assert_eq!(
            split_list(r#" a , "b, \"c,\" d" ,, e "#),
            vec!["a", r#""b, \"c,\" d""#, "e"]
        );
        assert_eq!(unquote(r#""x\"y""#), "x\"y");
        assert_eq!(unquote("plain"), "plain");
    }
}
