//! Authorization policies (issue 12, part 3), pure: who may call a service, with what method
//! and on what path. The shape is Istio's `AuthorizationPolicy` (`security/v1beta1`), attached
//! to a `Service` by `targetRef` like our other kinds (see `attachment`):
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
//!     to: [{operation: {methods: [GET], paths: [/api/*]}}]
//! ```
//!
//! Evaluation follows Istio's order: a matching DENY policy denies; otherwise, when the
//! service has no ALLOW policy the request is allowed, and when it has some, only a request
//! one of them matches is. AUDIT policies never change the outcome: their matches are only
//! reported. The per-namespace default of the issue (deny, authenticated-only,
//! same-cluster-only when no ALLOW policy exists) is not built yet: the default is allow.
//!
//! - `spec.rs`: the kind and its rules as users write them, and their validation;
//! - `matching.rs`: the string patterns (exact, `prefix*`, `*suffix`, `*`) and one rule
//!   matched against a request;
//! - `decide.rs`: a service's policies as sidecars get them and the [`Decision`] for one
//!   request.

mod decide;
mod matching;
mod spec;

pub use decide::{AuthorizationRequest, AuthorizationRules, Decision, decide};
pub use matching::pattern_matches;
pub use spec::{
    AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Operation, RuleFrom, RuleTo,
    Source,
};
