//! The router of one service (pure): its policy's rules compiled (matches into a
//! [`RouteTable`], filters checked), the rule of each request, and the backend of each request
//! by weight. Sidecars build one per service from the snapshot's [`ServicePolicy`]; the
//! controller builds the same to refuse what a sidecar could not use.

use std::sync::Arc;

use super::filters::{FilterError, Redirect, RouteFilter};
use super::route_match::{MatchError, PathMatch, RequestView, RouteMatch};
use super::route_table::{MatchOrigin, RouteTable};
use super::service_policy::{RouteRule, RuleBackend, ServicePolicy};

/// Why a policy cannot be compiled; names the rule and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RuleError {
    /// Rule and field (`demo/echo-split/rules[0].backendRefs`).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// A rule ready to apply.
#[derive(Debug)]
pub struct CompiledRule {
    /// The rule as distributed (origin, backends, timeouts, retries).
    pub rule: RouteRule,
    /// Its filters, checked.
    pub filters: Vec<RouteFilter>,
    /// The sum of its backends' weights (above 0).
    total_weight: u64,
}

impl CompiledRule {
    /// Checks and compiles `rule`, whose route is in `namespace`.
    pub fn new(rule: RouteRule, namespace: &str) -> Result<Self, RuleError> {
        let at = |field: &str| format!("{}.{field}", rule.origin);
        let filters = rule
            .filters
            .iter()
            .enumerate()
            .map(|(i, f)| RouteFilter::new(f, namespace, &format!("filters[{i}]")))
            .collect::<Result<Vec<_>, FilterError>>()
            .map_err(|e| RuleError {
                field: at(&e.field),
                reason: e.reason,
            })?;
        let redirects = filters
            .iter()
            .filter(|f| matches!(f, RouteFilter::Redirect(_)))
            .count();
        let rewrites = filters
            .iter()
            .filter(|f| matches!(f, RouteFilter::Rewrite(_)))
            .count();
        if redirects + rewrites > 1 {
            return Err(RuleError {
                field: at("filters"),
                reason: "at most one RequestRedirect or URLRewrite, and not both".into(),
            });
        }
        if rule.backends.is_empty() {
            return Err(RuleError {
                field: at("backendRefs"),
                reason: "no backend".into(),
            });
        }
        let total_weight: u64 = rule.backends.iter().map(|b| u64::from(b.weight)).sum();
        if total_weight == 0 {
            return Err(RuleError {
                field: at("backendRefs"),
                reason: "the weights sum to zero: no request could go anywhere".into(),
            });
        }
        if let (Some(request), Some(backend)) = (rule.request_timeout, rule.backend_timeout)
            && !request.is_zero()
            && backend > request
        {
            return Err(RuleError {
                field: at("timeouts.backendRequest"),
                reason: format!("{backend:?} is longer than timeouts.request ({request:?})"),
            });
        }
        Ok(Self {
            rule,
            filters,
            total_weight,
        })
    }

    /// The backend for a roll in `0..u64::MAX` (uniform): each gets weight / sum of the rolls.
    pub fn backend_for(&self, roll: u64) -> &RuleBackend {
        let mut point = roll % self.total_weight;
        for b in &self.rule.backends {
            let w = u64::from(b.weight);
            if point < w {
                return b;
            }
            point -= w;
        }
        // Unreachable: the weights sum to `total_weight`, above `point`.
        &self.rule.backends[self.rule.backends.len() - 1]
    }

    /// The redirect the rule answers with, if it has one.
    pub fn redirect(&self) -> Option<&Redirect> {
        self.filters.iter().find_map(|f| match f {
            RouteFilter::Redirect(r) => Some(r),
            _ => None,
        })
    }
}

/// The rule a request matched, and the path prefix its match named (for prefix rewrites).
#[derive(Debug, Clone)]
pub struct Matched<'a> {
    /// The rule.
    pub rule: &'a Arc<CompiledRule>,
    /// The `PathPrefix` of the match, when it had one.
    pub prefix: Option<&'a str>,
}

/// The routes of one service.
#[derive(Debug)]
pub struct Router {
    table: RouteTable<(Arc<CompiledRule>, Option<String>)>,
}

