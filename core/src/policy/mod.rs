//! The traffic policy model (issue 11), pure and validated: what the controller compiles from
//! `HTTPRoute`s and our policy objects and what sidecars apply per request (the sidecar's layers
//! are in `sidecar/src/outbound/` and `inbound/`; the sources in `federation/`):
//!
//! - `route_match.rs`: the Gateway API's `HTTPRouteMatch` (path Exact / PathPrefix by whole
//!   segments / RegularExpression, headers, query parameters, method), checked when built;
//! - `route_table.rs`: a service's matches in the Gateway API's precedence order, indexed by
//!   path;
//! - `http_route.rs`: the `HTTPRoute` spec as users write it; `filters.rs`: its filters checked
//!   and applied; `service_policy.rs`: one service's rules as snapshots carry them;
//!   `router.rs`: those rules compiled, the rule and the weighted backend of each request;
//! - `grpc_route.rs`: the `GRPCRoute` spec, read as the `HTTPRoute` it means (a method match
//!   is a path: `/<service>/<method>`);
//! - `documents.rs`: policy objects as YAML documents (file, line and field in every error);
//!   `compile/`: objects to per-service policies, with the Gateway API's status conditions;
//! - `backend_policy/`, `hash_ring/`, `pick.rs`: a service's backend policy (load-balancing
//!   algorithm, outlier and breaker overrides, concurrency limits) and its pure choosers:
//!   consistent hashing on a ring, round robin and least request;
//! - `rate_limit/`, `fault.rs`: local rate limits (token buckets: total, per caller identity,
//!   overrides, shadow mode; the `RateLimit` response fields) and client-side fault injection
//!   (delay, abort), pure with time and randomness passed in;
//! - `http_cache/`: the response cache's rules (RFC 9111 shared cache: storability,
//!   `Cache-Control`, freshness and age, `Vary`, invalidation) and its byte-bounded LRU store,
//!   pure with time passed in;
//! - `attachment/`, `field_lines.rs`: our policy kinds (`FaultPolicy`, `RateLimitPolicy`,
//!   `CachePolicy`, `BackendPolicy`, `mesh.dev/v1alpha1`) attached by `targetRef` to a route
//!   or a service, and the line of a refused field in its document (`documents.rs` reads them,
//!   `compile/` attaches them).
//! - `authorization/`: `AuthorizationPolicy` (Istio's shape: ALLOW, DENY, AUDIT; rules by
//!   caller principal, namespace, trust domain, method and path) and the decision per request.

pub mod attachment;
pub mod authorization;
pub mod backend_policy;
pub mod compile;
pub mod documents;
pub mod fault;
pub mod field_lines;
pub mod filters;
pub mod grpc_route;
pub mod hash_ring;
pub mod http_cache;
pub mod http_route;
pub mod pick;
pub mod rate_limit;
pub mod route_match;
pub mod route_table;
pub mod router;
pub mod service_policy;
