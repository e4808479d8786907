//! Request matching as the Gateway API's `HTTPRoute` defines it, and the precedence between
//! matches (pure: no I/O, no clock).
//!
//! - A [`RouteMatch`] is one `matches[]` entry: every field it sets must hold (AND); a rule's
//!   matches are alternatives (OR), so a rule contributes one table entry per match.
//! - `PathPrefix` compares whole path elements: `/abc` matches `/abc`, `/abc/` and `/abc/def`,
//!   never `/abcd`; a trailing `/` of the prefix is ignored. Header names compare without case,
//!   values with it; query parameter names and values with case.
//! - [`RouteTable::find`] returns the entry of highest precedence that matches: an Exact path,
//!   then the longest prefix, then a method, then the most header matches, then the most query
//!   matches; regular-expression paths (whose precedence the spec leaves to implementations)
//!   rank after every prefix, longer patterns first. Ties go to the oldest route, then
//!   `<namespace>/<name>` alphabetically, then the first rule and match.
//! - Regular expressions are compiled once, anchored to the whole value, with a size bound:
//!   the `regex` crate matches in linear time, so the only cost to bound is the compiled size.

use std::cmp::Ordering;
use std::collections::HashMap;

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
    fn rank(&self) -> (u8, usize, bool, usize, usize) {
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

/// Where a match comes from, for the precedence ties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchOrigin {
    /// The route's creation time (Unix seconds): older first.
    pub created: i64,
    /// `<namespace>/<name>` of the route: alphabetical.
    pub route: String,
    /// The rule's index in the route, then the match's in the rule: first first.
    pub rule: usize,
    /// The match's index in its rule.
    pub index: usize,
}

/// Matches of every route of one service, in precedence order, each with what it leads to,
/// indexed by path: a lookup only tests the entries whose path can match (the exact path, each
/// leading run of the path's elements, and the regular expressions), in precedence order, so
/// its cost grows with the path's depth and the matches that share it, not with the table.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    entries: Vec<(RouteMatch, MatchOrigin, T)>,
    /// Entries with an `Exact` path, by path.
    exact: HashMap<String, Vec<usize>>,
    /// Entries with a `PathPrefix` (or no path: `/`), by prefix.
    prefix: HashMap<String, Vec<usize>>,
    /// Entries with a regular-expression path.
    regex: Vec<usize>,
}

impl<T> RouteTable<T> {
    /// Orders `entries` by the Gateway API's precedence; each match is validated.
    pub fn new(mut entries: Vec<(RouteMatch, MatchOrigin, T)>) -> Result<Self, MatchError> {
        for (m, origin, _) in &entries {
            m.validate().map_err(|e| MatchError {
                field: format!(
                    "{} rules[{}].matches[{}].{}",
                    origin.route, origin.rule, origin.index, e.field
                ),
                reason: e.reason,
            })?;
        }
        entries.sort_by(|(a, ao, _), (b, bo, _)| precedence(a, ao, b, bo));
        let mut table = Self {
            entries,
            exact: HashMap::new(),
            prefix: HashMap::new(),
            regex: Vec::new(),
        };
        for (i, (m, _, _)) in table.entries.iter().enumerate() {
            match &m.path {
                Some(PathMatch::Exact(p)) => table.exact.entry(p.clone()).or_default().push(i),
                Some(PathMatch::Prefix(p)) => table.prefix.entry(p.clone()).or_default().push(i),
                None => table.prefix.entry("/".into()).or_default().push(i),
                Some(PathMatch::Regex(_)) => table.regex.push(i),
            }
        }
        Ok(table)
    }

    /// What the highest-precedence match that holds for `req` leads to; `None`: no route
    /// matches (the Gateway API answers 404).
    pub fn find(&self, req: &RequestView<'_>) -> Option<&T> {
        let mut candidates: Vec<usize> = Vec::new();
        let mut take = |found: Option<&Vec<usize>>| candidates.extend(found.into_iter().flatten());
        take(self.exact.get(req.path));
        take(self.prefix.get("/"));
        // Every leading run of whole elements: `/a`, `/a/b`, ... (a trailing `/` adds none).
        for (i, _) in req.path.match_indices('/').skip(1) {
            take(self.prefix.get(&req.path[..i]));
        }
        if req.path.len() > 1 && !req.path.ends_with('/') {
            take(self.prefix.get(req.path));
        }
        candidates.extend(&self.regex);
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .into_iter()
            .map(|i| &self.entries[i])
            .find(|(m, _, _)| m.matches(req))
            .map(|(_, _, t)| t)
    }

    /// The same answer as [`find`](Self::find) by testing every entry in precedence order:
    /// the baseline the index is checked and measured against.
    pub fn find_by_scan(&self, req: &RequestView<'_>) -> Option<&T> {
        self.entries
            .iter()
            .find(|(m, _, _)| m.matches(req))
            .map(|(_, _, t)| t)
    }

