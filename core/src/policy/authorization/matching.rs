//! Matching: the string patterns of every field, and one rule against one request.

use super::decide::AuthorizationRequest;
use super::spec::{AuthorizationAction, AuthorizationRule, Operation, Source};

/// Whether `value` matches `pattern`: `*` matches anything, `prefix*` and `*suffix` match by
/// prefix and suffix, anything else exactly (Istio's string match).
pub fn pattern_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        value.ends_with(suffix)
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        value.starts_with(prefix)
    } else {
        pattern == value
    }
}

/// Whether a positive field and its `not*` field hold for `value` (`None`: the caller has no
/// such attribute, which matches no positive value and no negative one).
fn field_holds(any_of: &[String], none_of: &[String], value: Option<&str>) -> bool {
    let matches =
        |patterns: &[String]| value.is_some_and(|v| patterns.iter().any(|p| pattern_matches(p, v)));
    (any_of.is_empty() || matches(any_of)) && !matches(none_of)
}

/// The caller's attributes, computed once per request.
pub(super) struct Caller {
    principal: Option<String>,
    namespace: Option<String>,
    trust_domain: Option<String>,
}

impl Caller {
    /// The attributes of `request`'s caller.
    pub(super) fn of(request: &AuthorizationRequest<'_>) -> Self {
        let id = request.caller;
        Self {
            principal: id.map(|id| id.uri()),
            // Workload identities are `ns/<namespace>/sa/<account>`; others (gateway,
            // controller) have no namespace.
            namespace: id.and_then(|id| {
                let mut parts = id.path.split('/');
                (parts.next() == Some("ns"))
                    .then(|| parts.next())
                    .flatten()
                    .map(str::to_string)
            }),
            trust_domain: id.map(|id| id.trust_domain.clone()),
        }
    }
}

impl Source {
    fn matches(&self, caller: &Caller) -> bool {
        field_holds(
            &self.principals,
            &self.not_principals,
            caller.principal.as_deref(),
        ) && field_holds(
            &self.namespaces,
            &self.not_namespaces,
            caller.namespace.as_deref(),
        ) && field_holds(
            &self.trust_domains,
            &self.not_trust_domains,
            caller.trust_domain.as_deref(),
        )
    }
}

impl Operation {
    /// Whether the operation matches, in a policy of `action`. An opaque connection has no
    /// method nor path, and fails closed as Istio judges TCP: in an ALLOW (or AUDIT) policy an
    /// operation naming either never matches it; in a DENY policy those fields are left out
    /// and the rest (ports) decides, so a DENY written for HTTP also refuses the tunnels that
    /// could carry the same requests past it.
    fn matches(&self, request: &AuthorizationRequest<'_>, action: AuthorizationAction) -> bool {
        let ports = |ports: &[u16]| ports.contains(&request.port);
        let port_holds = (self.ports.is_empty() || ports(&self.ports)) && !ports(&self.not_ports);
        let http_fields = !(self.methods.is_empty()
            && self.not_methods.is_empty()
            && self.paths.is_empty()
            && self.not_paths.is_empty());
        let Some(http) = &request.http else {
            return port_holds && (action == AuthorizationAction::Deny || !http_fields);
        };
        let method = |methods: &[String]| methods.iter().any(|m| m == http.method);
        port_holds
            && (self.methods.is_empty() || method(&self.methods))
            && !method(&self.not_methods)
            && field_holds(&self.paths, &self.not_paths, Some(http.path))
    }
}

