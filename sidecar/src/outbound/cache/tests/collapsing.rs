//! Concurrent misses for one key: one upstream request, and waiters never left hanging.

use super::*;

// On several threads, so the leader, the waiters and the flight's end really race.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_misses_make_one_upstream_request() {
    let f = Fixture::new(1 << 20);
    let (upstream, gate) = Upstream::new(|_| answer("shared", &[FRESH_MINUTE])).holding_first();
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    let tasks: Vec<_> = (0..50)
        .map(|_| tokio::spawn(send(&svc, get("/hot", &rule))))
        .collect();
    // Every other request joins the leader's flight before the upstream answers.
    while f.cache.waiters() < 49 {
        tokio::task::yield_now().await;
    }
    assert_eq!(upstream.calls(), 1);
    gate.notify_one();
    let mut results = Vec::new();
    for task in tasks {
        let (status, cache, _, body) = task.await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"shared"[..]));
        results.push(cache);
    }
    assert_eq!(upstream.calls(), 1, "collapsed into one upstream request");
    assert_eq!(results.iter().filter(|c| *c == "miss").count(), 1);
    assert_eq!(results.iter().filter(|c| *c == "hit").count(), 49);
    assert_eq!(f.cache.waiters(), 0);
}

#[tokio::test]
async fn waiters_of_an_answer_that_is_not_stored_go_upstream_themselves() {
    let f = Fixture::new(1 << 20);
    let (upstream, gate) =
        Upstream::new(|_| answer("mine", &[("cache-control", "private")])).holding_first();
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    let tasks: Vec<_> = (0..5)
        .map(|_| tokio::spawn(send(&svc, get("/me", &rule))))
        .collect();
    while f.cache.waiters() < 4 {
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    for task in tasks {
        let (status, cache, _, body) = task.await.unwrap();
        assert_eq!(
            (status, cache.as_str(), &body[..]),
            (StatusCode::OK, "miss", &b"mine"[..])
        );
    }
    assert_eq!(upstream.calls(), 5);
}

#[tokio::test]
async fn a_cancelled_leader_does_not_leave_its_waiters_hanging() {
    let f = Fixture::new(1 << 20);
    // The leader's upstream call never answers; its client gives up.
    let (upstream, _never) = Upstream::new(|_| answer("late", &[FRESH_MINUTE])).holding_first();
    let svc = f.stack(&upstream);
    let rule = matched(Some(CacheRule::default()));
    let leader = tokio::spawn(send(&svc, get("/slow", &rule)));
    while upstream.calls() < 1 {
        tokio::task::yield_now().await;
    }
    let waiter = tokio::spawn(send(&svc, get("/slow", &rule)));
    while f.cache.waiters() < 1 {
        tokio::task::yield_now().await;
    }
    leader.abort();
    let (status, cache, _, body) = waiter.await.unwrap();
    assert_eq!(
        (status, cache.as_str(), &body[..]),
        (StatusCode::OK, "miss", &b"late"[..])
    );
    assert_eq!(upstream.calls(), 2);
    // What the waiter fetched was stored.
    assert_eq!(send(&svc, get("/slow", &rule)).await.1, "hit");
}

#[tokio::test]
async fn a_waiter_of_another_variant_is_forwarded_once_the_flight_ends() {
    let f = Fixture::new(1 << 20);
    let (upstream, gate) = Upstream::new(|req| {
        let lang = match req.headers().get("accept-language").map(|v| v.as_bytes()) {
            Some(b"fr") => "bonjour",
            _ => "hello",
        };
        answer(lang, &[FRESH_MINUTE, ("vary", "accept-language")])
    })
    .holding_first();
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
    let leader = tokio::spawn(send(&svc, lang("en")));
    while upstream.calls() < 1 {
        tokio::task::yield_now().await;
    }
    // The key is the URI: the French request cannot know yet that the answer varies.
    let waiter = tokio::spawn(send(&svc, lang("fr")));
    while f.cache.waiters() < 1 {
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    let (_, cache, _, body) = leader.await.unwrap();
    assert_eq!((cache.as_str(), &body[..]), ("miss", &b"hello"[..]));
    let (_, cache, _, body) = waiter.await.unwrap();
    assert_eq!((cache.as_str(), &body[..]), ("miss", &b"bonjour"[..]));
    assert_eq!(upstream.calls(), 2);
    assert_eq!(f.metrics.cache_entries.get(), 2, "both variants stored");
}
