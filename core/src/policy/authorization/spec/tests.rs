//! The kind read and validated: defaults, targets, the namespace default, ports, and the
//! field named by every refusal.

use super::*;

fn policy(yaml: &str) -> AuthorizationPolicy {
    serde_saphyr::from_str(yaml).unwrap()
}

const TARGET: &str = "targetRef: {group: '', kind: Service, name: echo}\n";

fn invalid(rules: &str) -> String {
    policy(&format!("{TARGET}rules: {rules}\n"))
        .validate()
        .unwrap_err()
        .to_string()
}

#[test]
fn a_policy_reads_with_allow_as_the_default_action() {
    let p = policy(&format!(
        "{TARGET}rules:\n- from: [{{source: {{principals: ['spiffe://eu-central.mesh/ns/web/sa/*'], notNamespaces: [kube-system]}}}}]\n  to: [{{operation: {{methods: [GET], paths: ['/api/*']}}}}]\n"
    ));
    assert_eq!(p.action(), AuthorizationAction::Allow);
    assert_eq!(
        p.validate(),
        Ok(PolicyTarget::Service {
            name: "echo".into()
        })
    );
    assert_eq!(p.rules[0].from[0].source.not_namespaces, ["kube-system"]);
    assert_eq!(p.rules[0].to[0].operation.paths, ["/api/*"]);
    let deny = policy(&format!("{TARGET}action: DENY\n"));
    assert_eq!(deny.action(), AuthorizationAction::Deny);
    assert_eq!(deny.action().as_str(), "DENY");
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(
        serde_json::from_str::<AuthorizationPolicy>(&json).unwrap(),
        p
    );
}

#[test]
fn unknown_fields_and_actions_are_refused() {
    let e = |yaml: &str| serde_saphyr::from_str::<AuthorizationPolicy>(yaml).is_err();
    assert!(e(&format!("{TARGET}action: CUSTOM\n")));
    assert!(e(&format!("{TARGET}rules: [{{when: []}}]\n")));
    assert!(e(&format!(
        "{TARGET}rules: [{{from: [{{source: {{ipBlocks: [10.0.0.0/8]}}}}]}}]\n"
    )));
}

#[test]
fn a_service_or_a_namespace_can_be_targeted() {
    let p = policy("targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}\n");
    assert_eq!(p.validate().unwrap_err().field, "targetRef.kind");
    let ns = policy("targetRef: {group: '', kind: Namespace, name: demo}\naction: DENY\n");
    assert_eq!(
        ns.validate(),
        Ok(PolicyTarget::Namespace {
            name: "demo".into()
        })
    );
    let grouped = policy("targetRef: {group: core, kind: Namespace, name: demo}\n");
    assert_eq!(grouped.validate().unwrap_err().field, "targetRef.group");
}

#[test]
fn a_default_is_set_alone_on_a_namespace() {
    const NS: &str = "targetRef: {group: '', kind: Namespace, name: demo}\n";
    let p = policy(&format!("{NS}default: sameCluster\n"));
    assert!(p.validate().is_ok());
    assert_eq!(p.default, Some(AuthorizationDefault::SameCluster));
    let e = |yaml: &str| policy(yaml).validate().unwrap_err().to_string();
    assert_eq!(
        e(&format!("{TARGET}default: deny\n")),
        "default: only a policy whose targetRef is the Namespace sets a default"
    );
    assert!(
        e(&format!("{NS}default: deny\naction: ALLOW\n"))
            .starts_with("action: a policy setting the namespace's `default` has no action")
    );
    assert!(e(&format!("{NS}default: deny\nrules: [{{}}]\n")).starts_with("rules: "));
    assert!(
        serde_saphyr::from_str::<AuthorizationPolicy>(&format!("{NS}default: closed\n")).is_err()
    );
}

#[test]
fn ports_are_read_and_zero_is_refused() {
    let p = policy(&format!(
        "{TARGET}rules: [{{to: [{{operation: {{ports: [8080], notPorts: [9090]}}}}]}}]\n"
    ));
    assert!(p.validate().is_ok());
    assert_eq!(p.rules[0].to[0].operation.ports, [8080]);
    assert_eq!(
        invalid("[{to: [{operation: {notPorts: [1, 0]}}]}]"),
        "rules[0].to[0].operation.notPorts[1]: 0 is not a port (1 to 65535)"
    );
    assert!(
        serde_saphyr::from_str::<AuthorizationPolicy>(&format!(
            "{TARGET}rules: [{{to: [{{operation: {{ports: [70000]}}}}]}}]\n"
        ))
        .is_err()
    );
}

#[test]
fn validation_names_the_field() {
    assert_eq!(
        invalid("[{from: [{source: {}}]}]"),
        "rules[0].from[0].source: must set at least one field (leave `from` out to match every caller)"
    );
    assert!(
        invalid("[{}, {to: [{operation: {}}]}]")
            .starts_with("rules[1].to[0].operation: must set at least one field"),
    );
    assert!(
        invalid("[{from: [{source: {principals: [frontend]}}]}]").starts_with(
            "rules[0].from[0].source.principals[0]: \"frontend\" is not a full SPIFFE ID"
        )
    );
    assert!(
        invalid("[{from: [{source: {notPrincipals: ['spiffe://a/*/sa/x']}}]}]")
            .starts_with("rules[0].from[0].source.notPrincipals[0]: \"spiffe://a/*/sa/x\": `*` is allowed only once")
    );
    assert!(
        invalid("[{from: [{source: {namespaces: ['*web*']}}]}]")
            .starts_with("rules[0].from[0].source.namespaces[0]: \"*web*\"")
    );
    assert_eq!(
        invalid("[{from: [{source: {trustDomains: ['']}}]}]"),
        "rules[0].from[0].source.trustDomains[0]: must not be empty"
    );
    assert_eq!(
        invalid("[{to: [{operation: {methods: [GET, 'G T']}}]}]"),
        "rules[0].to[0].operation.methods[1]: \"G T\" is not an HTTP method"
    );
    assert!(
        invalid("[{to: [{operation: {notPaths: [api]}}]}]")
            .starts_with("rules[0].to[0].operation.notPaths[0]: \"api\" must start with `/`")
    );
}

#[test]
fn wildcards_at_either_end_are_valid() {
    for ok in ["*", "/api/*", "*.json", "/exact"] {
        assert!(check_pattern("f", ok).is_ok(), "{ok}");
    }
    for bad in ["**", "/a*b", "*a*", ""] {
        assert!(check_pattern("f", bad).is_err(), "{bad}");
    }
}
