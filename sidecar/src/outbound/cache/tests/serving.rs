//! Answers served from the store and what is stored: age, variants, directives, bounds.

use super::*;

#[tokio::test]
async fn a_fresh_answer_is_served_from_the_store_with_its_age() {
    let f = Fixture::new(1 << 20);
    let upstream = Upstream::new(|_| answer("v1", &[FRESH_MINUTE]));
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    let (status, cache, age, body) = send(&svc, get("/a", &rule)).await;
    assert_eq!(
        (status, cache.as_str(), age, &body[..]),
        (StatusCode::OK, "miss", None, &b"v1"[..])
    );
    f.advance(10);
    let (status, cache, age, body) = send(&svc, get("/a", &rule)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache, "hit");
    assert_eq!(age.as_deref(), Some("10"));
    assert_eq!(body, "v1");
    assert_eq!(upstream.calls(), 1);
    assert_eq!((f.lookups("miss"), f.lookups("hit")), (1, 1));
    assert_eq!(f.metrics.cache_entries.get(), 1);
    assert!(f.metrics.cache_bytes.get() > 2);
    // Past its lifetime it is fetched again, unless the request accepts it stale.
    f.advance(60);
    let (_, cache, age, _) = send(
        &svc,
        request(
            Method::GET,
            "/a",
            &[("cache-control", "max-stale=30")],
            Some(&rule),
        ),
    )
    .await;
    assert_eq!((cache.as_str(), age.as_deref()), ("stale", Some("70")));
    let (_, cache, _, _) = send(&svc, get("/a", &rule)).await;
    assert_eq!(cache, "miss");
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn vary_variants_are_kept_apart() {
    let f = Fixture::new(1 << 20);
    let upstream = Upstream::new(|req| {
        let lang = match req.headers().get("accept-language").map(|v| v.as_bytes()) {
            Some(b"fr") => "bonjour",
            _ => "hello",
        };
        answer(lang, &[FRESH_MINUTE, ("vary", "accept-language")])
    });
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    let lang = |l| {
        request(
            Method::GET,
            "/greet",
            &[("accept-language", l)],
            Some(&rule),
        )
    };
    assert_eq!(send(&svc, lang("en")).await.1, "miss");
    assert_eq!(send(&svc, lang("fr")).await.1, "miss");
    let (_, cache, _, body) = send(&svc, lang("en")).await;
    assert_eq!((cache.as_str(), &body[..]), ("hit", &b"hello"[..]));
    let (_, cache, _, body) = send(&svc, lang("fr")).await;
    assert_eq!((cache.as_str(), &body[..]), ("hit", &b"bonjour"[..]));
    assert_eq!(upstream.calls(), 2);
    assert_eq!(f.metrics.cache_entries.get(), 2);
}

#[tokio::test]
async fn no_store_answers_are_never_stored() {
    let f = Fixture::new(1 << 20);
    let upstream =
        Upstream::new(|_| answer("secret", &[("cache-control", "no-store, max-age=60")]));
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    for _ in 0..3 {
        let (status, cache, _, body) = send(&svc, get("/a", &rule)).await;
        assert_eq!(
            (status, cache.as_str(), &body[..]),
            (StatusCode::OK, "miss", &b"secret"[..])
        );
    }
    assert_eq!(upstream.calls(), 3);
    assert_eq!(f.metrics.cache_entries.get(), 0);
}

#[tokio::test]
async fn the_byte_bound_evicts_the_least_recently_used() {
    let body = Bytes::from(vec![b'x'; 1000]);
    // Room for two such entries (body, header fields and key), not three.
    let f = Fixture::new(2500);
    let upstream = Upstream::new(move |_| answer(body.clone(), &[FRESH_MINUTE]));
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    for path in ["/1", "/2", "/3"] {
        assert_eq!(send(&svc, get(path, &rule)).await.1, "miss");
        assert!(f.cache.stats().bytes_in_use <= 2500);
    }
    assert_eq!(f.metrics.cache_entries.get(), 2);
    assert!(f.metrics.cache_bytes.get() <= 2500);
    assert_eq!(f.cache.stats().evictions, 1);
    assert_eq!(send(&svc, get("/3", &rule)).await.1, "hit");
    assert_eq!(
        send(&svc, get("/1", &rule)).await.1,
        "miss",
        "evicted first"
    );
    assert_eq!(upstream.calls(), 4);
}

#[tokio::test]
async fn an_answer_past_the_entry_bound_streams_through_unstored() {
    let f = Fixture::new(1 << 20);
    let upstream = Upstream::new(|_| answer("0123456789abcdef", &[FRESH_MINUTE]));
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule {
        max_entry_bytes: 8,
        ..CacheRule::default()
    }));
    for _ in 0..2 {
        let (_, cache, _, body) = send(&svc, get("/big", &rule)).await;
        assert_eq!(
            (cache.as_str(), &body[..]),
            ("miss", &b"0123456789abcdef"[..])
        );
    }
    assert_eq!(upstream.calls(), 2);
    assert_eq!(f.metrics.cache_entries.get(), 0);
}

#[tokio::test]
async fn a_head_is_answered_from_a_stored_get() {
    let f = Fixture::new(1 << 20);
    let upstream = Upstream::new(|_| answer("body", &[FRESH_MINUTE]));
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    send(&svc, get("/a", &rule)).await;
    let rsp = svc
        .clone()
        .oneshot(request(Method::HEAD, "/a", &[], Some(&rule)))
        .await
        .unwrap();
    assert_eq!(rsp.headers()[HEADER_MESH_CACHE], "hit");
    assert_eq!(rsp.headers()["content-length"], "4");
    assert!(
        rsp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    assert_eq!(upstream.calls(), 1);
}
