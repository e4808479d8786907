//! What the cache leaves alone, and what writes invalidate.

use super::*;

#[tokio::test]
async fn an_unsafe_method_invalidates_on_any_route_unless_it_failed() {
    let f = Fixture::new(1 << 20);
    let upstream = Upstream::new(|req| match req.uri().path() {
        "/fail" => {
            let mut rsp = answer("no", &[]);
            *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            rsp
        }
        _ => answer("doc", &[FRESH_MINUTE]),
    });
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    let plain = matched(None);
    send(&svc, get("/doc", &rule)).await;
    send(&svc, get("/fail", &rule)).await;
    assert_eq!(f.metrics.cache_entries.get(), 1, "a 500 is not stored");
    // A POST on the caching route bypasses the cache and drops the entry.
    let (_, cache, _, _) = send(&svc, request(Method::POST, "/doc", &[], Some(&rule))).await;
    assert_eq!(cache, "bypass");
    assert_eq!(f.metrics.cache_entries.get(), 0);
    assert_eq!(send(&svc, get("/doc", &rule)).await.1, "miss");
    // A PUT on a route without caching drops it too, and is not marked.
    let (_, cache, _, _) = send(&svc, request(Method::PUT, "/doc", &[], Some(&plain))).await;
    assert_eq!(cache, "");
    assert_eq!(f.metrics.cache_entries.get(), 0);
    send(&svc, get("/doc", &rule)).await;
    // A failed DELETE invalidates nothing.
    *f.now.lock().unwrap() += Duration::from_secs(1);
    let upstream_fail = Upstream::new(|_| {
        let mut rsp = answer("", &[]);
        *rsp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        rsp
    });
    let failing = f.stack(&upstream_fail);
    send(&failing, request(Method::DELETE, "/doc", &[], None)).await;
    assert_eq!(f.metrics.cache_entries.get(), 1);
    assert_eq!(send(&svc, get("/doc", &rule)).await.1, "hit");
}

#[tokio::test]
async fn requests_the_cache_does_not_handle_are_marked_or_left_alone() {
    let f = Fixture::new(1 << 20);
    let upstream = Upstream::new(|_| answer("x", &[FRESH_MINUTE]));
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    // No rule at all, or a rule without cache: untouched.
    let (_, cache, _, _) = send(&svc, request(Method::GET, "/a", &[], None)).await;
    assert_eq!(cache, "");
    let (_, cache, _, _) = send(&svc, get("/a", &matched(None))).await;
    assert_eq!(cache, "");
    assert_eq!(f.metrics.cache_entries.get(), 0);
    // Authorization bypasses the cache under the default rule.
    let auth = request(
        Method::GET,
        "/a",
        &[("authorization", "Bearer t")],
        Some(&rule),
    );
    assert_eq!(send(&svc, auth).await.1, "bypass");
    assert_eq!(f.lookups("bypass"), 1);
    // only-if-cached with nothing stored: 504 without going upstream.
    let before = upstream.calls();
    let only = request(
        Method::GET,
        "/a",
        &[("cache-control", "only-if-cached")],
        Some(&rule),
    );
    let (status, cache, _, _) = send(&svc, only).await;
    assert_eq!(
        (status, cache.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "miss")
    );
    assert_eq!(upstream.calls(), before);
}
