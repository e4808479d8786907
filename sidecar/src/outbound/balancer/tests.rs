use std::time::{Duration, Instant};

use mesh_core::api::{LocalityRoute, RouteEndpoint, ServiceRoute};
use mesh_core::breaker::BreakerState;
use mesh_core::locality::LocalityEntry;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

/// A try without a hash key, as these tests (written before backend policies) ask for one.
trait PickPlain {
    fn pick_plain(
        &mut self,
        route: &ServiceRoute,
        only_cluster: Option<&str>,
        tried: &[EndpointRef],
        now: Instant,
        rng: &mut StdRng,
    ) -> Option<Pick>;
}

impl PickPlain for ServiceBalancer {
    fn pick_plain(
        &mut self,
        route: &ServiceRoute,
        only_cluster: Option<&str>,
        tried: &[EndpointRef],
        now: Instant,
        rng: &mut StdRng,
    ) -> Option<Pick> {
        let request = TryRequest {
            only_cluster,
            tried,
            hash_key: None,
        };
        self.pick(route, request, now, rng).ok()
    }
}

fn endpoint(port: u16) -> RouteEndpoint {
    RouteEndpoint {
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        identity: "spiffe://x.mesh/ns/demo/sa/echo".into(),
        healthy: true,
        plaintext: false,
    }
}

fn level(cluster: &str, health: f64, ports: &[u16]) -> LocalityRoute {
    LocalityRoute {
        entry: LocalityEntry {
            cluster: cluster.into(),
            health,
            reason: "test".into(),
        },
        endpoints: ports.iter().map(|p| endpoint(*p)).collect(),
    }
}

/// us-east (local, endpoints 1 and 2) then eu-central (endpoints 11 and 12).
fn route() -> ServiceRoute {
    ServiceRoute {
        localities: vec![
            level("us-east", 1.0, &[1, 2]),
            level("eu-central", 1.0, &[11, 12]),
        ],
    }
}

