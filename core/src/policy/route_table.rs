//! The route table of one service: every match of its routes, ordered by the Gateway API's
//! precedence (see `route_match`), with a path index so a lookup tests only the matches its
//! path can meet (pure: no I/O, no clock).

use std::cmp::Ordering;
use std::collections::HashMap;

use super::route_match::{MatchError, PathMatch, RequestView, RouteMatch};

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
    use http::{HeaderMap, HeaderName, HeaderValue, Method};

    use super::*;
    use crate::policy::route_match::ValueMatch;
    use crate::policy::route_match::test_helpers::*;

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
}
