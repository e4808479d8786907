use std::collections::HashMap;

use super::*;

const KEYS: usize = 10_000;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| n.to_string()).collect()
}

fn keys() -> Vec<u64> {
    (0..KEYS)
        .map(|i| stable_hash(format!("session-{i}").as_bytes()))
        .collect()
}

/// The endpoint name each key maps to on the ring of `endpoints`.
fn assignment(endpoints: &[String], keys: &[u64]) -> Vec<String> {
    let ring = HashRing::new(endpoints);
    keys.iter()
        .map(|k| endpoints[ring.pick(*k).unwrap()].clone())
        .collect()
}

const FOUR: [&str; 4] = [
    "us-east/10.0.0.1:4143",
    "us-east/10.0.0.2:4143",
    "us-east/10.0.0.3:4143",
    "us-east/10.0.0.4:4143",
];

#[test]
fn an_empty_ring_picks_nothing_and_one_endpoint_takes_every_key() {
    let empty = HashRing::new::<String>(&[]);
    assert!(empty.is_empty());
    assert_eq!(empty.pick(42), None);
    let one = HashRing::new(&["only"]);
    assert_eq!(one.len(), 1);
    assert!(keys().iter().all(|k| one.pick(*k) == Some(0)));
    assert_eq!(
        one.pick(u64::MAX),
        Some(0),
        "keys past the last point wrap around"
    );
}

#[test]
fn each_key_always_maps_to_the_same_endpoint_whatever_the_listing_order() {
    let endpoints = names(&FOUR);
    let keys = keys();
    let first = assignment(&endpoints, &keys);
    assert_eq!(assignment(&endpoints, &keys), first);
    let reversed: Vec<String> = endpoints.iter().rev().cloned().collect();
    assert_eq!(
        assignment(&reversed, &keys),
        first,
        "another sidecar's order"
    );
}

#[test]
fn four_endpoints_share_the_keys_evenly() {
    let counts = assignment(&names(&FOUR), &keys()).into_iter().fold(
        HashMap::<String, usize>::new(),
        |mut counts, name| {
            *counts.entry(name).or_default() += 1;
            counts
        },
    );
    assert_eq!(counts.len(), 4);
    for (name, count) in &counts {
        // Within 20% of the fair 25%: from 20% to 30% of the keys.
        assert!(
            (2_000..=3_000).contains(count),
            "{name}: {count} of {KEYS} ({counts:?})"
        );
    }
}

#[test]
fn removing_an_endpoint_moves_exactly_its_keys() {
    let keys = keys();
    let all = names(&FOUR);
    let before = assignment(&all, &keys);
    let removed = &all[1];
    let rest: Vec<String> = all.iter().filter(|n| *n != removed).cloned().collect();
    let after = assignment(&rest, &keys);
    let mut spread = HashMap::<&str, usize>::new();
    for (old, new) in before.iter().zip(&after) {
        if old == removed {
            *spread.entry(new.as_str()).or_default() += 1;
        } else {
            assert_eq!(old, new, "a key not on the removed endpoint moved");
        }
    }
    // The removed endpoint's keys spread over all three others, not onto one neighbour.
    assert_eq!(spread.len(), 3, "{spread:?}");
}

#[test]
fn adding_an_endpoint_moves_about_a_fifth_of_the_keys_all_to_it() {
    let keys = keys();
    let four = names(&FOUR);
    let mut five = four.clone();
    five.push("us-east/10.0.0.5:4143".to_string());
    let before = assignment(&four, &keys);
    let after = assignment(&five, &keys);
    let mut moved = 0;
    for (old, new) in before.iter().zip(&after) {
        if old != new {
            assert_eq!(new, &five[4], "a key moved between endpoints that stayed");
            moved += 1;
        }
    }
    let share = moved as f64 / KEYS as f64;
    assert!((0.15..=0.25).contains(&share), "{moved} of {KEYS} moved");
}

#[test]
fn skipping_an_unusable_endpoint_sends_its_keys_where_removal_would() {
    let keys = keys();
    let all = names(&FOUR);
    let ring = HashRing::new(&all);
    let without: Vec<String> = all.iter().filter(|n| *n != &all[2]).cloned().collect();
    let removed = assignment(&without, &keys);
    for (key, expected) in keys.iter().zip(&removed) {
        let picked = ring.pick_where(*key, |i| i != 2).unwrap();
        assert_eq!(&all[picked], expected);
    }
}

#[test]
fn nothing_usable_gives_none_after_asking_each_endpoint_once() {
    let ring = HashRing::new(&names(&FOUR));
    let mut asked = [0usize; 4];
    let picked = ring.pick_where(stable_hash(b"k"), |i| {
        asked[i] += 1;
        false
    });
    assert_eq!(picked, None);
    assert_eq!(asked, [1, 1, 1, 1]);
}

#[test]
fn a_name_listed_twice_is_on_the_ring_once_at_its_first_index() {
    let ring = HashRing::new(&["a", "b", "a"]);
    assert_eq!(ring.len(), 2);
    let keys = keys();
    assert!(keys.iter().all(|k| ring.pick(*k) != Some(2)));
    assert_eq!(ring, HashRing::new(&["a", "b"]).with_listed(3));
}

impl HashRing {
    /// The same ring, as if built from a list of `listed` entries.
    fn with_listed(mut self, listed: usize) -> Self {
        self.listed = listed;
        self
    }
}
