//! A service's authorization policies as snapshots carry them, and the decision for one
//! request, in Istio's order: DENY, then (if the service has any) ALLOW, else the namespace's
//! default; AUDIT only reported.

use serde::{Deserialize, Serialize};

use super::default::{AuthorizationDefault, NamespaceDefault};
use super::matching::Caller;
use super::spec::{AuthorizationAction, AuthorizationPolicy, AuthorizationRule};
use crate::identity::SpiffeId;

/// One accepted `AuthorizationPolicy` of a service (on the service or on its namespace), as
/// the controller sends it to the sidecars serving the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRules {
    /// `<namespace>/<name>` of the policy: what answers, logs and metrics name.
    pub name: String,
    /// What a match does.
    pub action: AuthorizationAction,
    /// The rules (OR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AuthorizationRule>,
}

impl AuthorizationRules {
    /// The rules of `policy`, named `<namespace>/<name>`.
    pub fn of(name: String, policy: &AuthorizationPolicy) -> Self {
        Self {
            name,
            action: policy.action(),
            rules: policy.rules.clone(),
        }
    }

    fn matches(&self, caller: &Caller, request: &AuthorizationRequest<'_>) -> bool {
        self.rules
            .iter()
            .any(|r| r.matches(caller, request, self.action))
    }
}

/// The method and path of an HTTP request.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequestLine<'a> {
    /// The method.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
}

/// What one request is judged on.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizationRequest<'a> {
    /// The caller's SPIFFE ID from the mTLS handshake; `None`: no identity (plain text).
    pub caller: Option<&'a SpiffeId>,
    /// The method and path; `None` for an opaque connection (a CONNECT tunnel carrying bytes
    /// the mesh does not read), which only `from` and ports can match.
    pub http: Option<HttpRequestLine<'a>>,
    /// The port the request reached (the app's, see `Operation::ports`).
    pub port: u16,
    /// The trust domain of the sidecar judging (for the `sameCluster` default).
    pub own_trust_domain: &'a str,
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The policy that decided: the matching DENY, the first matching ALLOW, or the one
    /// setting the namespace's default when it decided; `None` when no policy did (allowed as
    /// the service has no ALLOW policy nor default, or denied as no ALLOW policy matches).
    pub policy: Option<String>,
    /// That policy's action (`None` when the default decided).
    pub action: Option<AuthorizationAction>,
    /// The namespace's default, when it decided.
    pub default: Option<AuthorizationDefault>,
    /// The AUDIT policies that match, to be logged.
    pub audit: Vec<String>,
}

impl Decision {
    /// Why, in words, for the body of a refusal and for logs.
    pub fn reason(&self) -> String {
        match (&self.policy, self.default, self.allowed) {
            (Some(policy), Some(d), true) => {
                format!(
                    "allowed by the namespace default {} of {policy}",
                    d.as_str()
                )
            }
            (Some(policy), Some(d), false) => format!(
                "denied by the namespace default {} of {policy} ({}; the service has no ALLOW \
                 policy)",
                d.as_str(),
                d.admitted()
            ),
            (Some(policy), None, true) => format!("allowed by ALLOW policy {policy}"),
            (Some(policy), None, false) => format!("denied by DENY policy {policy}"),
            (None, _, true) => "allowed: the service has no ALLOW policy".into(),
            (None, _, false) => "denied: no ALLOW policy of the service matches".into(),
        }
    }
}