impl AuthorizationRule {
    /// Whether the rule of a policy of `action` matches: one `from` (or none given) and one
    /// `to` (or none given).
    pub(super) fn matches(
        &self,
        caller: &Caller,
        request: &AuthorizationRequest<'_>,
        action: AuthorizationAction,
    ) -> bool {
        (self.from.is_empty() || self.from.iter().any(|f| f.source.matches(caller)))
            && (self.to.is_empty() || self.to.iter().any(|t| t.operation.matches(request, action)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SpiffeId;
    use crate::policy::authorization::HttpRequestLine;

    #[test]
    fn patterns_match_exactly_by_prefix_suffix_or_presence() {
        assert!(pattern_matches("*", ""));
        assert!(pattern_matches("/api/*", "/api/v1"));
        assert!(!pattern_matches("/api/*", "/apis"));
        assert!(pattern_matches("*.json", "/a/b.json"));
        assert!(!pattern_matches("*.json", "/a/b.jsonx"));
        assert!(pattern_matches("/exact", "/exact"));
        assert!(!pattern_matches("/exact", "/exact/"));
    }

    fn rule(yaml: &str) -> AuthorizationRule {
        serde_saphyr::from_str(yaml).unwrap()
    }

    /// Whether `rule` of an ALLOW policy matches a request of `caller` to port 8080: HTTP
    /// `method` on `path`, or an opaque connection when `method` is empty.
    fn check(rule: &AuthorizationRule, caller: Option<&str>, method: &str, path: &str) -> bool {
        check_port(rule, caller, method, path, 8080)
    }

    fn check_port(
        rule: &AuthorizationRule,
        caller: Option<&str>,
        method: &str,
        path: &str,
        port: u16,
    ) -> bool {
        check_in(rule, AuthorizationAction::Allow, caller, method, path, port)
    }

    /// As [`check_port`], for a rule of a policy of `action`.
    fn check_in(
        rule: &AuthorizationRule,
        action: AuthorizationAction,
        caller: Option<&str>,
        method: &str,
        path: &str,
        port: u16,
    ) -> bool {
        let id: Option<SpiffeId> = caller.map(|c| c.parse().unwrap());
        let req = AuthorizationRequest {
            caller: id.as_ref(),
            http: (!method.is_empty()).then_some(HttpRequestLine { method, path }),
            port,
            own_trust_domain: "us-east.mesh",
        };
        rule.matches(&Caller::of(&req), &req, action)
    }

    const FRONTEND: &str = "spiffe://eu-central.mesh/ns/web/sa/frontend";
    const BATCH: &str = "spiffe://eu-central.mesh/ns/web/sa/batch";
    const EAST: &str = "spiffe://us-east.mesh/ns/demo/sa/client";

    #[test]
    fn a_rule_without_from_or_to_matches_everything() {
        let any = rule("{}");
        assert!(check(&any, None, "GET", "/"));
        assert!(check(&any, Some(EAST), "POST", "/x"));
    }

    #[test]
    fn a_principal_admits_that_caller_and_nobody_else_from_its_domain() {
        let r = rule(&format!(
            "from: [{{source: {{principals: ['{FRONTEND}']}}}}]"
        ));
        assert!(check(&r, Some(FRONTEND), "GET", "/"));
        assert!(!check(&r, Some(BATCH), "GET", "/"));
        assert!(!check(&r, None, "GET", "/"), "no identity, no principal");
        let suffix = rule("from: [{source: {principals: ['*/sa/frontend']}}]");
        assert!(check(&suffix, Some(FRONTEND), "GET", "/"));
        assert!(!check(&suffix, Some(EAST), "GET", "/"));
    }

    #[test]
    fn source_fields_are_anded_and_not_fields_exclude() {
        let r = rule(
            "from: [{source: {trustDomains: [eu-central.mesh], notPrincipals: ['*/sa/batch']}}]",
        );
        assert!(check(&r, Some(FRONTEND), "GET", "/"));
        assert!(!check(&r, Some(BATCH), "GET", "/"));
        assert!(!check(&r, Some(EAST), "GET", "/"));
        // A caller without identity matches every `not*` field: `notPrincipals: ['*']` is
        // "unauthenticated".
        let anonymous = rule("from: [{source: {notPrincipals: ['*']}}]");
        assert!(check(&anonymous, None, "GET", "/"));
        assert!(!check(&anonymous, Some(EAST), "GET", "/"));
        let ns = rule("from: [{source: {namespaces: [web]}}, {source: {namespaces: [demo]}}]");
        assert!(check(&ns, Some(FRONTEND), "GET", "/"));
        assert!(check(&ns, Some(EAST), "GET", "/"), "from entries are ORed");
        let gateway = "spiffe://us-east.mesh/gateway";
        assert!(!check(&ns, Some(gateway), "GET", "/"), "no namespace");
    }

    #[test]
    fn operations_match_methods_exactly_and_paths_by_pattern() {
        let r = rule(
            "to: [{operation: {methods: [GET, HEAD], paths: ['/api/*'], notPaths: [/api/admin]}}]",
        );
        assert!(check(&r, None, "GET", "/api/items"));
        assert!(
            !check(&r, None, "get", "/api/items"),
            "methods are case-sensitive"
        );
        assert!(!check(&r, None, "POST", "/api/items"));
        assert!(!check(&r, None, "GET", "/api/admin"));
        assert!(!check(&r, None, "GET", "/other"));
        let not_post = rule("to: [{operation: {notMethods: [POST]}}]");
        assert!(check(&not_post, None, "PUT", "/"));
        assert!(!check(&not_post, None, "POST", "/"));
        let both = rule(&format!(
            "from: [{{source: {{principals: ['{FRONTEND}']}}}}]\nto: [{{operation: {{methods: [GET]}}}}]"
        ));
        assert!(check(&both, Some(FRONTEND), "GET", "/"));
        assert!(!check(&both, Some(FRONTEND), "PUT", "/"), "from AND to");
        assert!(!check(&both, Some(BATCH), "GET", "/"));
    }

    #[test]
    fn ports_match_the_port_reached_for_http_and_opaque_alike() {
        let r = rule("to: [{operation: {ports: [8080, 9090]}}]");
        assert!(check_port(&r, None, "GET", "/", 9090));
        assert!(check_port(&r, None, "", "", 8080), "an opaque connection");
        assert!(!check_port(&r, None, "GET", "/", 8443));
        let not = rule("to: [{operation: {notPorts: [9090], methods: [GET]}}]");
        assert!(check_port(&not, None, "GET", "/", 8080));
        assert!(!check_port(&not, None, "GET", "/", 9090));
    }

    #[test]
    fn an_opaque_connection_fails_closed_on_methods_and_paths() {
        let deny = |r: &AuthorizationRule, caller, port| {
            check_in(r, AuthorizationAction::Deny, caller, "", "", port)
        };
        for http_only in [
            "{methods: [CONNECT]}",
            "{paths: ['*']}",
            "{notPaths: [/admin]}",
            "{notMethods: [POST]}",
            "{ports: [8080], paths: ['/']}",
        ] {
            let r = rule(&format!("to: [{{operation: {http_only}}}]"));
            // ALLOW (and AUDIT): never admitted by an operation written for HTTP.
            assert!(!check(&r, Some(EAST), "", ""), "{http_only}");
            // DENY: refused as if the HTTP fields were not there.
            assert!(deny(&r, Some(EAST), 8080), "{http_only}");
        }
        let admin = rule(&format!(
            "from: [{{source: {{principals: ['{BATCH}']}}}}]\nto: [{{operation: {{paths: [/admin], ports: [9090]}}}}]"
        ));
        assert!(deny(&admin, Some(BATCH), 9090));
        assert!(!deny(&admin, Some(BATCH), 8080), "ports still count");
        assert!(!deny(&admin, Some(FRONTEND), 9090), "from still counts");
        // `from` alone, or with ports, judges it in any policy.
        let from = rule(&format!(
            "from: [{{source: {{principals: ['{FRONTEND}']}}}}]\nto: [{{operation: {{ports: [8080]}}}}]"
        ));
        assert!(check(&from, Some(FRONTEND), "", ""));
        assert!(!check(&from, Some(BATCH), "", ""));
        // One `to` entry of several that can match is enough.
        let either = rule("to: [{operation: {paths: [/x]}}, {operation: {ports: [8080]}}]");
        assert!(check(&either, None, "", ""));
    }
}
