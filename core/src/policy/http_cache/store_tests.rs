//! The store end to end: a request looked up, its answer stored, later requests answered.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AGE, CONTENT_LENGTH};
use http::{Method, StatusCode};

use super::*;

const T0: u64 = 1_700_000_000;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn date(secs: u64) -> String {
    httpdate::fmt_http_date(at(secs))
}

fn request(method: Method, uri: &str, lines: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "echo");
    for (name, value) in lines {
        b = b.header(*name, *value);
    }
    b.body(()).unwrap().into_parts().0
}

fn get(uri: &str, lines: &[(&str, &str)]) -> http::request::Parts {
    request(Method::GET, uri, lines)
}

fn response(status: u16, lines: &[(&str, &str)]) -> http::response::Parts {
    let mut b = http::Response::builder().status(status);
    for (name, value) in lines {
        b = b.header(*name, *value);
    }
    b.body(()).unwrap().into_parts().0
}

/// An exchange sent at `sent` and answered at `sent + 1`.
fn times(sent: u64) -> ExchangeTimes {
    ExchangeTimes {
        request_time: at(sent),
        response_time: at(sent + 1),
    }
}

/// Stores a 200 with `cache-control: max-age=60` (plus `extra`) for `req`, dated `T0`.
fn store_fresh(
    store: &mut CacheStore,
    req: &http::request::Parts,
    body: impl Into<Bytes>,
    extra: &[(&str, &str)],
) -> Result<(), NotStored> {
    let t0 = date(T0);
    let mut lines = vec![("cache-control", "max-age=60"), ("date", t0.as_str())];
    lines.extend_from_slice(extra);
    let rsp = response(200, &lines);
    let rule = CacheRule::default();
    store.store(&rule, req.into(), (&rsp).into(), body.into(), times(T0))
}

fn lookup(store: &mut CacheStore, req: &http::request::Parts, now: u64) -> Lookup {
    store.lookup(&CacheRule::default(), req.into(), at(now))
}

fn body_of(outcome: &Lookup) -> Option<&str> {
    match outcome {
        Lookup::Fresh(a) | Lookup::Stale(a) => std::str::from_utf8(&a.body).ok(),
        _ => None,
    }
}

#[test]
fn a_stored_answer_is_fresh_with_its_age_then_stale() {
    let mut store = CacheStore::default();
    let req = get("/a", &[]);
    assert_eq!(lookup(&mut store, &req, T0), Lookup::Miss);
    store_fresh(&mut store, &req, "hello", &[]).unwrap();
    // Date T0, answered at T0 + 1 after a 1 s round trip: initial age 1 s.
    let Lookup::Fresh(hit) = lookup(&mut store, &req, T0 + 11) else {
        panic!("expected a hit");
    };
    assert_eq!(hit.headers[AGE], "11");
    assert_eq!(hit.status, StatusCode::OK);
    assert_eq!(hit.body, "hello");
    assert!(matches!(
        lookup(&mut store, &req, T0 + 59),
        Lookup::Fresh(_)
    ));
    assert_eq!(
        lookup(&mut store, &req, T0 + 60),
        Lookup::Miss,
        "age 60 = lifetime"
    );
    let tolerant = get("/a", &[("cache-control", "max-stale=5")]);
    let Lookup::Stale(stale) = lookup(&mut store, &tolerant, T0 + 65) else {
        panic!("max-stale allows 5 s");
    };
    assert_eq!(stale.headers[AGE], "65");
    assert_eq!(lookup(&mut store, &tolerant, T0 + 66), Lookup::Miss);
    let s = store.stats();
    assert_eq!((s.hits, s.stale, s.misses, s.stores), (2, 1, 3, 1));
    assert_eq!(s.entries, 1);
}

#[test]
fn stale_is_refused_when_the_answer_forbids_it() {
    let mut store = CacheStore::default();
    let req = get("/a", &[]);
    store_fresh(
        &mut store,
        &req,
        "x",
        &[("cache-control", "must-revalidate")],
    )
    .unwrap();
    let tolerant = get("/a", &[("cache-control", "max-stale")]);
    assert_eq!(lookup(&mut store, &tolerant, T0 + 100), Lookup::Miss);
}

