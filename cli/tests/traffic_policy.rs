//! End to end with real processes: traffic policy from a `--policy` file (Gateway API
//! `HTTPRoute`s) on the default cluster-set plus an `echo-canary` service in us-east and
//! us-west: path and header routing with the spec's precedence, a 90/10 split and a weight
//! change under load, per-route request timeouts and retries, a canary that fails over to
//! another cluster while the primary stays local, and every bad input refused with file, line
//! and reason while the last good policy stays.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use http::StatusCode;
use mesh_core::config::Topology;
use support::{Answer, Running, Scratch, eventually, get, mesh_bin, request};

const ECHO: &str = "http://echo.demo.svc.clusterset.local";

/// The routes of the test; `{split}` is the split rule's backends.
fn routes(split: &str) -> String {
    format!(
        "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: echo-routes, namespace: demo}}
spec:
  parentRefs: [{{kind: Service, name: echo}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /canary}}}}]
    backendRefs: [{{name: echo-canary}}]
  - matches: [{{path: {{type: Exact, value: /canary/stable}}}}]
    backendRefs: [{{name: echo}}]
  - matches: [{{headers: [{{name: x-version, value: canary}}]}}]
    backendRefs: [{{name: echo-canary}}]
  - matches: [{{path: {{type: PathPrefix, value: /split}}}}]
    backendRefs: [{split}]
  - matches: [{{path: {{type: PathPrefix, value: /slow}}}}]
    backendRefs: [{{name: echo-canary}}]
    timeouts: {{request: 500ms}}
  - matches: [{{path: {{type: PathPrefix, value: /flaky}}}}]
    backendRefs: [{{name: echo-canary}}]
    retry: {{codes: [500], attempts: 5}}
  - matches: [{{path: {{type: PathPrefix, value: /fragile}}}}]
    backendRefs: [{{name: echo-canary}}]
  - matches: [{{path: {{type: PathPrefix, value: /mirrored}}}}]
    filters:
    - {{type: RequestMirror, requestMirror: {{backendRef: {{name: echo-canary}}, percent: 50}}}}
    backendRefs: [{{name: echo}}]
  - matches: [{{path: {{type: Exact, value: /old}}}}]
    filters:
    - {{type: RequestRedirect, requestRedirect: {{path: {{type: ReplaceFullPath, replaceFullPath: /new}}, statusCode: 301}}}}
  - matches: [{{path: {{type: PathPrefix, value: /api/v1}}}}]
    filters:
    - {{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}}}}
    - {{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-demo-route, value: rewritten}}], remove: [x-demo-drop]}}}}
    - {{type: ResponseHeaderModifier, responseHeaderModifier: {{add: [{{name: x-route, value: api}}]}}}}
    backendRefs: [{{name: echo}}]
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
    backendRefs: [{{name: echo}}]
"
    )
}

const SPLIT_90_10: &str = "{name: echo, weight: 90}, {name: echo-canary, weight: 10}";
const SPLIT_0_100: &str = "{name: echo, weight: 0}, {name: echo-canary, weight: 100}";

fn canary(a: &Answer) -> bool {
    a.text().contains("replica=echo-canary")
}

async fn policy_report(run: &Running) -> serde_json::Value {
    mesh_launcher::admin_client::get_json(run.admin("us-east"), mesh_core::api::PATH_POLICY)
        .await
        .expect("policy report")
}

