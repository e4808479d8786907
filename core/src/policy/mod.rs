//! The traffic policy model (issue 11), pure and validated: what the controller compiles from
//! `HTTPRoute`s and our policy objects and what sidecars apply per request. Built so far:
//!
//! - `route_match.rs`: the Gateway API's `HTTPRouteMatch` (path Exact / PathPrefix by whole
//!   segments / RegularExpression, headers, query parameters, method), checked when built;
//! - `route_table.rs`: a service's matches in the Gateway API's precedence order, indexed by
//!   path.
//!
//! Not built yet: filters, weighted backends, per-route timeouts and retries, rate limits, cache
//! rules, fault rules, backend policy, their sources (files, `HTTPRoute` watchers) and the
//! sidecar layers that apply them.

pub mod route_match;
pub mod route_table;
