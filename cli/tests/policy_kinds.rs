//! End to end with real processes: the mesh's own policy kinds from a `--policy` file
//! (`FaultPolicy`, `RateLimitPolicy`, `CachePolicy`, `BackendPolicy`, `mesh.dev/v1alpha1`),
//! attached to the rules of an `HTTPRoute` or to a Service: injected aborts and delays, rate
//! limits with their headers per caller identity and in shadow mode, response caching (hits
//! with `Age`, `Vary`, `no-store`, collapsed misses, the memory bound), and consistent hashing that keeps each
//! key on one of four endpoints and moves only the keys of one that goes.

mod support;

use std::time::{Duration, Instant};

use http::{HeaderMap, Method, StatusCode};
use mesh_core::config::Topology;
use mesh_launcher::cluster_set::ComponentArgs;
use support::{Running, eventually, metric, request};

const ECHO: &str = "http://echo.demo.svc.clusterset.local";
/// The response cache of us-east's client sidecar in this test: a few dozen demo answers.
const CACHE_BYTES: usize = 32 * 1024;
/// The demo replicas of echo in us-east.
const ECHOES: &[&str] = &["echo-0", "echo-1", "echo-2", "echo-3"];

const POLICY: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-routes, namespace: demo}
spec:
  parentRefs: [{kind: Service, name: echo}]
  rules:
  - name: faulty
    matches: [{path: {type: PathPrefix, value: /faulty}}]
  - name: delayed
    matches: [{path: {type: PathPrefix, value: /delayed}}]
  - name: limited
    matches: [{path: {type: PathPrefix, value: /limited}}]
  - name: shadowed
    matches: [{path: {type: PathPrefix, value: /shadowed}}]
  - name: cached
    matches: [{path: {type: PathPrefix, value: /cached}}]
  - matches: [{path: {type: PathPrefix, value: /}}]
---
apiVersion: mesh.dev/v1alpha1
kind: FaultPolicy
metadata: {name: aborts, namespace: demo}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: echo-routes, sectionName: faulty}
  abort: {httpStatus: 503, percentage: 20}
---
apiVersion: mesh.dev/v1alpha1
kind: FaultPolicy
metadata: {name: delays, namespace: demo}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: echo-routes, sectionName: delayed}
  delay: {fixedDelay: 200ms, percentage: 100}
---
apiVersion: mesh.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: route-limit, namespace: demo}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: echo-routes, sectionName: limited}
  total: {requestsPerSecond: 1, burst: 5}
---
apiVersion: mesh.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: shadow-limit, namespace: demo}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: echo-routes, sectionName: shadowed}
  total: {requestsPerSecond: 1, burst: 2}
  mode: shadow
---
apiVersion: mesh.dev/v1alpha1
kind: CachePolicy
metadata: {name: cache, namespace: demo}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: echo-routes, sectionName: cached}
---
apiVersion: mesh.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: canary-inbound, namespace: demo}
spec:
  targetRef: {group: '', kind: Service, name: echo-canary}
  identity: {requestsPerSecond: 1, burst: 5}
---
apiVersion: mesh.dev/v1alpha1
kind: BackendPolicy
metadata: {name: sticky, namespace: demo}
spec:
  targetRef: {group: '', kind: Service, name: echo}
  loadBalancer:
    consistentHash: {header: x-user}
";

fn replica(headers: &HeaderMap) -> String {
    headers
        .get("x-echo-replica")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "current_thread")]
