//! Authorization policies (issue 12, part 3), pure: who may call a service, with what method,
//! on what path and port. The shape is Istio's `AuthorizationPolicy` (`security/v1beta1`),
//! attached by `targetRef` like our other kinds (see `attachment`) to a `Service`, or to the
//! policy's own `Namespace` (then it applies to every service in it):
//!
//! ```yaml
//! apiVersion: mesh.dev/v1alpha1
//! kind: AuthorizationPolicy
//! metadata: {name: frontend-only, namespace: demo}
//! spec:
//!   targetRef: {group: '', kind: Service, name: echo}
//!   action: ALLOW
//!   rules:
//!   - from: [{source: {principals: [spiffe://eu-central.mesh/ns/web/sa/frontend]}}]
//!     to: [{operation: {methods: [GET], paths: [/api/*], ports: [8080]}}]
//! ```
//!
//! Evaluation follows Istio's order: a matching DENY policy denies; otherwise, when the
//! service has no ALLOW policy its namespace's default decides (`allow` unless a policy on the
//! namespace sets `deny`, `authenticated` or `sameCluster`, see `default.rs`), and when it has
//! some, only a request one of them matches is allowed. AUDIT policies never change the
//! outcome: their matches are only reported. An opaque connection (a CONNECT tunnel) has no
//! method nor path and fails closed, as Istio judges TCP: in an ALLOW policy a `to` naming
//! either never matches it; a DENY policy leaves those fields out, so a tunnel cannot carry
//! past it the requests it refuses.
//!
//! - `spec.rs`: the kind and its rules as users write them, and their validation;
//! - `default.rs`: a namespace's default, as written and as sidecars get it;
//! - `matching.rs`: the string patterns (exact, `prefix*`, `*suffix`, `*`) and one rule
//!   matched against a request;
//! - `decide.rs`: a service's policies as sidecars get them and the [`Decision`] for one
//!   request.

mod decide;
mod default;
mod matching;
mod spec;

pub use decide::{AuthorizationRequest, AuthorizationRules, Decision, HttpRequestLine, decide};
pub use default::{AuthorizationDefault, NamespaceDefault};
pub use matching::pattern_matches;
pub use spec::{
    AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Operation, RuleFrom, RuleTo,
    Source,
};
