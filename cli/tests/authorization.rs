//! End to end with real processes in two clusters: `AuthorizationPolicy`s from a `--policy`
//! file, enforced by the inbound sidecars. A cross-cluster caller admitted by its principal
//! (and nobody else), a same-namespace caller denied by a DENY rule, a path-scoped DENY, a
//! namespace whose default is deny and one whose default is sameCluster, an AUDIT policy that
//! only logs, and a policy changed while running that applies without a restart.
//!
//! Callers: each cluster's client sidecar, `spiffe://<cluster>.mesh/ns/demo/sa/client`.

mod support;

use std::time::Duration;

use http::StatusCode;
use mesh_core::config::Topology;
use mesh_launcher::cluster_set::ComponentArgs;
use support::{Answer, Running, eventually, get, metric};

const EAST_CLIENT: &str = "spiffe://us-east.mesh/ns/demo/sa/client";
const EU_CLIENT: &str = "spiffe://eu-central.mesh/ns/demo/sa/client";
/// us-east's echo, by its per-cluster name (eu-central runs echo replicas too).
const ECHO: &str = "http://echo.demo.svc.us-east.clusterset.local";
const SECURE: &str = "http://secure.demo.svc.clusterset.local";
const VAULT: &str = "http://vault.locked.svc.clusterset.local";
const LEDGER: &str = "http://ledger.internal.svc.clusterset.local";

/// The policy file, with echo admitting only `admitted`.
fn policy(admitted: &str) -> String {
    format!(
        "\
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: one-client-only, namespace: demo}}
spec:
  targetRef: {{group: '', kind: Service, name: echo}}
  rules:
  - from: [{{source: {{principals: ['{admitted}']}}}}]
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: no-admin, namespace: demo}}
spec:
  targetRef: {{group: '', kind: Service, name: echo}}
  action: DENY
  rules:
  - to: [{{operation: {{paths: ['/admin/*']}}}}]
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: not-the-east-client, namespace: demo}}
spec:
  targetRef: {{group: '', kind: Service, name: secure}}
  action: DENY
  rules:
  - from: [{{source: {{principals: ['{EAST_CLIENT}']}}}}]
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: watch-eu, namespace: demo}}
spec:
  targetRef: {{group: '', kind: Service, name: secure}}
  action: AUDIT
  rules:
  - from: [{{source: {{trustDomains: [eu-central.mesh]}}}}]
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: closed, namespace: locked}}
spec:
  targetRef: {{group: '', kind: Namespace, name: locked}}
  default: deny
---
apiVersion: mesh.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: cluster-only, namespace: internal}}
spec:
  targetRef: {{group: '', kind: Namespace, name: internal}}
  default: sameCluster
"
    )
}

/// us-east and eu-central; us-east also serves `secure.demo`, `vault.locked` and
/// `ledger.internal` (one replica each, its sidecar in the service's namespace).
fn topology() -> Topology {
    let mut topology = Topology::default_set();
    topology.clusters.retain(|c| c.name != "us-west");
    topology.clusters[0].region_priority = vec!["eu-central".into()];
    topology.clusters[1].region_priority = vec!["us-east".into()];
    topology
}

/// `text` without its ANSI colour sequences (`ESC [ ... m`), as a log file holds them.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

fn refused(answer: &Answer, why: &str) {
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
    assert_eq!(answer.mesh_error.as_deref(), Some("unauthorized"));
    assert!(answer.text().contains(why), "{why} in {}", answer.text());
}