#[test]
fn head_is_answered_from_a_stored_get_but_not_the_reverse() {
    let mut store = CacheStore::default();
    store_fresh(&mut store, &get("/a", &[]), "hello", &[]).unwrap();
    let head = request(Method::HEAD, "/a", &[]);
    let Lookup::Fresh(hit) = lookup(&mut store, &head, T0 + 1) else {
        panic!("HEAD from GET");
    };
    assert!(hit.body.is_empty());
    assert_eq!(hit.headers[CONTENT_LENGTH], "5", "the GET's length");
    let other = request(Method::HEAD, "/b", &[]);
    store_fresh(&mut store, &other, "", &[]).unwrap();
    assert!(matches!(
        lookup(&mut store, &other, T0 + 1),
        Lookup::Fresh(_)
    ));
    assert_eq!(lookup(&mut store, &get("/b", &[]), T0 + 1), Lookup::Miss);
}

#[test]
fn vary_keeps_one_variant_per_nominated_value() {
    let mut store = CacheStore::default();
    let vary = [("vary", "accept-encoding")];
    let gzip = get("/a", &[("accept-encoding", "gzip, br")]);
    let plain = get("/a", &[]);
    store_fresh(&mut store, &gzip, "gzipped", &vary).unwrap();
    store_fresh(&mut store, &plain, "plain", &vary).unwrap();
    assert_eq!(store.stats().entries, 2);
    let gzip_again = get("/a", &[("accept-encoding", "gzip,br")]);
    assert_eq!(
        body_of(&lookup(&mut store, &gzip_again, T0 + 1)),
        Some("gzipped")
    );
    assert_eq!(body_of(&lookup(&mut store, &plain, T0 + 1)), Some("plain"));
    let br = get("/a", &[("accept-encoding", "br")]);
    assert_eq!(lookup(&mut store, &br, T0 + 1), Lookup::Miss);
    // A new answer for one variant replaces it alone.
    store_fresh(&mut store, &plain, "plain v2", &vary).unwrap();
    assert_eq!(store.stats().entries, 2);
    assert_eq!(
        body_of(&lookup(&mut store, &plain, T0 + 1)),
        Some("plain v2")
    );
    assert_eq!(body_of(&lookup(&mut store, &gzip, T0 + 1)), Some("gzipped"));
}

#[test]
fn variants_per_key_are_bounded() {
    let mut store = CacheStore::default();
    let values: Vec<String> = (0..=MAX_VARIANTS_PER_KEY)
        .map(|i| format!("t{i}"))
        .collect();
    for value in &values {
        let req = get("/a", &[("x-tenant", value)]);
        store_fresh(&mut store, &req, "x", &[("vary", "x-tenant")]).unwrap();
    }
    assert_eq!(store.stats().entries, MAX_VARIANTS_PER_KEY);
    assert_eq!(store.stats().evictions, 1);
    let first = get("/a", &[("x-tenant", "t0")]);
    assert_eq!(
        lookup(&mut store, &first, T0 + 1),
        Lookup::Miss,
        "oldest went"
    );
}

#[test]
fn answers_the_rules_refuse_are_never_served() {
    let mut store = CacheStore::default();
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], NotStored);
    let cases: [Case<'_>; 4] = [
        (
            "/no-store",
            &[("cache-control", "no-store")],
            NotStored::NoStore,
        ),
        (
            "/private",
            &[("cache-control", "private")],
            NotStored::Private,
        ),
        ("/vary", &[("vary", "*")], NotStored::VaryAny),
        ("/cookie", &[("set-cookie", "s=1")], NotStored::SetCookie),
    ];
    for (path, extra, why) in cases {
        let req = get(path, &[]);
        assert_eq!(
            store_fresh(&mut store, &req, "x", extra),
            Err(why),
            "{path}"
        );
        assert_eq!(lookup(&mut store, &req, T0 + 1), Lookup::Miss, "{path}");
    }
    let req = get("/expired", &[]);
    let rsp = response(200, &[("expires", &date(T0 - 10)), ("date", &date(T0))]);
    let rule = CacheRule::default();
    let stored = store.store(&rule, (&req).into(), (&rsp).into(), Bytes::new(), times(T0));
    assert_eq!(stored, Err(NotStored::AlreadyStale), "Expires in the past");
    assert_eq!(store.stats().entries, 0);
}

#[test]
fn heuristic_freshness_end_to_end() {
    let mut store = CacheStore::default();
    let req = get("/h", &[]);
    let modified = date(T0 - 36_000);
    let rsp = response(200, &[("last-modified", &modified), ("date", &date(T0))]);
    let rule = CacheRule::default();
    store
        .store(
            &rule,
            (&req).into(),
            (&rsp).into(),
            Bytes::from("h"),
            times(T0),
        )
        .unwrap();
    // 10% of 10 h = 1 h; the age counts from Date (T0): 1 s on arrival, then the clock.
    assert!(matches!(
        lookup(&mut store, &req, T0 + 3_599),
        Lookup::Fresh(_)
    ));
    assert_eq!(lookup(&mut store, &req, T0 + 3_600), Lookup::Miss);
}