/// The decision of `policies` (one service's, its namespace's included) and its namespace's
/// `default` for `request`: a matching DENY denies; then, if there is no ALLOW policy the
/// default decides (none: allowed), else only a request one of them matches is allowed. The
/// first policy in the given order names the decision.
pub fn decide(
    policies: &[AuthorizationRules],
    default: Option<&NamespaceDefault>,
    request: &AuthorizationRequest<'_>,
) -> Decision {
    let caller = Caller::of(request);
    let matching = |action: AuthorizationAction| {
        policies
            .iter()
            .filter(move |p| p.action == action)
            .filter(|p| p.matches(&caller, request))
    };
    let audit: Vec<String> = matching(AuthorizationAction::Audit)
        .map(|p| p.name.clone())
        .collect();
    let decided = |allowed: bool, by: Option<&AuthorizationRules>| Decision {
        allowed,
        policy: by.map(|p| p.name.clone()),
        action: by.map(|p| p.action),
        default: None,
        audit: audit.clone(),
    };
    if let Some(deny) = matching(AuthorizationAction::Deny).next() {
        return decided(false, Some(deny));
    }
    if !policies
        .iter()
        .any(|p| p.action == AuthorizationAction::Allow)
    {
        return match default {
            None => decided(true, None),
            Some(d) => Decision {
                allowed: d.default.admits(request.caller, request.own_trust_domain),
                policy: Some(d.policy.clone()),
                action: None,
                default: Some(d.default),
                audit,
            },
        };
    }
    match matching(AuthorizationAction::Allow).next() {
        Some(allow) => decided(true, Some(allow)),
        None => decided(false, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, yaml: &str) -> AuthorizationRules {
        let p: AuthorizationPolicy = serde_saphyr::from_str(&format!(
            "targetRef: {{group: '', kind: Service, name: echo}}\n{yaml}"
        ))
        .unwrap();
        p.validate().unwrap();
        AuthorizationRules::of(format!("demo/{name}"), &p)
    }

    const FRONTEND: &str = "spiffe://eu-central.mesh/ns/web/sa/frontend";
    const BATCH: &str = "spiffe://eu-central.mesh/ns/web/sa/batch";
    const LOCAL: &str = "spiffe://us-east.mesh/ns/demo/sa/client";

    fn judge(policies: &[AuthorizationRules], caller: Option<&str>, path: &str) -> Decision {
        judge_with(policies, None, caller, path)
    }

    fn judge_with(
        policies: &[AuthorizationRules],
        default: Option<&NamespaceDefault>,
        caller: Option<&str>,
        path: &str,
    ) -> Decision {
        let id: Option<SpiffeId> = caller.map(|c| c.parse().unwrap());
        decide(
            policies,
            default,
            &AuthorizationRequest {
                caller: id.as_ref(),
                http: Some(HttpRequestLine {
                    method: "GET",
                    path,
                }),
                port: 8080,
                own_trust_domain: "us-east.mesh",
            },
        )
    }

    fn allow_frontend() -> AuthorizationRules {
        policy(
            "frontend",
            &format!("rules: [{{from: [{{source: {{principals: ['{FRONTEND}']}}}}]}}]"),
        )
    }

    #[test]
    fn without_policies_or_allow_policies_everything_is_allowed() {
        let d = judge(&[], None, "/");
        assert!(d.allowed);
        assert_eq!(d.policy, None);
        assert_eq!(d.reason(), "allowed: the service has no ALLOW policy");
        let deny = policy(
            "no-admin",
            "action: DENY\nrules: [{to: [{operation: {paths: [/admin]}}]}]",
        );
        assert!(judge(std::slice::from_ref(&deny), Some(LOCAL), "/x").allowed);
    }

    #[test]
    fn with_an_allow_policy_only_its_matches_are_allowed() {
        let policies = [allow_frontend()];
        let ok = judge(&policies, Some(FRONTEND), "/");
        assert!(ok.allowed);
        assert_eq!(ok.policy.as_deref(), Some("demo/frontend"));
        assert_eq!(ok.action, Some(AuthorizationAction::Allow));
        let refused = judge(&policies, Some(BATCH), "/");
        assert!(!refused.allowed);
        assert_eq!(refused.policy, None);
        assert_eq!(
            refused.reason(),
            "denied: no ALLOW policy of the service matches"
        );
        assert!(!judge(&policies, None, "/").allowed);
    }

    #[test]
    fn an_allow_policy_without_rules_allows_nothing() {
        let nothing = policy("nothing", "action: ALLOW\n");
        assert!(!judge(std::slice::from_ref(&nothing), Some(FRONTEND), "/").allowed);
        // A rule that is empty matches everything, though.
        let all = policy("all", "rules: [{}]\n");
        assert!(judge(&[nothing, all], None, "/").allowed);
    }

    #[test]
    fn deny_wins_over_a_matching_allow() {
        let deny = policy(
            "no-admin",
            "action: DENY\nrules: [{to: [{operation: {paths: ['/admin/*']}}]}]",
        );
        let policies = [allow_frontend(), deny];
        let d = judge(&policies, Some(FRONTEND), "/admin/users");
        assert!(!d.allowed);
        assert_eq!(d.policy.as_deref(), Some("demo/no-admin"));
        assert_eq!(d.action, Some(AuthorizationAction::Deny));
        assert_eq!(d.reason(), "denied by DENY policy demo/no-admin");
        assert!(judge(&policies, Some(FRONTEND), "/api").allowed);
    }

    #[test]
    fn audit_policies_are_reported_and_change_nothing() {
        let audit = policy(
            "watch",
            "action: AUDIT\nrules: [{from: [{source: {namespaces: [web]}}]}]",
        );
        let alone = judge(std::slice::from_ref(&audit), Some(BATCH), "/");
        assert!(alone.allowed, "an AUDIT policy is no ALLOW policy");
        assert_eq!(alone.audit, ["demo/watch"]);
        let policies = [allow_frontend(), audit];
        let refused = judge(&policies, Some(BATCH), "/");
        assert!(!refused.allowed);
        assert_eq!(refused.audit, ["demo/watch"]);
        assert!(judge(&policies, Some(LOCAL), "/").audit.is_empty());
    }

    #[test]
    fn rules_travel_in_json() {
        let p = allow_frontend();
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"action\":\"ALLOW\""), "{json}");
        assert_eq!(
            serde_json::from_str::<AuthorizationRules>(&json).unwrap(),
            p
        );
    }

    fn default(d: AuthorizationDefault) -> NamespaceDefault {
        NamespaceDefault {
            policy: "demo/defaults".into(),
            default: d,
        }
    }

    #[test]
    fn the_namespace_default_decides_only_without_allow_policies() {
        let deny_all = default(AuthorizationDefault::Deny);
        let d = judge_with(&[], Some(&deny_all), Some(LOCAL), "/");
        assert!(!d.allowed);
        assert_eq!(d.policy.as_deref(), Some("demo/defaults"));
        assert_eq!(d.default, Some(AuthorizationDefault::Deny));
        assert_eq!(
            d.reason(),
            "denied by the namespace default deny of demo/defaults (nobody without an ALLOW \
             policy; the service has no ALLOW policy)"
        );
        // An ALLOW policy replaces the default; a DENY or AUDIT policy does not.
        let allow = [allow_frontend()];
        assert!(judge_with(&allow, Some(&deny_all), Some(FRONTEND), "/").allowed);
        let audit = policy("watch", "action: AUDIT\nrules: [{}]");
        let d = judge_with(
            std::slice::from_ref(&audit),
            Some(&deny_all),
            Some(FRONTEND),
            "/",
        );
        assert!(!d.allowed);
        assert_eq!(d.audit, ["demo/watch"]);
        // DENY still comes first under an allowing default.
        let allow_all = default(AuthorizationDefault::Allow);
        let deny = policy(
            "no-admin",
            "action: DENY\nrules: [{to: [{operation: {paths: [/admin]}}]}]",
        );
        let d = judge_with(
            std::slice::from_ref(&deny),
            Some(&allow_all),
            None,
            "/admin",
        );
        assert_eq!(d.policy.as_deref(), Some("demo/no-admin"));
        let d = judge_with(std::slice::from_ref(&deny), Some(&allow_all), None, "/");
        assert!(d.allowed);
        assert_eq!(
            d.reason(),
            "allowed by the namespace default allow of demo/defaults"
        );
    }

    #[test]
    fn authenticated_and_same_cluster_defaults_look_at_the_caller() {
        let authenticated = default(AuthorizationDefault::Authenticated);
        assert!(judge_with(&[], Some(&authenticated), Some(FRONTEND), "/").allowed);
        assert!(!judge_with(&[], Some(&authenticated), None, "/").allowed);
        let same = default(AuthorizationDefault::SameCluster);
        assert!(judge_with(&[], Some(&same), Some(LOCAL), "/").allowed);
        let d = judge_with(&[], Some(&same), Some(FRONTEND), "/");
        assert!(!d.allowed);
        assert!(
            d.reason().contains("callers of this cluster only"),
            "{}",
            d.reason()
        );
    }
}