#[tokio::test(flavor = "current_thread")]
async fn authorization_policies_hold_across_two_clusters() {
    let mut run = Running::with_policy("authorization", topology(), &policy(EU_CLIENT), |plan| {
        for service in ["secure.demo", "vault.locked", "ledger.internal"] {
            let key: mesh_core::names::ServiceKey = service.parse().unwrap();
            assert!(plan.add_demo_service("us-east", &key, 1));
            let sidecar = format!("sidecar-{}-0", key.name);
            for (name, process) in &mut plan.clusters[0].processes {
                if let (true, ComponentArgs::Sidecar(args)) = (*name == sidecar, &mut process.args)
                {
                    args.namespace = key.namespace.clone();
                }
            }
        }
    })
    .await;
    let (east, eu) = (run.proxy("us-east"), run.proxy("eu-central"));

    // A cross-cluster caller admitted by its principal, nobody else.
    eventually(Duration::from_secs(30), "the policy in force", || async {
        get(east, &format!("{ECHO}/")).await.status == StatusCode::FORBIDDEN
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "eu-central reaching echo",
        || async { get(eu, &format!("{ECHO}/")).await.status == StatusCode::OK },
    )
    .await;
    let admitted = get(eu, &format!("{ECHO}/api")).await;
    assert_eq!(admitted.status, StatusCode::OK, "{}", admitted.text());
    assert_eq!(admitted.served_by.as_deref(), Some("us-east"));
    refused(
        &get(east, &format!("{ECHO}/api")).await,
        "no ALLOW policy of the service matches (demo/one-client-only)",
    );

    // A path-scoped DENY, before the ALLOW.
    refused(
        &get(eu, &format!("{ECHO}/admin/users")).await,
        "denied by DENY policy demo/no-admin",
    );
    assert_eq!(
        get(eu, &format!("{ECHO}/administer")).await.status,
        StatusCode::OK
    );

    // A same-namespace caller denied by a DENY rule; the other admitted and audited.
    refused(
        &get(east, &format!("{SECURE}/")).await,
        "denied by DENY policy demo/not-the-east-client",
    );
    let audited = get(eu, &format!("{SECURE}/")).await;
    assert_eq!(audited.status, StatusCode::OK, "{}", audited.text());
    let secure_sidecar = run
        .set
        .process("us-east", "sidecar-secure-0")
        .expect("secure's sidecar");
    let log = || without_colours(&std::fs::read_to_string(&secure_sidecar.log).unwrap());
    eventually(Duration::from_secs(5), "the audit logged", || async {
        log().contains("authorization audit")
    })
    .await;
    let log = log();
    let audit_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("authorization audit"))
        .collect();
    assert_eq!(audit_lines.len(), 1, "{log}");
    for part in ["demo/watch-eu", EU_CLIENT, "allowed=true"] {
        assert!(
            audit_lines[0].contains(part),
            "{part} in {}",
            audit_lines[0]
        );
    }
    let secure_admin = run.admin_of("us-east", "sidecar-secure-0");
    let counted = |policy: &'static str, decision: &'static str| {
        let label = format!("policy=\"{policy}\",decision=\"{decision}\"");
        async move { metric(secure_admin, "mesh_sidecar_authorization_total", &label).await }
    };
    assert_eq!(counted("demo/watch-eu", "audit").await, 1.0);
    assert_eq!(counted("demo/not-the-east-client", "deny").await, 1.0);

    // A namespace whose default is deny: nobody; one whose default is sameCluster.
    for proxy in [east, eu] {
        refused(
            &get(proxy, &format!("{VAULT}/")).await,
            "denied by the namespace default deny of locked/closed",
        );
    }
    assert_eq!(
        get(east, &format!("{LEDGER}/")).await.status,
        StatusCode::OK
    );
    refused(
        &get(eu, &format!("{LEDGER}/")).await,
        "the namespace default sameCluster of internal/cluster-only",
    );

    // The policy changed while running: the east client is admitted, eu-central no longer,
    // by the same sidecar processes.
    let pid = secure_sidecar.pid();
    std::fs::write(run.policy_file(), policy(EAST_CLIENT)).unwrap();
    eventually(
        Duration::from_secs(20),
        "the new policy in force",
        || async { get(east, &format!("{ECHO}/")).await.status == StatusCode::OK },
    )
    .await;
    refused(
        &get(eu, &format!("{ECHO}/")).await,
        "no ALLOW policy of the service matches (demo/one-client-only)",
    );
    assert_eq!(
        run.set
            .process("us-east", "sidecar-secure-0")
            .unwrap()
            .pid(),
        pid
    );
    run.stop().await;
}
