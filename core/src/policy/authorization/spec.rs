//! The `AuthorizationPolicy` kind as users write it (`mesh.dev/v1alpha1`), close to Istio's:
//! `targetRef` (a `Service`, or a `Namespace`: every service in it), `action` and `rules[]`,
//! or, on a `Namespace` only, `default` (see `default.rs`); and the checks that name the field.

use serde::{Deserialize, Serialize};

use super::super::attachment::{AttachmentError, PolicyTarget, PolicyTargetRef, TargetKind, error};
use super::default::AuthorizationDefault;

/// The `spec` of an `AuthorizationPolicy`: who may call a service (or every service of a
/// namespace), checked by the sidecars serving it; or a namespace's default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    /// The `Service` or the `Namespace` (group `""`), in the policy's namespace.
    pub target_ref: PolicyTargetRef,
    /// What a match does; unset, `ALLOW`, as in Istio (see [`Self::action`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<AuthorizationAction>,
    /// The rules (OR); an ALLOW policy without rules allows nothing, a DENY or AUDIT policy
    /// without rules matches nothing (Istio's reading).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AuthorizationRule>,
    /// On a `Namespace` only, and then alone (no `action`, no `rules`): what the namespace's
    /// services do with a request when none of their policies is an ALLOW policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<AuthorizationDefault>,
}

/// What a matching policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthorizationAction {
    /// Admits the request (once the service has an ALLOW policy, only matches are admitted).
    #[default]
    Allow,
    /// Refuses the request, before any ALLOW policy is looked at.
    Deny,
    /// Only logs the match; the outcome is unchanged.
    Audit,
}

impl AuthorizationAction {
    /// The name as written (`ALLOW`, `DENY`, `AUDIT`), for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::Audit => "AUDIT",
        }
    }
}

/// One rule: it matches when one of its `from` and one of its `to` match; an empty list
/// matches every request, so a rule with neither matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationRule {
    /// The callers (OR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    /// The operations (OR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
}

/// An entry of `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleFrom {
    /// The caller.
    pub source: Source,
}

/// An entry of `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleTo {
    /// The operation.
    pub operation: Operation,
}

/// Who calls, by the SPIFFE ID of its mTLS certificate. The set fields must all match (AND);
/// within one, any value (OR); a `not*` field matches when none of its values does.
/// A caller without an identity matches no positive field and every `not*` field.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Source {
    /// Full SPIFFE IDs (`spiffe://eu-central.mesh/ns/web/sa/frontend`), with `*` as a prefix
    /// or suffix wildcard, or `*` alone for any authenticated caller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Principals that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// The caller's namespace (`ns/<namespace>/...` in its SPIFFE path).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// The caller's trust domain (`eu-central.mesh`: one per cluster by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
    /// Trust domains that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Vec<String>,
}

/// What is asked. The set fields must all match (AND), as in [`Source`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operation {
    /// HTTP methods, exactly (`GET`); an opaque connection has none (a `to` with methods or
    /// paths never matches it in an ALLOW policy; a DENY policy ignores them for it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Methods that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Paths without the query: exact (`/api`), `prefix*` (`/api/*`), `*suffix` or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Paths that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
    /// The port the request reached: the port of the app the serving sidecar delivers to
    /// (as Istio's `ports` name the workload's port, not the Service's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Ports that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<u16>,
}

impl AuthorizationPolicy {
    /// What it targets.
    pub const TARGETS: &'static [TargetKind] = &[TargetKind::Service, TargetKind::Namespace];

    /// What a match does: `action`, `ALLOW` when unset.
    pub fn action(&self) -> AuthorizationAction {
        self.action.unwrap_or_default()
    }