fn write(path: &Path, text: &str) {
    // Written whole then renamed, as editors do, so the controller never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn routes_splits_timeouts_retries_and_refusals_from_a_policy_file() {
    let canary_key = "echo-canary.demo".parse().unwrap();
    let mut run = Running::with_policy(
        "policy",
        Topology::default_set(),
        &routes(SPLIT_90_10),
        |plan| {
            assert!(plan.add_demo_service("us-east", &canary_key, 1));
            assert!(plan.add_demo_service("us-west", &canary_key, 1));
        },
    )
    .await;
    let policy = run.policy_file();
    let proxy = run.proxy("us-east");

    // The policy is in force once the canary is known (its references resolve).
    eventually(Duration::from_secs(20), "the policy in force", || async {
        policy_report(&run).await["applied"].as_u64() >= Some(1)
    })
    .await;
    eventually(Duration::from_secs(20), "the canary routed", || async {
        canary(&get(proxy, &format!("{ECHO}/canary/x")).await)
    })
    .await;

    // Path and header routing, with the spec's precedence: Exact beats the longer prefix.
    let a = get(proxy, &format!("{ECHO}/canary/x")).await;
    assert!(
        canary(&a) && a.text().contains("cluster=us-east"),
        "{}",
        a.text()
    );
    let a = get(proxy, &format!("{ECHO}/canary/stable")).await;
    assert!(!canary(&a) && a.status == StatusCode::OK, "{}", a.text());
    let (_, _, body) = request(proxy, &format!("{ECHO}/other"), &[("x-version", "canary")]).await;
    assert!(body.contains("replica=echo-canary"), "{body}");
    let a = get(proxy, &format!("{ECHO}/other")).await;
    assert!(!canary(&a) && a.status == StatusCode::OK, "{}", a.text());

    // Redirect, rewrite and header modifiers.
    let (status, headers, _) = request(proxy, &format!("{ECHO}/old?q=1"), &[]).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        headers[http::header::LOCATION],
        "http://echo.demo.svc.clusterset.local/new?q=1"
    );
    let (status, headers, body) = request(
        proxy,
        &format!("{ECHO}/api/v1/users?id=7"),
        &[("x-demo-drop", "1"), ("x-demo-route", "original")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-echo-path"], "/v2/users?id=7");
    assert_eq!(headers["x-demo-route"], "rewritten");
    assert!(headers.get("x-demo-drop").is_none(), "{headers:?}");
    assert_eq!(headers["x-route"], "api");

    // Mirroring: half the requests are copied to the canary, whose answers are discarded.
    let before = run
        .answered(&["us-east", "us-west"], &["echo-canary-0"])
        .await;
    for _ in 0..200 {
        let a = get(proxy, &format!("{ECHO}/mirrored")).await;
        assert!(a.status == StatusCode::OK && !canary(&a), "{}", a.text());
    }
    eventually(
        Duration::from_secs(10),
        "mirrored copies answered",
        || async {
            run.answered(&["us-east", "us-west"], &["echo-canary-0"])
                .await
                - before
                >= 70
        },
    )
    .await;
    let mirrored = run
        .answered(&["us-east", "us-west"], &["echo-canary-0"])
        .await
        - before;
    assert!((70..=130).contains(&mirrored), "{mirrored} of 200 mirrored");

    // 90/10 over 2,000 requests: within 3 points of 10%.
    let mut to_canary = 0;
    for i in 0..2000 {
        let a = get(proxy, &format!("{ECHO}/split/{i}")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        to_canary += usize::from(canary(&a));
    }
    let share = to_canary as f64 / 2000.0;
    assert!((0.07..=0.13).contains(&share), "canary share {share}");

    // A weight change applies within a second, with no failed request meanwhile.
    write(&policy, &routes(SPLIT_0_100));
    let changed = Instant::now();
    let mut all_canary_since: Option<Instant> = None;
    while changed.elapsed() < Duration::from_secs(3) {
        let a = get(proxy, &format!("{ECHO}/split/x")).await;
        assert_eq!(a.status, StatusCode::OK, "during the change: {}", a.text());
        match (canary(&a), all_canary_since) {
            (true, None) => all_canary_since = Some(Instant::now()),
            (false, _) => all_canary_since = None,
            _ => {}
        }
    }
    let since = all_canary_since.expect("the new weights applied");
    let took = since - changed;
    assert!(took < Duration::from_secs(1), "the change took {took:?}");

    // The route's request timeout answers 504 at its time (within 20%).
    run.set_faults(
        "us-east",
        "echo-canary-0",
        serde_json::json!({"latency_ms": 3000, "latency_share": 1.0}),
    )
    .await;
    run.set_faults(
        "us-west",
        "echo-canary-0",
        serde_json::json!({"latency_ms": 3000, "latency_share": 1.0}),
    )
    .await;
    let started = Instant::now();
    let a = get(proxy, &format!("{ECHO}/slow")).await;
    let took = started.elapsed();
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT, "{}", a.text());
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(600)).contains(&took),
        "504 after {took:?}"
    );
    for cluster in ["us-east", "us-west"] {
        run.set_faults(cluster, "echo-canary-0", serde_json::json!({}))
            .await;
    }

    // Route retries recover a backend failing half its requests; without them about half
    // fail. Paced so the retry budget's floor (10 retries/s) covers them.
    for cluster in ["us-east", "us-west"] {
        run.set_faults(
            cluster,
            "echo-canary-0",
            serde_json::json!({"error_share": 0.5}),
        )
        .await;
    }
    let (mut with_retries, mut without) = (0, 0);
    // Ten pairs a second: the pace the retry budget's floor allows, not a wait for anything.
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..40 {
        pace.tick().await;
        with_retries +=
            usize::from(get(proxy, &format!("{ECHO}/flaky")).await.status == StatusCode::OK);
        without +=
            usize::from(get(proxy, &format!("{ECHO}/fragile")).await.status == StatusCode::OK);
    }
    assert!(
        with_retries >= 38,
        "with retries {with_retries}/40 succeeded"
    );
    assert!(without <= 32, "without retries {without}/40 succeeded");
    for cluster in ["us-east", "us-west"] {
        run.set_faults(cluster, "echo-canary-0", serde_json::json!({}))
            .await;
    }

    // Every bad input is refused with file, line and reason; the last good policy stays.
    let good = routes(SPLIT_0_100);
    let file = policy.display().to_string();
    let bad_inputs = [
        (
            good.replace(
                "value: /}}]\n    backendRefs: [{name: echo}]",
                "value: /}}]\n    backendRefs: [{name: nosuch}]",
            ),
            "nosuch.demo is not known",
        ),
        (
            good.replace("weight: 100", "weight: 0"),
            "weights sum to zero",
        ),
        (
            good.replace(
                "timeouts: {request: 500ms}",
                "timeouts: {request: 500ms}\n    bogus: 1",
            ),
            "bogus",
        ),
        (
            good.replace(
                "{type: PathPrefix, value: /flaky}",
                "{type: RegularExpression, value: '(a{1000}){1000}'}",
            ),
            "too costly",
        ),
        (
            format!(
                "{good}---\n{}",
                good.replace("echo-routes", "echo-routes-2")
            ),
            "Conflicted",
        ),
    ];
    for (text, reason) in &bad_inputs {
        let before = policy_report(&run).await["applied"].as_u64();
        write(&policy, text);
        eventually(
            Duration::from_secs(5),
            &format!("refusal naming {reason}"),
            || async {
                let report = policy_report(&run).await;
                let refused = report["refused"].to_string();
                refused.contains(reason) && refused.contains(&format!("{file}: line"))
            },
        )
        .await;
        assert_eq!(
            policy_report(&run).await["applied"].as_u64(),
            before,
            "{reason}"
        );
        let a = get(proxy, &format!("{ECHO}/split/x")).await;
        assert!(canary(&a), "the last good policy stays: {}", a.text());
    }
    write(&policy, &good);
    eventually(Duration::from_secs(5), "the good file back", || async {
        policy_report(&run).await["refused"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await;

    // The canary fails over to another cluster while the primary stays local.
    run.set
        .kill("us-east", "sidecar-echo-canary-0")
        .await
        .unwrap();
    run.set.kill("us-east", "echo-canary-0").await.unwrap();
    eventually(
        Duration::from_secs(20),
        "the canary served from us-west",
        || async {
            get(proxy, &format!("{ECHO}/canary/x"))
                .await
                .text()
                .contains("cluster=us-west")
        },
    )
    .await;
    let a = get(proxy, &format!("{ECHO}/other")).await;
    assert!(
        a.text().contains("cluster=us-east") && !canary(&a),
        "{}",
        a.text()
    );
    run.stop().await;
}

#[test]
fn mesh_up_refuses_a_broken_policy_file_before_starting_anything() {
    let scratch = Scratch::new("policy-broken");
    let policy = scratch.0.join("broken.yaml");
    std::fs::write(
        &policy,
        routes(SPLIT_90_10).replace("parentRefs", "parentRefz"),
    )
    .unwrap();
    let out = std::process::Command::new(mesh_bin())
        .args(["up", "--ephemeral-ports", "--state-dir"])
        .arg(scratch.0.join("state"))
        .arg("--policy")
        .arg(&policy)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{}: line 5", policy.display())) && err.contains("parentRefz"),
        "{err}"
    );
    assert!(
        !scratch.0.join("state").join("us-east").exists(),
        "nothing started"
    );
}
