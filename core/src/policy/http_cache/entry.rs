//! One stored answer: what is kept of it, what it costs in the byte budget, and the answer
//! built from it at each hit.
//!
//! - Kept: status, end-to-end header fields, body. Dropped before storing: hop-by-hop fields
//!   (`Connection` and the fields it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//!   `Transfer-Encoding`, `Upgrade`; RFC 9110 section 7.6.1), every `Proxy-*` field (RFC 9111
//!   section 3.1 forbids storing `Proxy-Authenticate`, `Proxy-Authentication-Info` and
//!   `Proxy-Authorization`; the others are hop-by-hop by nature), and `Age` (recomputed at
//!   each hit).
//! - Added: `Date` when the upstream sent none (RFC 9110 section 6.6.1), and, for a GET, the
//!   `Content-Length` of the buffered body, since a chunked answer lost its framing when
//!   `Transfer-Encoding` was dropped and a HEAD served from it must announce the GET's length.
//! - Size: body, key, secondary key, and each header field's name and value plus 32 bytes, the
//!   per-field overhead HPACK's table accounting uses (RFC 7541 section 4.1) for the map's own
//!   memory, so many small fields are not free.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AGE, CONNECTION, CONTENT_LENGTH, DATE, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use super::directives::ResponseDirectives;
use super::freshness::{self, age_header_seconds};
use super::key::{PrimaryKey, SecondaryKey};

/// Bytes counted per header field on top of its name and value.
pub const HEADER_OVERHEAD_BYTES: usize = 32;

/// Hop-by-hop fields besides `Connection` and those it names.
const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// An answer served from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedResponse {
    /// The stored status.
    pub status: StatusCode,
    /// The stored header fields with `Age` set.
    pub headers: HeaderMap,
    /// The stored body; empty for a HEAD.
    pub body: Bytes,
    /// The answer's current age (what `Age` says, before rounding down to seconds).
    pub age: Duration,
}

/// A stored answer.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) key: PrimaryKey,
    pub(crate) secondary: SecondaryKey,
    /// Stored from a HEAD: serves only HEADs.
    pub(crate) from_head: bool,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) directives: ResponseDirectives,
    pub(crate) freshness_lifetime: Duration,
    pub(crate) corrected_initial_age: Duration,
    pub(crate) response_time: SystemTime,
    /// The answer's date, to prefer the most recent of several matches (RFC 9111 4.1).
    pub(crate) date: SystemTime,
    pub(crate) size: usize,
}

impl Entry {
    /// The age at `now`.
    pub(crate) fn current_age(&self, now: SystemTime) -> Duration {
        freshness::current_age(self.corrected_initial_age, self.response_time, now)
    }

    /// The answer for a request at `now`; `head` drops the body.
    pub(crate) fn serve(&self, now: SystemTime, head: bool) -> CachedResponse {
        let age = self.current_age(now);
        let mut headers = self.headers.clone();
        headers.insert(AGE, HeaderValue::from(age_header_seconds(age)));
        CachedResponse {
            status: self.status,
            headers,
            body: if head {
                Bytes::new()
            } else {
                self.body.clone()
            },
            age,
        }
    }
}

/// The header fields kept of an answer (see the module doc).
pub(crate) fn stored_headers(
    upstream: &HeaderMap,
    body_len: usize,
    from_head: bool,
    response_time: SystemTime,
) -> HeaderMap {
    let nominated: Vec<HeaderName> = upstream
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut kept = HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        let dropped = name == CONNECTION
            || name == AGE
            || nominated.contains(name)
            || HOP_BY_HOP.contains(&name.as_str())
            || name.as_str().starts_with("proxy-");
        if !dropped {
            kept.append(name.clone(), value.clone());
        }
    }
    if freshness_date_missing(&kept)
        && let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(response_time))
    {
        kept.insert(DATE, date);
    }
    if !from_head {
        kept.insert(CONTENT_LENGTH, HeaderValue::from(body_len));
    }
    kept
}

/// Whether `Date` is absent or unreadable (then it is replaced by the arrival time).
fn freshness_date_missing(headers: &HeaderMap) -> bool {
    headers
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| httpdate::parse_http_date(v.trim()).is_err())
}

/// Bytes an entry takes in the store's budget (see the module doc).
pub(crate) fn entry_size(
    key: &PrimaryKey,
    secondary: &SecondaryKey,
    headers: &HeaderMap,
    body: &Bytes,
) -> usize {
    let fields: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + HEADER_OVERHEAD_BYTES)
        .sum();
    key.size() + secondary.size() + fields + body.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn hop_by_hop_and_proxy_fields_are_not_stored() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authentication-info", "x"),
            ("proxy-x", "x"),
            ("age", "10"),
            ("content-type", "text/plain"),
            ("etag", "\"v1\""),
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ] {
            h.append(name, HeaderValue::from_static(value));
        }
        let kept = stored_headers(&h, 5, false, at(0));
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "etag", "date", "content-length"]);
        assert_eq!(kept[CONTENT_LENGTH], "5");
        assert_eq!(kept[DATE], "Sun, 06 Nov 1994 08:49:37 GMT", "kept as sent");
    }

    #[test]
    fn a_missing_date_is_the_arrival_and_a_head_keeps_its_length() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("42"));
        h.insert(DATE, HeaderValue::from_static("not a date"));
        let kept = stored_headers(&h, 0, true, at(784_111_777));
        assert_eq!(kept[DATE], "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(kept[CONTENT_LENGTH], "42", "a HEAD's length is the GET's");
    }

    #[test]
    fn the_size_counts_body_key_and_fields() {
        let key = PrimaryKey::new("http", "echo", "/a").unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("12"));
        let body = Bytes::from_static(b"hello");
        assert_eq!(
            entry_size(&key, &SecondaryKey::default(), &h, &body),
            ("http".len() + "echo".len() + "/a".len()) + (3 + 2 + 32) + 5
        );
    }

    #[test]
    fn a_served_answer_carries_its_age_and_a_head_no_body() {
        let entry = Entry {
            key: PrimaryKey::new("http", "echo", "/").unwrap(),
            secondary: SecondaryKey::default(),
            from_head: false,
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"body"),
            directives: ResponseDirectives::default(),
            freshness_lifetime: Duration::from_secs(60),
            corrected_initial_age: Duration::from_secs(5),
            response_time: at(100),
            date: at(100),
            size: 0,
        };
        let get = entry.serve(at(110) + Duration::from_millis(700), false);
        assert_eq!(get.headers[AGE], "15");
        assert_eq!(get.age, Duration::from_millis(15_700));
        assert_eq!(get.body, "body");
        assert!(entry.serve(at(110), true).body.is_empty());
    }
}