async fn faults_rate_limits_caching_and_consistent_hashing_from_policy_kinds() {
    let mut topology = Topology::default_set();
    topology.clusters[0].echo_replicas = 4;
    let mut run = Running::with_policy("policy-kinds", topology, POLICY, |plan| {
        assert!(plan.add_demo_service("us-east", &"echo-canary.demo".parse().unwrap(), 1));
        // A small response cache for us-east's client, to see its bound hold.
        for (name, process) in &mut plan.clusters[0].processes {
            if let (true, ComponentArgs::Sidecar(args)) = (name == "client", &mut process.args) {
                args.cache_max_bytes = CACHE_BYTES;
            }
        }
    })
    .await;
    let proxy = run.proxy("us-east");
    eventually(Duration::from_secs(20), "the policy in force", || async {
        let report: serde_json::Value = mesh_launcher::admin_client::get_json(
            run.admin("us-east"),
            mesh_core::api::PATH_POLICY,
        )
        .await
        .expect("policy report");
        report["applied"].as_u64() >= Some(1)
    })
    .await;
    eventually(Duration::from_secs(20), "the delay injected", || async {
        let (_, headers, _) = request(proxy, &format!("{ECHO}/delayed"), &[]).await;
        headers.get("x-mesh-fault").is_some()
    })
    .await;

    // Faults: 20% aborts over 2,000 requests within 3 points; a 200 ms delay in the latency.
    let mut aborted = 0;
    for _ in 0..2000 {
        let (status, headers, body) = request(proxy, &format!("{ECHO}/faulty"), &[]).await;
        match status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(headers["x-mesh-fault"], "abort", "{body}");
                aborted += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    let share = f64::from(aborted) / 2000.0;
    assert!((0.17..=0.23).contains(&share), "abort share {share}");
    for _ in 0..5 {
        let started = Instant::now();
        let (status, headers, _) = request(proxy, &format!("{ECHO}/delayed"), &[]).await;
        let took = started.elapsed();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-mesh-fault"], "delay");
        assert!(
            took >= Duration::from_millis(200),
            "delayed answer in {took:?}"
        );
    }

    // A route's rate limit: the burst passes, then 429 with the fields.
    let mut limited = None;
    for i in 0..20 {
        let (status, headers, _) = request(proxy, &format!("{ECHO}/limited"), &[]).await;
        assert!(headers.contains_key("ratelimit"), "{headers:?}");
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((i, headers));
            break;
        }
    }
    let (i, headers) = limited.expect("a 429 once the bucket is empty");
    assert!(i >= 5, "rejected after {i} requests, the burst is 5");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert!(headers.contains_key("ratelimit-policy"), "{headers:?}");

    // Shadow mode counts and never rejects.
    for _ in 0..20 {
        let (status, _, body) = request(proxy, &format!("{ECHO}/shadowed"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let shadowed = metric(
        run.admin_of("us-east", "client"),
        "mesh_sidecar_rate_limited_total",
        "mode=\"shadow\"",
    )
    .await;
    assert!(shadowed >= 10.0, "shadow mode counted {shadowed}");

    // The inbound limit of echo-canary is per caller identity: us-east's client empties its
    // bucket, us-west's client still gets through to the same server.
    let canary_east = "http://echo-canary.demo.svc.us-east.clusterset.local/";
    let mut east_limited = false;
    for _ in 0..20 {
        let (status, headers, _) = request(proxy, canary_east, &[]).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(headers.contains_key("retry-after"), "{headers:?}");
            east_limited = true;
            break;
        }
    }
    assert!(east_limited, "us-east's client was never limited");
    let (status, _, body) = request(run.proxy("us-west"), canary_east, &[]).await;
    assert_eq!(status, StatusCode::OK, "us-west's own bucket: {body}");

    // Caching: a miss then hits with Age, served without the app.
    let cc = ("x-demo-cache-control", "max-age=60");
    let before = run.answered(&["us-east"], ECHOES).await;
    let (_, headers, _) = request(proxy, &format!("{ECHO}/cached/a"), &[cc]).await;
    assert_eq!(headers["x-mesh-cache"], "miss");
    let (_, headers, _) = request(proxy, &format!("{ECHO}/cached/a"), &[cc]).await;
    assert_eq!(headers["x-mesh-cache"], "hit");
    assert!(headers.contains_key("age"), "{headers:?}");
    // Vary separates variants.
    let vary = ("x-demo-vary", "x-lang");
    for lang in ["en", "fr"] {
        let (_, headers, _) = request(
            proxy,
            &format!("{ECHO}/cached/v"),
            &[cc, vary, ("x-lang", lang)],
        )
        .await;
        assert_eq!(headers["x-mesh-cache"], "miss", "{lang}");
    }
    for lang in ["en", "fr"] {
        let (_, headers, _) = request(
            proxy,
            &format!("{ECHO}/cached/v"),
            &[cc, vary, ("x-lang", lang)],
        )
        .await;
        assert_eq!(headers["x-mesh-cache"], "hit", "{lang}");
    }
    // no-store is never cached.
    for _ in 0..3 {
        let (_, headers, _) = request(
            proxy,
            &format!("{ECHO}/cached/n"),
            &[("x-demo-cache-control", "no-store")],
        )
        .await;
        assert_eq!(headers["x-mesh-cache"], "miss");
    }
    // 50 concurrent misses for one key reach the app once.
    let delay = serde_json::json!({"latency_ms": 300, "latency_share": 1.0});
    for r in 0..4 {
        let admin = run.admin_of("us-east", &format!("echo-{r}"));
        mesh_launcher::admin_client::send_json(admin, Method::POST, "/v1/faults", &delay)
            .await
            .expect("slow the app so the misses overlap");
    }
    let upstream_before = run.answered(&["us-east"], ECHOES).await;
    let mut herd = tokio::task::JoinSet::new();
    for _ in 0..50 {
        herd.spawn(async move {
            request(proxy, &format!("{ECHO}/cached/herd"), &[cc])
                .await
                .0
        });
    }
    while let Some(status) = herd.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    let upstream_after = run.answered(&["us-east"], ECHOES).await;
    assert_eq!(upstream_after - upstream_before, 1, "collapsed misses");
    for r in 0..4 {
        let admin = run.admin_of("us-east", &format!("echo-{r}"));
        mesh_launcher::admin_client::send_json(admin, Method::DELETE, "/v1/faults", &())
            .await
            .expect("faults cleared");
    }
    // The app answered only the misses of this phase: a, two variants, three no-store, herd.
    let total = run.answered(&["us-east"], ECHOES).await;
    assert_eq!(total - before, 7, "answers from the app while caching");

    // The memory bound holds: 400 distinct answers do not fit in the client's cache; the
    // oldest are evicted (a miss again) and the bytes held stay within the bound.
    for i in 0..400 {
        let (_, headers, _) = request(proxy, &format!("{ECHO}/cached/fill/{i}"), &[cc]).await;
        assert_eq!(headers["x-mesh-cache"], "miss", "{i}");
    }
    let client = run.admin_of("us-east", "client");
    let held = metric(client, "mesh_sidecar_cache_bytes", "").await;
    let entries = metric(client, "mesh_sidecar_cache_entries", "").await;
    assert!(
        held > 0.0 && held <= CACHE_BYTES as f64,
        "{held} bytes held"
    );
    assert!((1.0..400.0).contains(&entries), "{entries} entries");
    let (_, headers, _) = request(proxy, &format!("{ECHO}/cached/fill/0"), &[cc]).await;
    assert_eq!(
        headers["x-mesh-cache"], "miss",
        "the oldest entry was evicted"
    );
    let (_, headers, _) = request(proxy, &format!("{ECHO}/cached/fill/399"), &[cc]).await;
    assert_eq!(headers["x-mesh-cache"], "hit", "the newest entry stays");

    // Consistent hashing on x-user: each key stays on one of the four endpoints, and removing
    // one moves only its keys.
    let mut home = std::collections::BTreeMap::new();
    for k in 0..100 {
        let user = format!("user-{k}");
        let (_, headers, _) = request(proxy, &format!("{ECHO}/"), &[("x-user", &user)]).await;
        home.insert(user, replica(&headers));
    }
    let spread: std::collections::BTreeSet<_> = home.values().cloned().collect();
    assert_eq!(
        spread.len(),
        4,
        "keys spread over the four endpoints: {spread:?}"
    );
    for (user, r) in &home {
        let (_, headers, _) = request(proxy, &format!("{ECHO}/"), &[("x-user", user)]).await;
        assert_eq!(&replica(&headers), r, "{user} moved");
    }
    run.set.kill("us-east", "sidecar-echo-3").await.unwrap();
    run.set.kill("us-east", "echo-3").await.unwrap();
    eventually(Duration::from_secs(20), "echo-3's keys moved", || async {
        let mut moved = true;
        for (user, r) in home.iter().filter(|(_, r)| r.as_str() == "echo-3") {
            let (_, headers, _) = request(proxy, &format!("{ECHO}/"), &[("x-user", user)]).await;
            moved &= replica(&headers) != *r && !replica(&headers).is_empty();
        }
        moved
    })
    .await;
    for (user, r) in home.iter().filter(|(_, r)| r.as_str() != "echo-3") {
        let (_, headers, _) = request(proxy, &format!("{ECHO}/"), &[("x-user", user)]).await;
        assert_eq!(
            &replica(&headers),
            r,
            "{user} moved though its endpoint stayed"
        );
    }
    run.stop().await;
}