fn ep(cluster: &str, port: u16) -> EndpointRef {
    EndpointRef {
        cluster: cluster.into(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn loads(b: &mut ServiceBalancer, route: &ServiceRoute, now: Instant) -> Vec<f64> {
    b.level_loads(route, None, now)
        .into_iter()
        .map(|(_, l)| l)
        .collect()
}

fn assert_close(actual: &[f64], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "{actual:?}");
    for (a, e) in actual.iter().zip(expected) {
        assert!((a - e).abs() < 1e-6, "{actual:?} != {expected:?}");
    }
}

fn fail(b: &mut ServiceBalancer, e: &EndpointRef, times: usize, now: Instant) -> bool {
    let mut ejected = false;
    for _ in 0..times {
        ejected |= b
            .record_try(e, false, Duration::from_millis(1), now)
            .ejected;
    }
    ejected
}

fn count_by_cluster(
    b: &mut ServiceBalancer,
    route: &ServiceRoute,
    now: Instant,
    n: usize,
) -> HashMap<String, usize> {
    let mut rng = StdRng::seed_from_u64(1);
    let mut counts = HashMap::new();
    for _ in 0..n {
        let pick = b
            .pick_plain(route, None, &[], now, &mut rng)
            .expect("an endpoint");
        *counts.entry(pick.cluster.clone()).or_default() += 1;
    }
    counts
}

#[test]
fn a_healthy_local_level_takes_all_traffic() {
    let now = Instant::now();
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    assert_close(&loads(&mut b, &route(), now), &[1.0, 0.0]);
    let counts = count_by_cluster(&mut b, &route(), now, 200);
    assert_eq!(counts.get("us-east"), Some(&200), "{counts:?}");
}

#[test]
fn a_half_ejected_local_level_spills_part_of_the_traffic() {
    let now = Instant::now();
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    loads(&mut b, &route(), now);
    assert!(
        fail(&mut b, &ep("us-east", 1), 3, now),
        "third failure ejects"
    );
    assert!(b.is_ejected(&ep("us-east", 1), now));
    // Health 0.5 x 1.4 = 0.7 stays, 0.3 spills; the breaker stays closed at share 0.5.
    assert_close(&loads(&mut b, &route(), now), &[0.7, 0.3]);
    let counts = count_by_cluster(&mut b, &route(), now, 2000);
    let local = counts["us-east"] as f64 / 2000.0;
    assert!((local - 0.7).abs() < 0.05, "{counts:?}");
    // The ejected endpoint gets nothing.
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..200 {
        let pick = b.pick_plain(&route(), None, &[], now, &mut rng).unwrap();
        assert_ne!(pick.key(), ep("us-east", 1));
    }
}

#[test]
fn an_open_local_breaker_sends_everything_to_the_next_level() {
    let now = Instant::now();
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    let wide = ServiceRoute {
        localities: vec![
            level("us-east", 1.0, &[1, 2, 3, 4]),
            level("eu-central", 1.0, &[11]),
        ],
    };
    loads(&mut b, &wide, now);
    // Five failed requests spread so that no endpoint is ejected: the failure rate opens the
    // breaker.
    for port in [1, 2, 3, 4, 1] {
        fail(&mut b, &ep("us-east", port), 1, now);
        b.record_request("us-east", false, now);
    }
    assert!((1..=4).all(|p| !b.is_ejected(&ep("us-east", p), now)));
    assert_close(&loads(&mut b, &wide, now), &[0.0, 1.0]);
    let t = b.take_transitions();
    assert_eq!(
        t,
        vec![BreakerTransition {
            cluster: "us-east".into(),
            from: BreakerState::Closed,
            to: BreakerState::Open
        }]
    );
    let counts = count_by_cluster(&mut b, &wide, now, 100);
    assert_eq!(counts.get("eu-central"), Some(&100), "{counts:?}");
}

#[test]
fn failback_ramps_up_after_recovery() {
    let t0 = Instant::now();
    let single = ServiceRoute {
        localities: vec![level("us-east", 1.0, &[1]), level("eu-central", 1.0, &[11])],
    };
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    assert_close(&loads(&mut b, &single, t0), &[1.0, 0.0]);
    // The only local endpoint is ejected: healthy share 0 opens the breaker.
    assert!(fail(&mut b, &ep("us-east", 1), 3, t0));
    assert_close(&loads(&mut b, &single, t0), &[0.0, 1.0]);
    // After the 5 s cool-down the breaker half-opens: the level comes back at 10% health.
    let t1 = t0 + Duration::from_secs(5);
    assert_close(&loads(&mut b, &single, t1), &[0.14, 0.86]);
    // Probes go one at a time; three successes close the breaker.
    let mut rng = StdRng::seed_from_u64(9);
    for _ in 0..3 {
        let probe = loop {
            let pick = b
                .pick_plain(&single, Some("us-east"), &[], t1, &mut rng)
                .expect("a probe is admitted");
            if pick.cluster == "us-east" {
                break pick;
            }
        };
        assert!(
            b.pick_plain(&single, Some("us-east"), &[], t1, &mut rng)
                .is_none(),
            "one probe in flight at a time"
        );
        b.record_try(&probe.key(), true, Duration::from_millis(1), t1);
        b.record_request("us-east", true, t1);
    }
    assert_eq!(
        b.breaker_states(t1),
        vec![
            ("eu-central".into(), BreakerState::Closed),
            ("us-east".into(), BreakerState::Closed)
        ]
    );
    // The ramp goes on: half-way 55% health (x1.4 = 0.77 of the traffic), then all of it.
    assert_close(
        &loads(&mut b, &single, t1 + Duration::from_secs(5)),
        &[0.77, 0.23],
    );
    assert_close(
        &loads(&mut b, &single, t1 + Duration::from_secs(10)),
        &[1.0, 0.0],
    );
}

#[test]
fn a_request_rescued_by_a_sibling_does_not_count_against_the_locality() {
    let now = Instant::now();
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    loads(&mut b, &route(), now);
    // Endpoint 1 fails every try, each request is saved on endpoint 2 in the same locality.
    for _ in 0..10 {
        fail(&mut b, &ep("us-east", 1), 1, now);
        b.record_try(&ep("us-east", 2), true, Duration::from_millis(1), now);
        b.record_request("us-east", true, now);
    }
    assert!(b.is_ejected(&ep("us-east", 1), now));
    let states = b.breaker_states(now);
    assert!(
        states.iter().all(|(_, s)| *s == BreakerState::Closed),
        "{states:?}"
    );
    assert_close(&loads(&mut b, &route(), now), &[0.7, 0.3]);
}

#[test]
fn retries_skip_tried_endpoints_and_move_to_the_next_level() {
    let now = Instant::now();
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    let mut rng = StdRng::seed_from_u64(5);
    let tried = vec![ep("us-east", 1)];
    for _ in 0..50 {
        assert_eq!(
            b.pick_plain(&route(), None, &tried, now, &mut rng)
                .unwrap()
                .key(),
            ep("us-east", 2)
        );
    }
    let tried = vec![ep("us-east", 1), ep("us-east", 2)];
    assert_eq!(
        b.pick_plain(&route(), None, &tried, now, &mut rng)
            .unwrap()
            .cluster,
        "eu-central"
    );
    let all = vec![
        ep("us-east", 1),
        ep("us-east", 2),
        ep("eu-central", 11),
        ep("eu-central", 12),
    ];
    assert!(b.pick_plain(&route(), None, &all, now, &mut rng).is_none());
}

#[test]
fn a_named_cluster_is_the_only_level() {
    let now = Instant::now();
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..50 {
        assert_eq!(
            b.pick_plain(&route(), Some("eu-central"), &[], now, &mut rng)
                .unwrap()
                .cluster,
            "eu-central"
        );
    }
    assert!(
        b.pick_plain(&route(), Some("us-west"), &[], now, &mut rng)
            .is_none()
    );
}

#[test]
fn p2c_prefers_the_fast_and_idle_endpoint() {
    let now = Instant::now();
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    let mut rng = StdRng::seed_from_u64(5);
    // Both under the latency weighting's slack, so no locality probe interferes.
    b.record_try(&ep("us-east", 1), true, Duration::from_millis(40), now);
    b.record_try(&ep("us-east", 2), true, Duration::from_millis(2), now);
    for _ in 0..50 {
        assert_eq!(
            b.pick_plain(&route(), None, &[], now, &mut rng)
                .unwrap()
                .key(),
            ep("us-east", 2)
        );
    }
    // Held picks count as in flight: 200 requests pending on the fast one make it the costly one.
    let held: Vec<Pick> = (0..200)
        .map(|_| {
            b.pick_plain(&route(), None, &[ep("us-east", 1)], now, &mut rng)
                .unwrap()
        })
        .collect();
    assert_eq!(
        b.pick_plain(&route(), None, &[], now, &mut rng)
            .unwrap()
            .key(),
        ep("us-east", 1)
    );
    drop(held);
    assert_eq!(
        b.pick_plain(&route(), None, &[], now, &mut rng)
            .unwrap()
            .key(),
        ep("us-east", 2)
    );
}

#[test]
fn endpoints_the_controller_marks_unhealthy_are_not_picked() {
    let now = Instant::now();
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    let mut r = route();
    r.localities[0].endpoints[0].healthy = false;
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..50 {
        assert_eq!(
            b.pick_plain(&r, None, &[], now, &mut rng).unwrap().key(),
            ep("us-east", 2)
        );
    }
}

#[test]
fn with_every_endpoint_ejected_panic_routing_follows_the_controller() {
    let now = Instant::now();
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    let mut rng = StdRng::seed_from_u64(9);
    // A restarted gateway made every endpoint fail for a moment: all ejected, breakers open.
    for e in [
        ep("us-east", 1),
        ep("us-east", 2),
        ep("eu-central", 11),
        ep("eu-central", 12),
    ] {
        fail(&mut b, &e, 5, now);
    }
    assert_close(&loads(&mut b, &route(), now), &[0.0, 0.0]);
    // Rather than refuse everything, route by the controller's view: its first healthy level.
    let pick = b
        .pick_plain(&route(), None, &[], now, &mut rng)
        .expect("panic routing");
    assert_eq!(pick.cluster, "us-east");
    // Still never an endpoint this request already tried, and on to the next level after.
    let tried = vec![ep("us-east", 1), ep("us-east", 2)];
    let pick = b
        .pick_plain(&route(), None, &tried, now, &mut rng)
        .expect("next level");
    assert_eq!(pick.cluster, "eu-central");
    // The controller's breaker quorum (health 0) does not stop panic routing: those verdicts
    // come from the very failures panic routing second-guesses.
    let reported = ServiceRoute {
        localities: vec![
            level("us-east", 0.0, &[1, 2]),
            level("eu-central", 0.0, &[11, 12]),
        ],
    };
    assert_eq!(
        b.pick_plain(&reported, None, &[], now, &mut rng)
            .expect("panic")
            .cluster,
        "us-east"
    );
    // Endpoints their own cluster marks unhealthy are never used, even in panic.
    let mut dead = reported.clone();
    for l in &mut dead.localities {
        for e in &mut l.endpoints {
            e.healthy = false;
        }
    }
    assert!(b.pick_plain(&dead, None, &[], now, &mut rng).is_none());
}

/// Feeds `latency` for `cluster`'s endpoint `port` at 100 successful tries a second for `ms`.
fn serve_at(
    b: &mut ServiceBalancer,
    cluster: &str,
    port: u16,
    latency: Duration,
    start: Instant,
    ms: u64,
) -> Instant {
    let mut now = start;
    for _ in 0..ms / 10 {
        now += Duration::from_millis(10);
        b.record_try(&ep(cluster, port), true, latency, now);
        b.observe_locality_latency(cluster, latency, now);
    }
    now
}

#[test]
fn a_slow_local_region_is_probed_around_and_gives_its_traffic_to_the_fast_one() {
    let start = Instant::now();
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    let mut rng = StdRng::seed_from_u64(8);
    assert_close(&loads(&mut b, &route(), start), &[1.0, 0.0]);
    // The local region turns slow: its first pick after that is a probe of eu-central.
    let now = serve_at(
        &mut b,
        "us-east",
        1,
        Duration::from_millis(500),
        start,
        3000,
    );
    let probe = b.pick_plain(&route(), None, &[], now, &mut rng).unwrap();
    assert_eq!(probe.cluster, "eu-central");
    // Still unmeasured: the load has not moved yet.
    assert_close(&loads(&mut b, &route(), now), &[1.0, 0.0]);
    b.observe_locality_latency(&probe.cluster, Duration::from_millis(3), now);
    let moved = loads(&mut b, &route(), now);
    assert!(moved[0] < 0.01 && moved[1] > 0.99, "{moved:?}");
    let shifts = b.take_latency_shifts();
    assert_eq!(shifts.len(), 1, "{shifts:?}");
    assert!(
        shifts[0].cluster == "us-east" && shifts[0].shifted,
        "{shifts:?}"
    );
    let counts = count_by_cluster(&mut b, &route(), now, 1000);
    assert!(
        counts.get("us-east").copied().unwrap_or(0) < 10,
        "{counts:?}"
    );
}

#[test]
fn a_healed_region_gets_its_traffic_back_after_a_probe() {
    let start = Instant::now();
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    let mut rng = StdRng::seed_from_u64(9);
    loads(&mut b, &route(), start);
    let now = serve_at(
        &mut b,
        "us-east",
        1,
        Duration::from_millis(500),
        start,
        3000,
    );
    let now = serve_at(
        &mut b,
        "eu-central",
        11,
        Duration::from_millis(3),
        now,
        1000,
    );
    assert!(loads(&mut b, &route(), now)[0] < 0.01);
    // Five seconds without a us-east sample: the next first try probes it.
    let later = now + Duration::from_secs(5);
    let probe = b.pick_plain(&route(), None, &[], later, &mut rng).unwrap();
    assert_eq!(probe.key().cluster, "us-east");
    // A retry is never a probe.
    let retry = b.pick_plain(&route(), None, &[ep("eu-central", 11)], later, &mut rng);
    assert_eq!(retry.unwrap().cluster, "eu-central");
    b.observe_locality_latency(&probe.cluster, Duration::from_millis(2), later);
    assert_close(&loads(&mut b, &route(), later), &[1.0, 0.0]);
    let shifts: Vec<bool> = b.take_latency_shifts().iter().map(|s| s.shifted).collect();
    assert_eq!(shifts, vec![true, false]);
}

#[test]
fn latency_never_moves_traffic_off_a_pinned_cluster() {
    let start = Instant::now();
    let mut b = ServiceBalancer::new(ResilienceConfig::default());
    let mut rng = StdRng::seed_from_u64(10);
    let now = serve_at(
        &mut b,
        "us-east",
        1,
        Duration::from_millis(500),
        start,
        2000,
    );
    let now = serve_at(
        &mut b,
        "eu-central",
        11,
        Duration::from_millis(3),
        now,
        1000,
    );
    for _ in 0..100 {
        let pick = b
            .pick_plain(&route(), Some("us-east"), &[], now, &mut rng)
            .unwrap();
        assert_eq!(pick.cluster, "us-east");
    }
}
