//! Request matching as the Gateway API's `HTTPRoute` defines it, and the precedence between
//! matches (pure: no I/O, no clock).
//!
//! - A [`RouteMatch`] is one `matches[]` entry: every field it sets must hold (AND); a rule's
//!   matches are alternatives (OR), so a rule contributes one table entry per match.
//! - `PathPrefix` compares whole path elements: `/abc` matches `/abc`, `/abc/` and `/abc/def`,
//!   never `/abcd`; a trailing `/` of the prefix is ignored. Header names compare without case,
//!   values with it; query parameter names and values with case.
//! - [`RouteTable::find`](super::route_table::RouteTable::find) returns the entry of highest precedence that matches: an Exact path,
//!   then the longest prefix, then a method, then the most header matches, then the most query
//!   matches; regular-expression paths (whose precedence the spec leaves to implementations)
//!   rank after every prefix, longer patterns first. Ties go to the oldest route, then
//!   `<namespace>/<name>` alphabetically, then the first rule and match.
//! - Regular expressions are compiled once, anchored to the whole value, with a size bound:
//!   the `regex` crate matches in linear time, so the only cost to bound is the compiled size.

use http::{HeaderMap, HeaderName, Method};

/// Most header or query-parameter matches in one match (the Gateway API's limit).
pub const MAX_FIELD_MATCHES: usize = 16;
/// Largest compiled regular expression: a pattern beyond it is refused as too costly.
const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// Why a match cannot be built; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct MatchError {
    /// The field, as the route spells it (`path.value`, `headers[2].name`, ...).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn error(field: impl Into<String>, reason: impl Into<String>) -> MatchError {
    MatchError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A regular expression matching a whole value.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

impl Pattern {
    /// Compiles `source` (anchored to the whole value) within the size bound.
    pub fn new(source: &str, field: &str) -> Result<Self, MatchError> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => error(
                    field,
                    format!("the regular expression {source:?} is too costly (over {limit} bytes compiled)"),
                ),
                other => error(
                    field,
                    format!("{source:?} is not a valid regular expression: {other}"),
                ),
            })?;
        Ok(Self {
            source: source.to_string(),
            regex,
        })
    }

    fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

/// How a request's path is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The whole path, exactly.
    Exact(String),
    /// Whole leading path elements (`/` matches every path).
    Prefix(String),
    /// A regular expression over the whole path.
    Regex(Pattern),
}

impl PathMatch {
    /// An `Exact` path match; the value must be an absolute path without query or fragment.
    pub fn exact(value: &str) -> Result<Self, MatchError> {
        check_path(value)?;
        Ok(Self::Exact(value.to_string()))
    }

    /// A `PathPrefix` match; a trailing `/` is ignored.
    pub fn prefix(value: &str) -> Result<Self, MatchError> {
        check_path(value)?;
        let trimmed = value.trim_end_matches('/');
        Ok(Self::Prefix(if trimmed.is_empty() {
            "/".to_string()
        } else {
            trimmed.to_string()
        }))
    }

    /// A `RegularExpression` path match.
    pub fn regex(value: &str) -> Result<Self, MatchError> {
        Ok(Self::Regex(Pattern::new(value, "path.value")?))
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) if p == "/" => true,
            Self::Prefix(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            Self::Regex(r) => r.is_match(path),
        }
    }
}

fn check_path(value: &str) -> Result<(), MatchError> {
    if !value.starts_with('/') {
        return Err(error(
            "path.value",
            format!("{value:?} must start with '/'"),
        ));
    }
    if value.contains(['?', '#']) || value.contains("//") {
        return Err(error(
            "path.value",
            format!("{value:?} must be a plain path (no '?', '#' or '//')"),
        ));
    }
    Ok(())
}

/// How a header or query parameter's value is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueMatch {
    /// Exactly this value.
    Exact(String),
    /// A regular expression over the whole value.
    Regex(Pattern),
}

