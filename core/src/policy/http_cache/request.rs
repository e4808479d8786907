//! What the cache reads of an exchange, and which requests it leaves alone.
//!
//! Requests that bypass the cache (forwarded, answer neither served from nor put in the store):
//! - methods the route's rule does not cover (and anything but GET and HEAD);
//! - requests with `Authorization`, unless the rule allows them (then section 3.5 applies to
//!   the answer);
//! - conditional and range requests (`If-Match`, `If-None-Match`, `If-Modified-Since`,
//!   `If-Unmodified-Since`, `If-Range`, `Range`): the simplest correct choice. Answering them
//!   from the store would mean evaluating preconditions and slicing bodies, and their answers
//!   (304, 412, 206) describe that one request, not the resource, so they are not stored either;
//! - requests without an authority (no key).
//!
//! A request with `no-store` may still be answered from the store (section 5.2.1.5 forbids
//! storing only); its answer is not stored.

use http::header::{
    AUTHORIZATION, HeaderName, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, RANGE,
};
use http::{HeaderMap, Method, StatusCode, Uri};

use super::key::PrimaryKey;
use super::rule::CacheRule;

/// Request fields that make a request conditional or partial.
const CONDITIONAL: [HeaderName; 6] = [
    IF_MATCH,
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    IF_UNMODIFIED_SINCE,
    IF_RANGE,
    RANGE,
];

/// What the cache looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The target URI.
    pub uri: &'a Uri,
    /// The header fields.
    pub headers: &'a HeaderMap,
}

impl<'a> From<&'a http::request::Parts> for RequestHead<'a> {
    fn from(parts: &'a http::request::Parts) -> Self {
        Self {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
        }
    }
}

/// What the cache looks at in a response head.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    /// The status.
    pub status: StatusCode,
    /// The header fields.
    pub headers: &'a HeaderMap,
}

impl<'a> From<&'a http::response::Parts> for ResponseHead<'a> {
    fn from(parts: &'a http::response::Parts) -> Self {
        Self {
            status: parts.status,
            headers: &parts.headers,
        }
    }
}

/// Why a request goes past the cache untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// The rule does not cache this method.
    Method,
    /// It carries `Authorization` and the rule does not allow caching those.
    Authorization,
    /// It is conditional or asks for a range.
    Conditional,
    /// It names no authority, so it has no key.
    NoAuthority,
}

impl BypassReason {
    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Authorization => "authorization",
            Self::Conditional => "conditional",
            Self::NoAuthority => "no_authority",
        }
    }
}

/// Whether `request` bypasses the cache under `rule` (see the module doc), and why.
pub fn request_bypass(rule: &CacheRule, request: RequestHead<'_>) -> Option<BypassReason> {
    if !rule.covers(request.method)
        || !(request.method == Method::GET || request.method == Method::HEAD)
    {
        return Some(BypassReason::Method);
    }
    if !rule.allow_authorized && request.headers.contains_key(AUTHORIZATION) {
        return Some(BypassReason::Authorization);
    }
    if CONDITIONAL
        .iter()
        .any(|name| request.headers.contains_key(name))
    {
        return Some(BypassReason::Conditional);
    }
    if PrimaryKey::from_request(request.uri, request.headers).is_none() {
        return Some(BypassReason::NoAuthority);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bypass(rule: &CacheRule, method: Method, lines: &[(&str, &str)]) -> Option<BypassReason> {
        let mut b = http::Request::builder().method(method).uri("/a");
        for (name, value) in lines {
            b = b.header(*name, *value);
        }
        let (parts, ()) = b.body(()).unwrap().into_parts();
        request_bypass(rule, (&parts).into())
    }

    const HOST: (&str, &str) = ("host", "echo");

    #[test]
    fn get_and_head_with_an_authority_are_handled() {
        let rule = CacheRule::default();
        assert_eq!(bypass(&rule, Method::GET, &[HOST]), None);
        assert_eq!(bypass(&rule, Method::HEAD, &[HOST]), None);
        let no_store = [HOST, ("cache-control", "no-store")];
        assert_eq!(
            bypass(&rule, Method::GET, &no_store),
            None,
            "served, not stored"
        );
        assert_eq!(
            bypass(&rule, Method::GET, &[]),
            Some(BypassReason::NoAuthority)
        );
    }

    #[test]
    fn methods_outside_the_rule_bypass() {
        let rule = CacheRule::default();
        for m in [Method::POST, Method::PUT, Method::OPTIONS] {
            assert_eq!(bypass(&rule, m, &[HOST]), Some(BypassReason::Method));
        }
        let get_only = CacheRule {
            methods: vec!["GET".into()],
            ..CacheRule::default()
        };
        assert_eq!(
            bypass(&get_only, Method::HEAD, &[HOST]),
            Some(BypassReason::Method)
        );
        // An unvalidated rule naming POST still never caches it.
        let bad = CacheRule {
            methods: vec!["POST".into()],
            ..CacheRule::default()
        };
        assert_eq!(
            bypass(&bad, Method::POST, &[HOST]),
            Some(BypassReason::Method)
        );
    }

    #[test]
    fn authorization_bypasses_unless_the_rule_allows_it() {
        let auth = [HOST, ("authorization", "Bearer t")];
        assert_eq!(
            bypass(&CacheRule::default(), Method::GET, &auth),
            Some(BypassReason::Authorization)
        );
        let allow = CacheRule {
            allow_authorized: true,
            ..CacheRule::default()
        };
        assert_eq!(bypass(&allow, Method::GET, &auth), None);
    }

    #[test]
    fn conditional_and_range_requests_bypass() {
        let rule = CacheRule::default();
        for name in [
            "if-match",
            "if-none-match",
            "if-modified-since",
            "if-unmodified-since",
            "if-range",
            "range",
        ] {
            assert_eq!(
                bypass(&rule, Method::GET, &[HOST, (name, "x")]),
                Some(BypassReason::Conditional),
                "{name}"
            );
        }
    }

    #[test]
    fn heads_are_read_from_http_parts() {
        let (parts, ()) = http::Response::builder()
            .status(203)
            .header("etag", "\"v\"")
            .body(())
            .unwrap()
            .into_parts();
        let head = ResponseHead::from(&parts);
        assert_eq!(head.status, StatusCode::NON_AUTHORITATIVE_INFORMATION);
        assert_eq!(head.headers["etag"], "\"v\"");
    }
}