impl Router {
    /// Compiles `policy` for a service in `namespace`.
    pub fn new(policy: &ServicePolicy, namespace: &str) -> Result<Self, RuleError> {
        let mut entries = Vec::new();
        for rule in &policy.rules {
            let origin = rule.origin.clone();
            let matches: Vec<RouteMatch> = if rule.matches.is_empty() {
                vec![RouteMatch::default()]
            } else {
                rule.matches
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        m.compile().map_err(|e: MatchError| RuleError {
                            field: format!("{origin}.matches[{i}].{}", e.field),
                            reason: e.reason,
                        })
                    })
                    .collect::<Result<_, _>>()?
            };
            let compiled = Arc::new(CompiledRule::new(rule.clone(), namespace)?);
            for (index, m) in matches.into_iter().enumerate() {
                let prefix = match &m.path {
                    Some(PathMatch::Prefix(p)) => Some(p.clone()),
                    None => Some("/".to_string()),
                    _ => None,
                };
                let uses_prefix = compiled.filters.iter().any(|f| match f {
                    RouteFilter::Redirect(r) => {
                        matches!(r.path, Some(super::filters::PathChange::Prefix(_)))
                    }
                    RouteFilter::Rewrite(r) => {
                        matches!(r.path, Some(super::filters::PathChange::Prefix(_)))
                    }
                    _ => false,
                });
                if uses_prefix && prefix.is_none() {
                    return Err(RuleError {
                        field: format!("{origin}.matches[{index}].path"),
                        reason:
                            "ReplacePrefixMatch needs every match of its rule to be a PathPrefix"
                                .into(),
                    });
                }
                let match_origin = MatchOrigin {
                    created: origin.created,
                    route: origin.route.clone(),
                    rule: origin.index,
                    index,
                };
                entries.push((m, match_origin, (compiled.clone(), prefix)));
            }
        }
        let table = RouteTable::new(entries).map_err(|e| RuleError {
            field: e.field,
            reason: e.reason,
        })?;
        Ok(Self { table })
    }

    /// The rule of `req`; `None`: no rule matches (404).
    pub fn route(&self, req: &RequestView<'_>) -> Option<Matched<'_>> {
        self.table.find(req).map(|(rule, prefix)| Matched {
            rule,
            prefix: prefix.as_deref(),
        })
    }

    /// How many matches the table holds.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Method};

    use super::*;
    use crate::names::ServiceKey;
    use crate::policy::service_policy::RuleOrigin;

    fn rule(route: &str, yaml_matches: &str, backends: &[(&str, u32)]) -> RouteRule {
        RouteRule {
            origin: RuleOrigin {
                route: format!("demo/{route}"),
                created: 0,
                index: 0,
                name: None,
            },
            matches: serde_saphyr::from_str(yaml_matches).unwrap(),
            filters: Vec::new(),
            backends: backends
                .iter()
                .map(|(s, w)| RuleBackend {
                    service: ServiceKey::new(s, "demo").unwrap(),
                    weight: *w,
                    invalid: None,
                })
                .collect(),
            request_timeout: None,
            backend_timeout: None,
            retry: None,
            fault: None,
            rate_limit: None,
            cache: None,
        }
    }

    fn view<'a>(path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            method: &Method::GET,
            path,
            query: None,
            headers,
        }
    }

    #[test]
    fn routes_by_precedence_and_answers_none_when_nothing_matches() {
        let policy = ServicePolicy {
            rules: vec![
                rule(
                    "a",
                    "[{path: {type: PathPrefix, value: /api}}]",
                    &[("v1", 1)],
                ),
                rule("b", "[{path: {type: Exact, value: /api/v2}}]", &[("v2", 1)]),
            ],
            ..Default::default()
        };
        let router = Router::new(&policy, "demo").unwrap();
        let h = HeaderMap::new();
        let to = |p| {
            router
                .route(&view(p, &h))
                .map(|m| m.rule.rule.backends[0].service.name.clone())
        };
        assert_eq!(to("/api/v2").as_deref(), Some("v2"));
        assert_eq!(to("/api/v1").as_deref(), Some("v1"));
        assert_eq!(to("/other"), None);
    }

    #[test]
    fn weights_split_in_proportion() {
        let compiled = CompiledRule::new(
            rule("s", "[]", &[("echo", 90), ("echo-canary", 10)]),
            "demo",
        )
        .unwrap();
        let canary = (0..1000u64)
            .filter(|roll| compiled.backend_for(*roll).service.name == "echo-canary")
            .count();
        assert_eq!(canary, 100);
    }

    #[test]
    fn bad_rules_are_refused_with_their_field() {
        let e = CompiledRule::new(rule("z", "[]", &[("echo", 0)]), "demo").unwrap_err();
        assert_eq!(e.field, "demo/z/rules[0].backendRefs");
        let mut timeouts = rule("t", "[]", &[("echo", 1)]);
        timeouts.request_timeout = Some(std::time::Duration::from_secs(1));
        timeouts.backend_timeout = Some(std::time::Duration::from_secs(2));
        let e = CompiledRule::new(timeouts, "demo").unwrap_err();
        assert_eq!(e.field, "demo/t/rules[0].timeouts.backendRequest");
        let e = Router::new(
            &ServicePolicy {
                rules: vec![rule(
                    "r",
                    "[{path: {type: RegularExpression, value: '('}}]",
                    &[("echo", 1)],
                )],
                ..Default::default()
            },
            "demo",
        )
        .unwrap_err();
        assert_eq!(e.field, "demo/r/rules[0].matches[0].path.value");
    }
}