impl ValueMatch {
    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(v) => v == value,
            Self::Regex(r) => r.is_match(value),
        }
    }
}

/// One `matches[]` entry of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteMatch {
    /// The path; `None` is the Gateway API's default, `PathPrefix /`.
    pub path: Option<PathMatch>,
    /// Headers that must be present with matching values (names compare without case).
    pub headers: Vec<(HeaderName, ValueMatch)>,
    /// Query parameters that must be present with matching values (the first occurrence).
    pub query: Vec<(String, ValueMatch)>,
    /// The method, when set.
    pub method: Option<Method>,
}

/// What matching looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path, without the query.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The headers.
    pub headers: &'a HeaderMap,
}

impl RouteMatch {
    /// Checks the limits the Gateway API sets (at most 16 header and 16 query matches, no
    /// name twice).
    pub fn validate(&self) -> Result<(), MatchError> {
        if self.headers.len() > MAX_FIELD_MATCHES {
            return Err(error(
                "headers",
                format!("at most {MAX_FIELD_MATCHES} header matches"),
            ));
        }
        if self.query.len() > MAX_FIELD_MATCHES {
            return Err(error(
                "queryParams",
                format!("at most {MAX_FIELD_MATCHES} query parameter matches"),
            ));
        }
        for (i, (name, _)) in self.headers.iter().enumerate() {
            if self.headers[..i].iter().any(|(n, _)| n == name) {
                return Err(error(
                    format!("headers[{i}].name"),
                    format!("{name} is matched twice"),
                ));
            }
        }
        for (i, (name, _)) in self.query.iter().enumerate() {
            if name.is_empty() {
                return Err(error(format!("queryParams[{i}].name"), "is empty"));
            }
            if self.query[..i].iter().any(|(n, _)| n == name) {
                return Err(error(
                    format!("queryParams[{i}].name"),
                    format!("{name} is matched twice"),
                ));
            }
        }
        Ok(())
    }

    /// Whether `req` satisfies every field.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some(method) = &self.method
            && method != req.method
        {
            return false;
        }
        if let Some(path) = &self.path
            && !path.matches(req.path)
        {
            return false;
        }
        let headers_hold = self.headers.iter().all(|(name, want)| {
            req.headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| want.matches(v))
        });
        headers_hold
            && self
                .query
                .iter()
                .all(|(name, want)| query_value(req.query, name).is_some_and(|v| want.matches(v)))
    }

    /// The precedence key within the match's own fields (higher first).
    pub(crate) fn rank(&self) -> (u8, usize, bool, usize, usize) {
        let (class, length) = match &self.path {
            Some(PathMatch::Exact(p)) => (3, p.len()),
            Some(PathMatch::Prefix(p)) => (2, p.len()),
            None => (2, 1),
            Some(PathMatch::Regex(r)) => (1, r.source.len()),
        };
        (
            class,
            length,
            self.method.is_some(),
            self.headers.len(),
            self.query.len(),
        )
    }
}

/// The first value of query parameter `name` (not percent-decoded: the Gateway API compares
/// the raw value).
fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
        .next()
}

/// Builders the tests of this module and of the route table share.
#[cfg(test)]
pub(crate) mod test_helpers {
    use super::super::route_table::MatchOrigin;
    use super::*;

