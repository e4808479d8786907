//! The store's bounds (bytes, entry size) and invalidation by writes.

use super::*;

/// Stores `/p<i>` with a body of `len` bytes, returning the entry's size.
fn store_sized(store: &mut CacheStore, i: usize, len: usize) -> usize {
    let before = store.stats().bytes_in_use;
    store_fresh(store, &get(&format!("/p{i}"), &[]), "x".repeat(len), &[]).unwrap();
    store.stats().bytes_in_use - before
}

#[test]
fn the_least_recently_used_entry_is_evicted_under_the_byte_bound() {
    let mut probe = CacheStore::default();
    let size = store_sized(&mut probe, 0, 1000);
    let mut store = CacheStore::new(3 * size);
    for i in 0..3 {
        store_sized(&mut store, i, 1000);
    }
    assert_eq!(store.stats().bytes_in_use, 3 * size);
    // Use /p0, so /p1 is now the least recently used.
    assert!(matches!(
        lookup(&mut store, &get("/p0", &[]), T0 + 1),
        Lookup::Fresh(_)
    ));
    store_sized(&mut store, 3, 1000);
    let s = store.stats();
    assert_eq!((s.entries, s.evictions, s.bytes_in_use), (3, 1, 3 * size));
    assert_eq!(lookup(&mut store, &get("/p1", &[]), T0 + 1), Lookup::Miss);
    for kept in ["/p0", "/p2", "/p3"] {
        assert!(
            matches!(
                lookup(&mut store, &get(kept, &[]), T0 + 1),
                Lookup::Fresh(_)
            ),
            "{kept}"
        );
    }
    // A bigger entry evicts as many as it needs.
    store_fresh(&mut store, &get("/p4", &[]), "x".repeat(2000), &[]).unwrap();
    assert!(store.stats().bytes_in_use <= store.capacity());
    assert_eq!(store.stats().entries, 2);
}

#[test]
fn entries_over_the_bounds_are_not_stored() {
    let mut store = CacheStore::new(10_000);
    let big = "x".repeat(20_000);
    let rsp = response(200, &[("cache-control", "max-age=60")]);
    let req = get("/big", &[]);
    let rule = CacheRule::default();
    let outcome = store.store(
        &rule,
        (&req).into(),
        (&rsp).into(),
        Bytes::from(big),
        times(T0),
    );
    assert_eq!(outcome, Err(NotStored::TooLarge), "over the store");
    let small_rule = CacheRule {
        max_entry_bytes: 500,
        ..CacheRule::default()
    };
    let body = Bytes::from("x".repeat(500));
    let outcome = store.store(&small_rule, (&req).into(), (&rsp).into(), body, times(T0));
    assert_eq!(
        outcome,
        Err(NotStored::TooLarge),
        "body + headers + key over 500"
    );
    assert_eq!(store.stats().entries, 0);
}

#[test]
fn unsafe_methods_invalidate_the_target_and_same_authority_locations() {
    let mut store = CacheStore::default();
    for path in ["/a", "/b", "/c"] {
        store_fresh(&mut store, &get(path, &[]), "x", &[]).unwrap();
    }
    let post = request(Method::POST, "/a", &[]);
    let failed = response(500, &[]);
    assert_eq!(store.invalidate((&post).into(), (&failed).into()), 0);
    let created = response(
        201,
        &[("location", "/b"), ("content-location", "http://other/c")],
    );
    assert_eq!(
        store.invalidate((&post).into(), (&created).into()),
        2,
        "/a and /b"
    );
    assert_eq!(lookup(&mut store, &get("/a", &[]), T0 + 1), Lookup::Miss);
    assert_eq!(lookup(&mut store, &get("/b", &[]), T0 + 1), Lookup::Miss);
    assert!(matches!(
        lookup(&mut store, &get("/c", &[]), T0 + 1),
        Lookup::Fresh(_)
    ));
    let read = get("/c", &[]);
    assert_eq!(
        store.invalidate((&read).into(), (&response(200, &[])).into()),
        0
    );
    let s = store.stats();
    assert_eq!((s.invalidations, s.entries), (2, 1));
}

#[test]
fn a_head_200_drops_the_get_it_would_have_checked() {
    let mut store = CacheStore::default();
    store_fresh(&mut store, &get("/a", &[]), "old", &[]).unwrap();
    store_fresh(&mut store, &request(Method::HEAD, "/a", &[]), "", &[]).unwrap();
    assert_eq!(lookup(&mut store, &get("/a", &[]), T0 + 1), Lookup::Miss);
    assert!(matches!(
        lookup(&mut store, &request(Method::HEAD, "/a", &[]), T0 + 1),
        Lookup::Fresh(_)
    ));
    store.clear();
    assert_eq!(store.stats().entries, 0);
    assert_eq!(store.stats().bytes_in_use, 0);
}
