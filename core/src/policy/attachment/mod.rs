//! Our policy kinds (API group `mesh.dev`, version `mesh.dev/v1alpha1`), for what the Gateway
//! API does not cover: `FaultPolicy`, `RateLimitPolicy`, `CachePolicy` and `BackendPolicy`.
//! Each is shaped like a Gateway API policy attachment (GEP-713): `spec.targetRef` names the
//! object it applies to, in the policy's own namespace, and the rest of `spec` is the body,
//! written directly in `spec` with the fields of the existing spec type:
//!
//! ```yaml
//! apiVersion: mesh.dev/v1alpha1
//! kind: FaultPolicy
//! metadata: {name: echo-faults, namespace: demo}
//! spec:
//!   targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: echo-split, sectionName: api}
//!   abort: {httpStatus: 503, percentage: 20}
//! ```
//!
//! | kind | targets | body |
//! |---|---|---|
//! | `FaultPolicy` | an `HTTPRoute` (all rules, or the rule named by `sectionName`) | [`FaultSpec`] |
//! | `CachePolicy` | an `HTTPRoute` (same) | [`CacheRule`] |
//! | `RateLimitPolicy` | an `HTTPRoute` (client side, per rule) or a `Service` (its inbound servers) | [`RateLimitSpec`] |
//! | `BackendPolicy` | a `Service` | [`BackendPolicySpec`] |
//! | `AuthorizationPolicy` | a `Service` or the `Namespace` | see `authorization` |
//!
//! Each kind is one struct with `targetRef` and the body's fields side by side, rather than the
//! body under `#[serde(flatten)]`: serde cannot refuse unknown fields through `flatten`, and a
//! flattened body is buffered, which loses the line of a bad value. The body's field list is
//! repeated (`kinds.rs`); a test checks that every field of each body is read.

mod kinds;

use serde::{Deserialize, Serialize};

pub use kinds::{BackendPolicy, CachePolicy, FaultPolicy, RateLimitPolicy};

/// The API group of our kinds.
pub const MESH_API_GROUP: &str = "mesh.dev";
/// The `apiVersion` our kinds are read as.
pub const MESH_API_VERSION: &str = "mesh.dev/v1alpha1";
/// The Gateway API's group, the group of an `HTTPRoute` target.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// Why a policy's spec is refused; names the field under `spec`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct AttachmentError {
    /// The field, under `spec` (`targetRef.kind`, `total.requestsPerSecond`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

pub(crate) fn error(field: impl Into<String>, reason: impl Into<String>) -> AttachmentError {
    AttachmentError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `spec.targetRef`: the object a policy applies to, in the policy's namespace (the Gateway
/// API's `LocalPolicyTargetReferenceWithSectionName`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyTargetRef {
    /// `gateway.networking.k8s.io` for an `HTTPRoute`, `""` (core) for a `Service` or a
    /// `Namespace`; required, as upstream, so that a kind is never read in the wrong group.
    pub group: String,
    /// `HTTPRoute`, `Service` or (an `AuthorizationPolicy` only) `Namespace`.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// For an `HTTPRoute`: the `name` of the one rule the policy applies to; unset, every rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// Which kinds of object a policy kind may target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// An `HTTPRoute`.
    Route,
    /// A `Service`.
    Service,
    /// A `Namespace`: the policy's own (every service in it).
    Namespace,
}

/// What a policy applies to, checked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyTarget {
    /// An `HTTPRoute` of the policy's namespace: one named rule, or all (`rule: None`).
    Route {
        /// The route's name.
        name: String,
        /// The rule's name (`sectionName`).
        rule: Option<String>,
    },
    /// A `Service` of the policy's namespace.
    Service {
        /// The service's name.
        name: String,
    },
    /// A `Namespace`, which must be the policy's own (checked by `compile`, which knows it).
    Namespace {
        /// The namespace's name.
        name: String,
    },
}

impl PolicyTargetRef {
    /// The target, if its group and kind are among `allowed` and its names are usable.
    pub fn target(&self, allowed: &[TargetKind]) -> Result<PolicyTarget, AttachmentError> {
        let kind = match (self.group.as_str(), self.kind.as_str()) {
            (GATEWAY_API_GROUP, "HTTPRoute") => TargetKind::Route,
            ("", "Service") => TargetKind::Service,
            ("", "Namespace") => TargetKind::Namespace,
            (group, "HTTPRoute") => {
                return Err(error(
                    "targetRef.group",
                    format!("an HTTPRoute is in group {GATEWAY_API_GROUP}, not {group:?}"),
                ));
            }
            (group, "Service") => {
                return Err(error(
                    "targetRef.group",
                    format!("a Service is in the core group \"\", not {group:?}"),
                ));
            }
            (group, "Namespace") => {
                return Err(error(
                    "targetRef.group",
                    format!("a Namespace is in the core group \"\", not {group:?}"),
                ));
            }
            (_, other) => return Err(error("targetRef.kind", refused_kind(other, allowed))),
        };
        if !allowed.contains(&kind) {
            return Err(error("targetRef.kind", refused_kind(&self.kind, allowed)));
        }
        if self.name.is_empty() {
            return Err(error("targetRef.name", "must name the target"));
        }
        match kind {
            TargetKind::Route => {
                if self.section_name.as_deref() == Some("") {
                    return Err(error(
                        "targetRef.sectionName",
                        "must name a rule of the route, or be left out for every rule",
                    ));
                }
                Ok(PolicyTarget::Route {
                    name: self.name.clone(),
                    rule: self.section_name.clone(),
                })
            }
            TargetKind::Service => {
                crate::names::check_label(&self.name)
                    .map_err(|e| error("targetRef.name", e.to_string()))?;
                if self.section_name.is_some() {
                    return Err(error(
                        "targetRef.sectionName",
                        "a policy on a Service covers all of its ports; per-port policies are \
                         not supported",
                    ));
                }
                Ok(PolicyTarget::Service {
                    name: self.name.clone(),
                })
            }
            TargetKind::Namespace => {
                crate::names::check_label(&self.name)
                    .map_err(|e| error("targetRef.name", e.to_string()))?;
                if self.section_name.is_some() {
                    return Err(error(
                        "targetRef.sectionName",
                        "a Namespace has no sections: leave it out",
                    ));
                }
                Ok(PolicyTarget::Namespace {
                    name: self.name.clone(),
                })
            }
        }
    }
}

fn refused_kind(kind: &str, allowed: &[TargetKind]) -> String {
    let names: Vec<&str> = allowed
        .iter()
        .map(|k| match k {
            TargetKind::Route => "HTTPRoute",
            TargetKind::Service => "Service",
            TargetKind::Namespace => "Namespace",
        })
        .collect();
    format!(
        "{kind:?} cannot be targeted by this policy (only {})",
        names.join(" or ")
    )
}

#[cfg(test)]
mod tests;