    pub(crate) fn view<'a>(
        method: &'a Method,
        uri: &'a str,
        headers: &'a HeaderMap,
    ) -> RequestView<'a> {
        let (path, query) = match uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (uri, None),
        };
        RequestView {
            method,
            path,
            query,
            headers,
        }
    }

    pub(crate) fn path(m: PathMatch) -> RouteMatch {
        RouteMatch {
            path: Some(m),
            ..RouteMatch::default()
        }
    }

    pub(crate) fn origin(route: &str, created: i64, rule: usize) -> MatchOrigin {
        MatchOrigin {
            created,
            route: route.into(),
            rule,
            index: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::test_helpers::*;
    use super::*;
    use crate::policy::route_table::RouteTable;

    #[test]
    fn prefixes_match_whole_path_elements() {
        let get = Method::GET;
        let h = HeaderMap::new();
        let m = path(PathMatch::prefix("/abc/").unwrap());
        for ok in ["/abc", "/abc/", "/abc/def"] {
            assert!(m.matches(&view(&get, ok, &h)), "{ok}");
        }
        for no in ["/abcd", "/ab", "/", "/xabc"] {
            assert!(!m.matches(&view(&get, no, &h)), "{no}");
        }
        let root = path(PathMatch::prefix("/").unwrap());
        assert!(root.matches(&view(&get, "/anything/at/all", &h)));
        let exact = path(PathMatch::exact("/abc").unwrap());
        assert!(exact.matches(&view(&get, "/abc", &h)));
        assert!(!exact.matches(&view(&get, "/abc/", &h)));
        let regex = path(PathMatch::regex("/v[0-9]+/.*").unwrap());
        assert!(regex.matches(&view(&get, "/v2/users", &h)));
        assert!(!regex.matches(&view(&get, "/x/v2/users", &h)), "anchored");
    }

    #[test]
    fn every_field_of_a_match_must_hold() {
        let m = RouteMatch {
            path: Some(PathMatch::prefix("/api").unwrap()),
            headers: vec![(
                HeaderName::from_static("x-canary"),
                ValueMatch::Exact("yes".into()),
            )],
            query: vec![(
                "v".into(),
                ValueMatch::Regex(Pattern::new("[0-9]+", "q").unwrap()),
            )],
            method: Some(Method::POST),
        };
        let mut h = HeaderMap::new();
        h.insert("X-Canary", HeaderValue::from_static("yes"));
        let post = Method::POST;
        assert!(m.matches(&view(&post, "/api/x?a=1&v=12", &h)));
        assert!(!m.matches(&view(&Method::GET, "/api/x?v=12", &h)), "method");
        assert!(!m.matches(&view(&post, "/api/x?v=1x", &h)), "query regex");
        assert!(!m.matches(&view(&post, "/api/x", &h)), "query missing");
        assert!(!m.matches(&view(&post, "/apix?v=1", &h)), "path");
        let mut other = HeaderMap::new();
        other.insert("x-canary", HeaderValue::from_static("YES"));
        assert!(
            !m.matches(&view(&post, "/api?v=1", &other)),
            "values keep case"
        );
    }

    #[test]
    fn bad_matches_are_refused_naming_the_field() {
        assert_eq!(PathMatch::exact("abc").unwrap_err().field, "path.value");
        assert!(PathMatch::prefix("/a?b").is_err());
        assert!(PathMatch::prefix("/a//b").is_err());
        let bad = PathMatch::regex("/(unclosed").unwrap_err();
        assert!(
            bad.reason.contains("not a valid regular expression"),
            "{bad}"
        );
        let costly = PathMatch::regex("(a{1,200}){1,200}").unwrap_err();
        assert!(costly.reason.contains("too costly"), "{costly}");
        let twice = RouteMatch {
            headers: vec![
                (
                    HeaderName::from_static("x-a"),
                    ValueMatch::Exact("1".into()),
                ),
                (
                    HeaderName::from_static("x-a"),
                    ValueMatch::Exact("2".into()),
                ),
            ],
            ..RouteMatch::default()
        };
        let err = RouteTable::new(vec![(twice, origin("demo/r", 0, 2), ())]).unwrap_err();
        assert_eq!(err.field, "demo/r rules[2].matches[0].headers[1].name");
        let many = RouteMatch {
            query: (0..17)
                .map(|i| (format!("q{i}"), ValueMatch::Exact("1".into())))
                .collect(),
            ..RouteMatch::default()
        };
        assert_eq!(many.validate().unwrap_err().field, "queryParams");
    }
}