#[test]
fn authorized_requests_bypass_unless_the_rule_and_the_answer_allow() {
    let mut store = CacheStore::default();
    let authed = get("/a", &[("authorization", "Bearer t")]);
    assert_eq!(
        lookup(&mut store, &authed, T0),
        Lookup::Bypass(BypassReason::Authorization)
    );
    let allow = CacheRule {
        allow_authorized: true,
        ..CacheRule::default()
    };
    let private_ish = response(200, &[("cache-control", "max-age=60")]);
    let public = response(200, &[("cache-control", "public, max-age=60")]);
    let store_with = |store: &mut CacheStore, rsp: &http::response::Parts| {
        store.store(
            &allow,
            (&authed).into(),
            rsp.into(),
            Bytes::from("a"),
            times(T0),
        )
    };
    assert_eq!(
        store_with(&mut store, &private_ish),
        Err(NotStored::Authorization)
    );
    store_with(&mut store, &public).unwrap();
    assert!(matches!(
        store.lookup(&allow, (&authed).into(), at(T0 + 2)),
        Lookup::Fresh(_)
    ));
}

#[test]
fn request_directives_steer_the_lookup() {
    let mut store = CacheStore::default();
    store_fresh(&mut store, &get("/a", &[]), "x", &[]).unwrap();
    let no_cache = get("/a", &[("cache-control", "no-cache")]);
    assert_eq!(lookup(&mut store, &no_cache, T0 + 1), Lookup::Miss);
    let pragma = get("/a", &[("pragma", "no-cache")]);
    assert_eq!(lookup(&mut store, &pragma, T0 + 1), Lookup::Miss);
    let young = get("/a", &[("cache-control", "max-age=5")]);
    assert!(matches!(
        lookup(&mut store, &young, T0 + 5),
        Lookup::Fresh(_)
    ));
    assert_eq!(lookup(&mut store, &young, T0 + 6), Lookup::Miss);
    let min_fresh = get("/a", &[("cache-control", "min-fresh=30")]);
    assert!(matches!(
        lookup(&mut store, &min_fresh, T0 + 30),
        Lookup::Fresh(_)
    ));
    assert_eq!(lookup(&mut store, &min_fresh, T0 + 31), Lookup::Miss);
    // no-store: may be answered from the store, its own answer is not stored.
    let no_store = get("/a", &[("cache-control", "no-store")]);
    assert!(matches!(
        lookup(&mut store, &no_store, T0 + 1),
        Lookup::Fresh(_)
    ));
    let fresh_answer = store_fresh(
        &mut store,
        &get("/b", &[("cache-control", "no-store")]),
        "",
        &[],
    );
    assert_eq!(fresh_answer, Err(NotStored::RequestNoStore));
}

#[test]
fn only_if_cached_gets_504_when_nothing_usable_is_stored() {
    let mut store = CacheStore::default();
    let only = get("/a", &[("cache-control", "only-if-cached")]);
    assert_eq!(lookup(&mut store, &only, T0), Lookup::OnlyIfCachedMiss);
    store_fresh(&mut store, &get("/a", &[]), "x", &[]).unwrap();
    assert!(matches!(
        lookup(&mut store, &only, T0 + 1),
        Lookup::Fresh(_)
    ));
    assert_eq!(
        lookup(&mut store, &only, T0 + 100),
        Lookup::OnlyIfCachedMiss
    );
    let conditional = get(
        "/a",
        &[
            ("cache-control", "only-if-cached"),
            ("if-none-match", "\"v\""),
        ],
    );
    assert_eq!(
        lookup(&mut store, &conditional, T0 + 1),
        Lookup::OnlyIfCachedMiss
    );
    let post = request(Method::POST, "/a", &[("cache-control", "only-if-cached")]);
    assert_eq!(
        lookup(&mut store, &post, T0 + 1),
        Lookup::Bypass(BypassReason::Method)
    );
}

#[test]
fn conditional_requests_are_forwarded_not_served() {
    let mut store = CacheStore::default();
    store_fresh(&mut store, &get("/a", &[]), "x", &[]).unwrap();
    let conditional = get("/a", &[("if-modified-since", &date(T0 - 100))]);
    assert_eq!(
        lookup(&mut store, &conditional, T0 + 1),
        Lookup::Bypass(BypassReason::Conditional)
    );
    assert_eq!(store.stats().bypasses, 1);
}

#[path = "store_bounds_tests.rs"]
mod bounds;
