//! The balancer under a service's backend policy: the algorithms within a locality, the
//! request limit, and the outlier and breaker overrides.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use mesh_core::api::{LocalityRoute, RouteEndpoint, ServiceRoute};
use mesh_core::breaker::BreakerState;
use mesh_core::locality::LocalityEntry;
use mesh_core::policy::backend_policy::{
    BackendPolicySpec, CircuitBreakerSpec, ConsistentHashSpec, LimitExceeded, LimitsSpec,
    LoadBalancerSpec, OutlierDetectionSpec,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

fn level(cluster: &str, ports: &[u16]) -> LocalityRoute {
    LocalityRoute {
        entry: LocalityEntry {
            cluster: cluster.into(),
            health: 1.0,
            reason: "test".into(),
        },
        endpoints: ports
            .iter()
            .map(|port| RouteEndpoint {
                address: SocketAddr::from(([127, 0, 0, 1], *port)),
                identity: "spiffe://x.mesh/ns/demo/sa/echo".into(),
                healthy: true,
                plaintext: false,
            })
            .collect(),
    }
}

fn single(ports: &[u16]) -> ServiceRoute {
    ServiceRoute {
        localities: vec![level("us-east", ports)],
    }
}

fn ep(cluster: &str, port: u16) -> EndpointRef {
    EndpointRef {
        cluster: cluster.into(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn balancer(policy: BackendPolicySpec, now: Instant) -> ServiceBalancer {
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    b.set_policy(Some(&policy), now);
    b
}

fn with_algorithm(load_balancer: LoadBalancerSpec) -> BackendPolicySpec {
    BackendPolicySpec {
        load_balancer,
        ..BackendPolicySpec::default()
    }
}

fn on_header(name: &str) -> BackendPolicySpec {
    with_algorithm(LoadBalancerSpec::ConsistentHash(ConsistentHashSpec {
        header: Some(name.into()),
        ..ConsistentHashSpec::default()
    }))
}

fn user(name: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-user", HeaderValue::from_str(name).unwrap());
    headers
}

/// The endpoint port of a first try of a request from `name`.
fn port_of(
    b: &mut ServiceBalancer,
    route: &ServiceRoute,
    name: &str,
    tried: &[EndpointRef],
    now: Instant,
    rng: &mut StdRng,
) -> u16 {
    let request = TryRequest {
        only_cluster: None,
        tried,
        hash_key: b.hash_key(&user(name), None),
    };
    b.pick(route, request, now, rng)
        .unwrap()
        .endpoint
        .address
        .port()
}

fn plain(tried: &[EndpointRef]) -> TryRequest<'_> {
    TryRequest {
        only_cluster: None,
        tried,
        hash_key: None,
    }
}

#[test]
fn consistent_hashing_keeps_each_key_on_one_endpoint() {
    let now = Instant::now();
    let mut b = balancer(on_header("x-user"), now);
    let mut rng = StdRng::seed_from_u64(1);
    let four = single(&[1, 2, 3, 4]);
    let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let first: HashMap<&str, u16> = users
        .iter()
        .map(|u| (u.as_str(), port_of(&mut b, &four, u, &[], now, &mut rng)))
        .collect();
    for _ in 0..5 {
        for u in &users {
            assert_eq!(
                port_of(&mut b, &four, u, &[], now, &mut rng),
                first[u.as_str()]
            );
        }
    }
    // The keys spread over every endpoint, not one arc.
    let used: HashSet<u16> = first.values().copied().collect();
    assert_eq!(used, HashSet::from([1, 2, 3, 4]));
    // In a fresh balancer (another sidecar), every key lands on the same endpoint.
    let mut other = balancer(on_header("x-user"), now);
    for u in &users {
        assert_eq!(
            port_of(&mut other, &four, u, &[], now, &mut rng),
            first[u.as_str()]
        );
    }
}

#[test]
fn removing_one_of_four_endpoints_moves_only_its_keys() {
    let now = Instant::now();
    let mut b = balancer(on_header("x-user"), now);
    let mut rng = StdRng::seed_from_u64(2);
    let users: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
    let before: Vec<u16> = users
        .iter()
        .map(|u| port_of(&mut b, &single(&[1, 2, 3, 4]), u, &[], now, &mut rng))
        .collect();
    let three = single(&[1, 2, 4]);
    b.retain(&three);
    let mut moved = 0;
    for (u, was) in users.iter().zip(&before) {
        let now_on = port_of(&mut b, &three, u, &[], now, &mut rng);
        if *was == 3 {
            moved += 1;
            assert_ne!(now_on, 3);
        } else {
            assert_eq!(now_on, *was, "{u} stayed on a remaining endpoint");
        }
    }
    assert!(
        moved > 50,
        "endpoint 3 held about a quarter of the keys: {moved}"
    );
    let ring_builds = b.levels["us-east"].chooser.rings_built();
    assert_eq!(
        ring_builds, 2,
        "one ring per endpoint set, none per request"
    );
}

#[test]
fn a_retry_skips_the_tried_endpoint_to_the_next_one_on_the_ring() {
    let now = Instant::now();
    let mut b = balancer(on_header("x-user"), now);
    let mut rng = StdRng::seed_from_u64(3);
    let four = single(&[1, 2, 3, 4]);
    let first = port_of(&mut b, &four, "alice", &[], now, &mut rng);
    let tried = [ep("us-east", first)];
    let retry = port_of(&mut b, &four, "alice", &tried, now, &mut rng);
    assert_ne!(retry, first);
    // The retry's endpoint is where alice goes once her endpoint is gone: the next on the ring.
    let without: Vec<u16> = [1, 2, 3, 4].into_iter().filter(|p| *p != first).collect();
    let mut fresh = balancer(on_header("x-user"), now);
    assert_eq!(
        port_of(&mut fresh, &single(&without), "alice", &[], now, &mut rng),
        retry
    );
}

#[test]
fn a_request_without_the_key_is_still_served() {
    let now = Instant::now();
    let mut b = balancer(on_header("x-user"), now);
    let mut rng = StdRng::seed_from_u64(4);
    assert_eq!(b.hash_key(&HeaderMap::new(), None), None);
    let mut ports = HashSet::new();
    for _ in 0..100 {
        let pick = b.pick(&single(&[1, 2, 3, 4]), plain(&[]), now, &mut rng);
        ports.insert(pick.unwrap().endpoint.address.port());
    }
    assert!(ports.len() > 1, "P2C spreads keyless requests: {ports:?}");
}

#[test]
fn round_robin_cycles_through_the_locality() {
    let now = Instant::now();
    let mut b = balancer(with_algorithm(LoadBalancerSpec::RoundRobin), now);
    let mut rng = StdRng::seed_from_u64(5);
    let three = single(&[1, 2, 3]);
    let ports: Vec<u16> = (0..9)
        .map(|_| {
            let pick = b.pick(&three, plain(&[]), now, &mut rng).unwrap();
            pick.endpoint.address.port()
        })
        .collect();
    // Whatever the random start, each endpoint in turn, in listed order.
    let start = ports[0];
    let expected: Vec<u16> = (0..9).map(|i| (start - 1 + i) % 3 + 1).collect();
    assert_eq!(ports, expected);
}

#[test]
fn least_request_avoids_a_busy_endpoint() {
    let now = Instant::now();
    let mut b = balancer(with_algorithm(LoadBalancerSpec::LeastRequest), now);
    let mut rng = StdRng::seed_from_u64(6);
    let three = single(&[1, 2, 3]);
    // Endpoint 1 has 5 requests in flight (held picks that skipped 2 and 3).
    let skip = [ep("us-east", 2), ep("us-east", 3)];
    let held: Vec<Pick> = (0..5)
        .map(|_| b.pick(&three, plain(&skip), now, &mut rng).unwrap())
        .collect();
    assert!(held.iter().all(|p| p.endpoint.address.port() == 1));
    for _ in 0..100 {
        let pick = b.pick(&three, plain(&[]), now, &mut rng).unwrap();
        assert_ne!(pick.endpoint.address.port(), 1);
    }
}

fn limited(max: u32) -> BackendPolicySpec {
    BackendPolicySpec {
        limits: LimitsSpec {
            max_requests_per_endpoint: Some(max),
            ..LimitsSpec::default()
        },
        ..BackendPolicySpec::default()
    }
}

#[test]
fn endpoints_at_their_limit_are_passed_over_then_the_pick_fails_fast() {
    let now = Instant::now();
    let mut b = balancer(limited(2), now);
    let mut rng = StdRng::seed_from_u64(7);
    let two = single(&[1, 2]);
    // Four requests fill both endpoints to their limit of 2, whatever P2C prefers.
    let held: Vec<Pick> = (0..4)
        .map(|_| b.pick(&two, plain(&[]), now, &mut rng).unwrap())
        .collect();
    let ports: Vec<u16> = held.iter().map(|p| p.endpoint.address.port()).collect();
    assert_eq!(ports.iter().filter(|p| **p == 1).count(), 2, "{ports:?}");
    let refused = b.pick(&two, plain(&[]), now, &mut rng).unwrap_err();
    assert_eq!(
        refused,
        NoPick::AtLimit(LimitExceeded::RequestsPerEndpoint { max: 2 })
    );
    // A finished request frees its endpoint at once.
    let freed = held[0].endpoint.address.port();
    drop(held.into_iter().next());
    let pick = b.pick(&two, plain(&[]), now, &mut rng).unwrap();
    assert_eq!(pick.endpoint.address.port(), freed);
    // Nothing left for a reason other than the limit is no endpoint, as before.
    let both = [ep("us-east", 1), ep("us-east", 2)];
    assert_eq!(
        b.pick(&two, plain(&both), now, &mut rng).unwrap_err(),
        NoPick::NoEndpoint
    );
}

#[test]
fn a_locality_at_its_limit_spills_to_the_next_one() {
    let now = Instant::now();
    let mut b = balancer(limited(1), now);
    let mut rng = StdRng::seed_from_u64(8);
    let route = ServiceRoute {
        localities: vec![level("us-east", &[1]), level("eu-central", &[11])],
    };
    let local = b.pick(&route, plain(&[]), now, &mut rng).unwrap();
    assert_eq!(local.cluster, "us-east");
    let spilled = b.pick(&route, plain(&[]), now, &mut rng).unwrap();
    assert_eq!(spilled.cluster, "eu-central");
    assert!(matches!(
        b.pick(&route, plain(&[]), now, &mut rng),
        Err(NoPick::AtLimit(_))
    ));
}

#[test]
fn outlier_overrides_apply_to_the_service_and_follow_changes() {
    let now = Instant::now();
    let strict = BackendPolicySpec {
        outlier_detection: Some(OutlierDetectionSpec {
            consecutive_failures: Some(1),
            ..OutlierDetectionSpec::default()
        }),
        ..BackendPolicySpec::default()
    };
    let mut b = balancer(strict.clone(), now);
    let mut rng = StdRng::seed_from_u64(9);
    let two = single(&[1, 2]);
    b.pick(&two, plain(&[]), now, &mut rng).unwrap();
    let failed = |b: &mut ServiceBalancer| {
        b.record_try(&ep("us-east", 1), false, Duration::from_millis(1), now)
            .ejected
    };
    assert!(failed(&mut b), "one failure ejects under the override");
    // Back to the sidecar's default (3 failures): the detector starts afresh.
    b.set_policy(None, now);
    assert!(!b.is_ejected(&ep("us-east", 1), now));
    assert!(!failed(&mut b) && !failed(&mut b));
    assert!(failed(&mut b), "the third failure ejects by default");
    // The same policy again changes nothing: the ejection stays.
    b.set_policy(None, now);
    assert!(b.is_ejected(&ep("us-east", 1), now));
}

#[test]
fn a_breaker_override_recreates_the_breakers_and_reports_the_reset() {
    let now = Instant::now();
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    let mut rng = StdRng::seed_from_u64(10);
    let wide = ServiceRoute {
        localities: vec![level("us-east", &[1, 2, 3, 4]), level("eu-central", &[11])],
    };
    b.pick(&wide, plain(&[]), now, &mut rng).unwrap();
    // Five failed requests open the default breaker (rate 0.5 over at least 5).
    for _ in 0..5 {
        b.record_request("us-east", false, now);
    }
    assert_eq!(b.take_transitions().len(), 1);
    let lenient = BackendPolicySpec {
        circuit_breaker: Some(CircuitBreakerSpec {
            failure_rate_threshold: Some(1.0),
            ..CircuitBreakerSpec::default()
        }),
        ..BackendPolicySpec::default()
    };
    b.set_policy(Some(&lenient), now);
    assert_eq!(
        b.take_transitions(),
        vec![BreakerTransition {
            cluster: "us-east".into(),
            from: BreakerState::Open,
            to: BreakerState::Closed,
        }]
    );
    // Under the override, failures no longer open it by rate.
    for _ in 0..20 {
        b.record_request("us-east", false, now);
    }
    let states = b.breaker_states(now);
    assert!(
        states.iter().all(|(_, s)| *s == BreakerState::Closed),
        "{states:?}"
    );
}

#[test]
fn changing_only_the_algorithm_keeps_outlier_state() {
    let now = Instant::now();
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    let mut rng = StdRng::seed_from_u64(11);
    let two = single(&[1, 2]);
    b.pick(&two, plain(&[]), now, &mut rng).unwrap();
    for _ in 0..3 {
        b.record_try(&ep("us-east", 1), false, Duration::from_millis(1), now);
    }
    assert!(b.is_ejected(&ep("us-east", 1), now));
    b.set_policy(Some(&with_algorithm(LoadBalancerSpec::RoundRobin)), now);
    assert!(b.is_ejected(&ep("us-east", 1), now));
    for _ in 0..10 {
        let pick = b.pick(&two, plain(&[]), now, &mut rng).unwrap();
        assert_eq!(
            pick.endpoint.address.port(),
            2,
            "round robin skips the ejected one"
        );
    }
}