    /// Checks the target and the rules; errors name the field under `spec`.
    pub fn validate(&self) -> Result<PolicyTarget, AttachmentError> {
        let target = self.target_ref.target(Self::TARGETS)?;
        if self.default.is_some() {
            if !matches!(target, PolicyTarget::Namespace { .. }) {
                return Err(error(
                    "default",
                    "only a policy whose targetRef is the Namespace sets a default",
                ));
            }
            if self.action.is_some() || !self.rules.is_empty() {
                let field = if self.action.is_some() {
                    "action"
                } else {
                    "rules"
                };
                return Err(error(
                    field,
                    "a policy setting the namespace's `default` has no action nor rules: \
                     write them in another AuthorizationPolicy",
                ));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate(&format!("rules[{i}]"))?;
        }
        Ok(target)
    }
}

impl AuthorizationRule {
    /// Checks the rule found at `at` (`rules[0]`).
    pub fn validate(&self, at: &str) -> Result<(), AttachmentError> {
        for (i, from) in self.from.iter().enumerate() {
            from.source.validate(&format!("{at}.from[{i}].source"))?;
        }
        for (i, to) in self.to.iter().enumerate() {
            to.operation.validate(&format!("{at}.to[{i}].operation"))?;
        }
        Ok(())
    }
}

impl Source {
    /// Checks the source found at `at`.
    fn validate(&self, at: &str) -> Result<(), AttachmentError> {
        let fields = [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
            ("trustDomains", &self.trust_domains),
            ("notTrustDomains", &self.not_trust_domains),
        ];
        if fields.iter().all(|(_, values)| values.is_empty()) {
            // As Istio: an empty source is a mistake, not "anyone" (leave `from` out for that).
            return Err(error(
                at,
                "must set at least one field (leave `from` out to match every caller)",
            ));
        }
        for (name, values) in fields {
            for (i, value) in values.iter().enumerate() {
                let field = format!("{at}.{name}[{i}]");
                check_pattern(&field, value)?;
                let principal = name.ends_with("rincipals");
                if principal && !value.starts_with('*') && !value.starts_with("spiffe://") {
                    return Err(error(
                        field,
                        format!(
                            "{value:?} is not a full SPIFFE ID (spiffe://<trust-domain>/ns/<namespace>/sa/<account>, `*` allowed at either end)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Operation {
    /// Checks the operation found at `at`.
    fn validate(&self, at: &str) -> Result<(), AttachmentError> {
        let fields = [
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
        ];
        for (name, ports) in [("ports", &self.ports), ("notPorts", &self.not_ports)] {
            if let Some(i) = ports.iter().position(|p| *p == 0) {
                return Err(error(
                    format!("{at}.{name}[{i}]"),
                    "0 is not a port (1 to 65535)",
                ));
            }
        }
        if fields.iter().all(|(_, values)| values.is_empty())
            && self.ports.is_empty()
            && self.not_ports.is_empty()
        {
            return Err(error(
                at,
                "must set at least one field (leave `to` out to match every operation)",
            ));
        }
        for (name, values) in fields {
            for (i, value) in values.iter().enumerate() {
                let field = format!("{at}.{name}[{i}]");
                if name.ends_with("ethods") {
                    // Methods match exactly, as upstream: a token, case-sensitive.
                    if http::Method::from_bytes(value.as_bytes()).is_err() || value.contains('*') {
                        return Err(error(field, format!("{value:?} is not an HTTP method")));
                    }
                    continue;
                }
                check_pattern(&field, value)?;
                if !value.starts_with('/') && !value.starts_with('*') {
                    return Err(error(
                        field,
                        format!("{value:?} must start with `/` (or `*` for a suffix match)"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks a string pattern: not empty, `*` only as its first or last character.
fn check_pattern(field: &str, value: &str) -> Result<(), AttachmentError> {
    if value.is_empty() {
        return Err(error(field, "must not be empty"));
    }
    // At most one `*`, at one end: what is left once it is taken off has none.
    let rest = value
        .strip_prefix('*')
        .or_else(|| value.strip_suffix('*'))
        .unwrap_or(value);
    if rest.contains('*') {
        return Err(error(
            field,
            format!(
                "{value:?}: `*` is allowed only once, alone or at the start (suffix match) or the end (prefix match)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
