//! `AuthorizationPolicy`s on a namespace compiled: rules on every service of the namespace,
//! the namespace's default, and their refusals.

use std::collections::BTreeSet;

use super::*;
use crate::policy::authorization::{AuthorizationAction, AuthorizationDefault};
use crate::policy::documents::parse_documents;

/// `echo` and `other` in `demo`, `api` in `web`.
fn known() -> BTreeSet<ServiceKey> {
    [("echo", "demo"), ("other", "demo"), ("api", "web")]
        .into_iter()
        .map(|(n, ns)| ServiceKey::new(n, ns).unwrap())
        .collect()
}

/// An `AuthorizationPolicy` `name` in `namespace` with the spec lines `body`.
fn authz(namespace: &str, name: &str, body: &str) -> String {
    format!(
        "apiVersion: mesh.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{body}"
    )
}

fn compile_docs(docs: &[String]) -> CompiledPolicy {
    let text = docs.join("---\n");
    compile_known(&parse_documents(&text, "p.yaml", 0).unwrap(), &known())
}

const ON_DEMO: &str = "  targetRef: {group: '', kind: Namespace, name: demo}\n";

fn key(name: &str, namespace: &str) -> ServiceKey {
    ServiceKey::new(name, namespace).unwrap()
}

#[test]
fn a_policy_on_a_namespace_applies_to_each_of_its_services_after_their_own() {
    let c = compile_docs(&[
        authz(
            "demo",
            "no-admin",
            &format!(
                "{ON_DEMO}  action: DENY\n  rules: [{{to: [{{operation: {{paths: ['/admin/*']}}}}]}}]\n"
            ),
        ),
        authz(
            "demo",
            "echo-web",
            "  targetRef: {group: '', kind: Service, name: echo}\n  rules: [{from: [{source: {namespaces: [web]}}]}]\n",
        ),
    ]);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert_eq!(
        c.statuses[0].conditions[0].message,
        "attached to namespace demo"
    );
    let names = |s: &ServiceKey| -> Vec<String> {
        c.services[s]
            .authorization
            .iter()
            .map(|a| a.name.clone())
            .collect()
    };
    assert_eq!(
        names(&key("echo", "demo")),
        ["demo/echo-web", "demo/no-admin"]
    );
    assert_eq!(names(&key("other", "demo")), ["demo/no-admin"]);
    assert_eq!(
        c.services[&key("other", "demo")].authorization[0].action,
        AuthorizationAction::Deny
    );
    assert!(!c.services.contains_key(&key("api", "web")));
}

#[test]
fn a_namespace_default_reaches_every_service_and_a_second_one_conflicts() {
    let c = compile_docs(&[
        authz("demo", "closed", &format!("{ON_DEMO}  default: deny\n")),
        authz("demo", "open", &format!("{ON_DEMO}  default: allow\n")),
        authz(
            "web",
            "cluster-only",
            "  targetRef: {group: '', kind: Namespace, name: web}\n  default: sameCluster\n",
        ),
    ]);
    assert!(c.statuses[0].accepted() && c.statuses[2].accepted());
    assert_eq!(c.statuses[1].conditions[0].reason, "Conflicted");
    assert!(
        c.statuses[1].conditions[0].message.contains(
            "the default of namespace demo already has the older AuthorizationPolicy demo/closed"
        ),
        "{:?}",
        c.statuses[1]
    );
    for service in ["echo", "other"] {
        let d = c.services[&key(service, "demo")]
            .authorization_default
            .clone()
            .unwrap();
        assert_eq!(
            (d.policy.as_str(), d.default),
            ("demo/closed", AuthorizationDefault::Deny)
        );
        assert!(c.services[&key(service, "demo")].authorization.is_empty());
    }
    assert_eq!(
        c.services[&key("api", "web")]
            .authorization_default
            .as_ref()
            .unwrap()
            .default,
        AuthorizationDefault::SameCluster
    );
    // The policy of a service without routes travels in snapshots.
    let policy = &c.services[&key("echo", "demo")];
    let json = serde_json::to_string(policy).unwrap();
    assert!(json.contains(r#""authorization_default""#), "{json}");
    assert_eq!(
        serde_json::from_str::<ServicePolicy>(&json).unwrap(),
        *policy
    );
}

#[test]
fn another_namespace_cannot_be_targeted() {
    let c = compile_docs(&[authz(
        "demo",
        "elsewhere",
        "  targetRef: {group: '', kind: Namespace, name: web}\n  default: deny\n",
    )]);
    assert_eq!(c.statuses[0].conditions[0].reason, "Invalid");
    assert_eq!(
        c.errors[0].to_string(),
        "p.yaml: line 1: AuthorizationPolicy demo/elsewhere (Invalid): spec.targetRef.name: a \
         policy applies in its own namespace demo, not in web"
    );
    assert!(c.services.is_empty());
}

#[test]
fn a_bad_default_is_refused_at_its_line() {
    let text = authz("demo", "d", &format!("{ON_DEMO}  default: closed\n"));
    let e = parse_documents(&text, "p.yaml", 0).unwrap_err().to_string();
    assert!(e.starts_with("p.yaml: line 6:"), "{e}");
    let text = authz(
        "demo",
        "d",
        "  targetRef: {group: '', kind: Service, name: echo}\n  default: deny\n",
    );
    let e = parse_documents(&text, "p.yaml", 0).unwrap_err().to_string();
    assert!(
        e.contains("field `spec.default`: only a policy whose targetRef is the Namespace"),
        "{e}"
    );
}