    /// How many matches the table holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds no match.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `Less` when `a` goes before `b`.
fn precedence(a: &RouteMatch, ao: &MatchOrigin, b: &RouteMatch, bo: &MatchOrigin) -> Ordering {
    b.rank()
        .cmp(&a.rank())
        .then(ao.created.cmp(&bo.created))
        .then_with(|| ao.route.cmp(&bo.route))
        .then(ao.rule.cmp(&bo.rule))
        .then(ao.index.cmp(&bo.index))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn view<'a>(method: &'a Method, uri: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
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

    fn path(m: PathMatch) -> RouteMatch {
        RouteMatch {
            path: Some(m),
            ..RouteMatch::default()
        }
    }

    fn origin(route: &str, created: i64, rule: usize) -> MatchOrigin {
        MatchOrigin {
            created,
            route: route.into(),
            rule,
            index: 0,
        }
    }

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
    fn precedence_follows_the_gateway_api() {
        let entries = vec![
            (
                path(PathMatch::prefix("/").unwrap()),
                origin("a/root", 1, 0),
                "root",
            ),
            (
                path(PathMatch::prefix("/api").unwrap()),
                origin("a/api", 1, 0),
                "api",
            ),
            (
                path(PathMatch::prefix("/api/v2").unwrap()),
                origin("a/v2", 5, 0),
                "v2",
            ),
            (
                path(PathMatch::exact("/api/v2/health").unwrap()),
                origin("z/h", 9, 0),
                "health",
            ),
            (
                RouteMatch {
                    method: Some(Method::POST),
                    ..path(PathMatch::prefix("/api").unwrap())
                },
                origin("b/post", 9, 0),
                "api-post",
            ),
            (
                RouteMatch {
                    headers: vec![(
                        HeaderName::from_static("x-canary"),
                        ValueMatch::Exact("yes".into()),
                    )],
                    ..path(PathMatch::prefix("/api").unwrap())
                },
                origin("c/canary", 9, 0),
                "api-canary",
            ),
            (
                path(PathMatch::regex("/api/.*").unwrap()),
                origin("d/re", 0, 0),
                "regex",
            ),
        ];
        let table = RouteTable::new(entries).unwrap();
        let h = HeaderMap::new();
        let mut canary = HeaderMap::new();
        canary.insert("x-canary", HeaderValue::from_static("yes"));
        let (get, post) = (Method::GET, Method::POST);
        assert_eq!(
            table.find(&view(&get, "/api/v2/health", &h)),
            Some(&"health")
        );
        assert_eq!(
            table.find(&view(&get, "/api/v2/x", &h)),
            Some(&"v2"),
            "longest prefix"
        );
        assert_eq!(
            table.find(&view(&post, "/api/x", &canary)),
            Some(&"api-post"),
            "method before headers"
        );
        assert_eq!(
            table.find(&view(&get, "/api/x", &canary)),
            Some(&"api-canary")
        );
        assert_eq!(
            table.find(&view(&get, "/api/x", &h)),
            Some(&"api"),
            "prefix before regex"
        );
        assert_eq!(table.find(&view(&get, "/other", &h)), Some(&"root"));
    }

    #[test]
    fn ties_go_to_the_oldest_route_then_the_name_then_the_rule() {
        let m = || path(PathMatch::prefix("/x").unwrap());
        let table = RouteTable::new(vec![
            (m(), origin("b/newer", 20, 0), "newer"),
            (m(), origin("b/older", 10, 1), "older-rule-1"),
            (m(), origin("b/older", 10, 0), "older-rule-0"),
            (m(), origin("a/older", 10, 3), "a-older"),
        ])
        .unwrap();
        let h = HeaderMap::new();
        assert_eq!(table.find(&view(&Method::GET, "/x", &h)), Some(&"a-older"));
        assert_eq!(table.len(), 4);
        let empty: RouteTable<()> = RouteTable::new(vec![]).unwrap();
        assert!(empty.is_empty());
        assert_eq!(
            empty.find(&view(&Method::GET, "/x", &h)),
            None,
            "no match: 404"
        );
    }

    #[test]
    fn the_index_answers_as_a_scan_of_every_entry_does() {
        let mut entries = Vec::new();
        let paths = ["/", "/a", "/a/b", "/a/b/c", "/ab", "/a/bc", "/x/y"];
        for (n, p) in paths.iter().enumerate() {
            entries.push((
                path(PathMatch::prefix(p).unwrap()),
                origin("r/p", n as i64, 0),
                n,
            ));
            entries.push((
                path(PathMatch::exact(p).unwrap()),
                origin("r/e", n as i64, 0),
                100 + n,
            ));
        }
        entries.push((
            path(PathMatch::regex("/a/.*/c").unwrap()),
            origin("r/x", 0, 0),
            200,
        ));
        entries.push((
            RouteMatch {
                method: Some(Method::DELETE),
                ..RouteMatch::default()
            },
            origin("r/m", 0, 0),
            300,
        ));
        let table = RouteTable::new(entries).unwrap();
        let h = HeaderMap::new();
        for method in [Method::GET, Method::DELETE] {
            for p in [
                "/", "/a", "/a/", "/a/b", "/a/b/", "/a/b/c", "/a/b/c/d", "/a/z/c", "/ab", "/abc",
                "/a/bc", "/a/bcd", "/x/y/z", "/x", "/q//r",
            ] {
                let req = view(&method, p, &h);
                assert_eq!(table.find(&req), table.find_by_scan(&req), "{method} {p}");
            }
        }
        assert_eq!(
            table.find(&view(&Method::GET, "/a/b/", &h)),
            Some(&2),
            "prefix /a/b"
        );
        assert_eq!(
            table.find(&view(&Method::GET, "/a/b", &h)),
            Some(&102),
            "exact first"
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
