//! Criterion micro-benchmarks of the data and control plane's hot paths, each raced against the
//! naive alternative where there is one (the pingora habit: keep the baseline in the same run).
//!
//! `cargo bench -p mesh-benches` runs them all; `cargo bench -p mesh-benches --bench hot_paths --
//! lookup` one group.

use std::collections::{BTreeMap, VecDeque};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mesh_core::api::{LocalityRoute, RouteEndpoint, ServiceRoute, SidecarSnapshot};
use mesh_core::balance::p2c_pick;
use mesh_core::breaker::{BreakerConfig, CircuitBreaker};
use mesh_core::catalog::{CatalogMessage, ExportCatalog, ExportedEndpoint, ExportedService};
use mesh_core::locality::{LocalityCandidate, LocalityEntry, LocalityPolicy, locality_order};
use mesh_core::names::ServiceKey;
use mesh_core::outlier::{OutlierConfig, OutlierDetector};
use mesh_core::wire::StreamHeader;
use mesh_sidecar::outbound::balancer::{ResilienceConfig, ServiceBalancer, TryRequest};
use mesh_sidecar::outbound::resolve::{Lookup, destination, lookup};
use rand::SeedableRng;
use rand::rngs::StdRng;

const SERVICES: usize = 1_000;
const ENDPOINTS_PER_SERVICE: usize = 10;
const CLUSTERS: [&str; 3] = ["us-east", "us-west", "eu-central"];

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 8443))
}

fn key(i: usize) -> ServiceKey {
    ServiceKey::new(&format!("svc-{i}"), "bench").expect("valid name")
}

fn route(service: usize, endpoints: usize) -> ServiceRoute {
    let per = endpoints.div_ceil(CLUSTERS.len());
    ServiceRoute {
        localities: CLUSTERS
            .iter()
            .enumerate()
            .map(|(c, cluster)| LocalityRoute {
                entry: LocalityEntry {
                    cluster: cluster.to_string(),
                    health: 1.0,
                    reason: "bench".into(),
                },
                endpoints: (0..per)
                    .map(|e| RouteEndpoint {
                        address: addr(service * 64 + c * per + e),
                        identity: format!("spiffe://{cluster}.mesh/ns/bench/sa/svc-{service}"),
                        healthy: true,
                        plaintext: false,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// 1,000 services with 10 endpoints each (10,000 endpoints), as a sidecar holds them.
fn snapshot() -> SidecarSnapshot {
    SidecarSnapshot {
        version: 1,
        cluster: "us-east".into(),
        trust_bundles: vec![],
        gateway: None,
        services: (0..SERVICES)
            .map(|i| (key(i), route(i, ENDPOINTS_PER_SERVICE)))
            .collect(),
        unknown: vec![],
        policies: Default::default(),
        epoch: 0,
        warming: false,
    }
}

/// The naive sidecar: a list of (host, route) scanned for the request's host.
fn linear_lookup<'a>(
    table: &'a [(String, ServiceRoute)],
    authority: &str,
) -> Option<&'a LocalityRoute> {
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    for (service_host, route) in table {
        // `<svc>.<ns>.svc.<cluster>.clusterset.local` or `<svc>.<ns>.svc.clusterset.local`.
        let Some(rest) = host.strip_prefix(service_host.trim_end_matches("clusterset.local"))
        else {
            continue;
        };
        let cluster = rest.strip_suffix(".clusterset.local");
        return match cluster {
            Some(c) => route.localities.iter().find(|l| l.entry.cluster == c),
            None if rest == "clusterset.local" => route.localities.first(),
            None => continue,
        };
    }
    None
}

fn lookup_benches(c: &mut Criterion) {
    let snap = snapshot();
    let table: Vec<(String, ServiceRoute)> = snap
        .services
        .iter()
        .map(|(k, r)| (k.clusterset_host(), r.clone()))
        .collect();
    // A service in the middle of the order, aimed at one cluster: the route match must find
    // the named locality too.
    let authority = "svc-617.bench.svc.eu-central.clusterset.local:80";
    assert!(linear_lookup(&table, authority).is_some());
    let mut g = c.benchmark_group("lookup_1000_services_10000_endpoints");
    g.bench_function("sidecar_parse_and_btree_lookup", |b| {
        b.iter(|| {
            let dest = destination(black_box(authority)).expect("mesh name");
            match lookup(&snap, &dest).expect("known cluster") {
                Lookup::Route(route) => {
                    let cluster = dest.cluster.as_deref().unwrap_or("us-east");
                    black_box(route.localities.iter().find(|l| l.entry.cluster == cluster))
                }
                _ => None,
            }
        })
    });
    g.bench_function("naive_linear_scan", |b| {
        b.iter(|| black_box(linear_lookup(&table, black_box(authority))))
    });
    g.finish();
}

fn balance_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("endpoint_pick");
    let mut rng = StdRng::seed_from_u64(7);
    for n in [10usize, 100] {
        let costs: Vec<f64> = (0..n).map(|i| 0.001 * (1 + i % 7) as f64).collect();
        g.bench_function(format!("p2c_{n}_endpoints"), |b| {
            b.iter(|| black_box(p2c_pick(black_box(&costs), &mut rng)))
        });
        g.bench_function(format!("naive_least_cost_scan_{n}_endpoints"), |b| {
            b.iter(|| {
                black_box(
                    costs
                        .iter()
                        .enumerate()
                        .min_by(|a, b| a.1.total_cmp(b.1))
                        .map(|(i, _)| i),
                )
            })
        });
    }
    // The sidecar's whole pick: spill over three localities, latency weighting, outlier
    // filter, P2C, in-flight; against the same pick without latency weighting, its cost.
    let route = route(1, 30);
    let now = Instant::now();
    for (name, latency_weighting) in [
        ("service_balancer_pick_3_localities_30_endpoints", true),
        (
            "service_balancer_pick_3_localities_30_endpoints_no_latency_weighting",
            false,
        ),
    ] {
        let mut config = ResilienceConfig::default();
        config.latency.enabled = latency_weighting;
        let mut balancer = ServiceBalancer::new(config);
        g.bench_function(name, |b| {
            b.iter(|| {
                let request = TryRequest {
                    only_cluster: None,
                    tried: &[],
                    hash_key: None,
                };
                black_box(balancer.pick(&route, request, now, &mut rng))
            })
        });
    }
    g.finish();
}

/// The naive breaker: every outcome kept with its time, the window scanned on each failure.
struct SlidingLogBreaker {
    window: Duration,
    outcomes: VecDeque<(Instant, bool)>,
    open: bool,
}

impl SlidingLogBreaker {
    fn record(&mut self, ok: bool, now: Instant) {
        self.outcomes.push_back((now, ok));
        while self
            .outcomes
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.window)
        {
            self.outcomes.pop_front();
        }
        let failures = self.outcomes.iter().filter(|(_, ok)| !ok).count();
        self.open = self.outcomes.len() >= 5 && failures * 2 > self.outcomes.len();
    }
}

fn resilience_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("resilience_update");
    let start = Instant::now();
    let endpoints: Vec<SocketAddr> = (0..100).map(addr).collect();
    let mut detector = OutlierDetector::new(OutlierConfig::default());
    detector.retain(&endpoints);
    let mut i = 0usize;
    g.bench_function("outlier_record_success_100_endpoints", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            detector.record_success(endpoints[i % 100], start + Duration::from_micros(i as u64));
        })
    });
    g.bench_function("outlier_record_failure_100_endpoints", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(
                detector
                    .record_failure(endpoints[i % 100], start + Duration::from_micros(i as u64)),
            )
        })
    });
    // 1,000 requests/s for the 10 s window: the sliding log holds 10,000 outcomes.
    let mut breaker = CircuitBreaker::new(BreakerConfig::default());
    let mut naive = SlidingLogBreaker {
        window: Duration::from_secs(10),
        outcomes: VecDeque::new(),
        open: false,
    };
    let mut t = start;
    for _ in 0..10_000 {
        t += Duration::from_millis(1);
        breaker.record_success(t);
        naive.record(true, t);
    }
    let mut n = 0u64;
    g.bench_function("breaker_record_bucketed_window", |b| {
        b.iter(|| {
            n += 1;
            let now = t + Duration::from_millis(n);
            if n.is_multiple_of(10) {
                breaker.record_failure(now);
            } else {
                breaker.record_success(now);
            }
            black_box(breaker.allow_request(now))
        })
    });
    let mut m = 0u64;
    g.bench_function("naive_breaker_sliding_log_10000_outcomes", |b| {
        b.iter(|| {
            m += 1;
            naive.record(!m.is_multiple_of(10), t + Duration::from_millis(m));
            black_box(naive.open)
        })
    });
    g.finish();
}

fn locality_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("locality_order");
    let policy = LocalityPolicy {
        region_priority: vec!["eu".into(), "us-west".into()],
        ..Default::default()
    };
    for n in [3usize, 30] {
        let candidates: Vec<LocalityCandidate> = (0..n)
            .map(|i| LocalityCandidate {
                cluster: format!("cluster-{i}"),
                region: ["us-east", "us-west", "eu", "ap"][i % 4].into(),
                reachable: i % 5 != 4,
                rtt: Some(Duration::from_millis((i * 7 % 50) as u64)),
                healthy_endpoints: 8,
                total_endpoints: 10,
                breaker_open_reports: (i % 3) as u32,
                reporting_sidecars: 4,
            })
            .collect();
        g.bench_function(format!("{n}_clusters"), |b| {
            b.iter(|| black_box(locality_order("cluster-0", &policy, black_box(&candidates))))
        });
    }
    g.finish();
}

/// The naive header: the same fields as JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct JsonHeader {
    kind: u8,
    cluster: String,
    service: String,
    endpoint: Option<SocketAddr>,
    trace: String,
}

fn wire_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream_header");
    let mut header = StreamHeader::tunnel("eu-central", "echo.demo", addr(42));
    header.trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into();
    let bytes = header.encode().expect("encodes");
    g.bench_function("encode", |b| b.iter(|| black_box(header.encode())));
    g.bench_function("decode", |b| {
        b.iter(|| black_box(StreamHeader::decode(black_box(&bytes))))
    });
    let json = JsonHeader {
        kind: 1,
        cluster: header.cluster.clone(),
        service: header.service.clone(),
        endpoint: header.endpoint,
        trace: header.trace.clone(),
    };
    let json_bytes = serde_json::to_vec(&json).expect("encodes");
    g.bench_function("naive_json_encode", |b| {
        b.iter(|| black_box(serde_json::to_vec(&json)))
    });
    g.bench_function("naive_json_decode", |b| {
        b.iter(|| black_box(serde_json::from_slice::<JsonHeader>(black_box(&json_bytes))))
    });
    g.finish();
}

/// A catalog of 100 services x 100 endpoints.
fn catalog(version: u64) -> ExportCatalog {
    let services: BTreeMap<ServiceKey, ExportedService> = (0..100)
        .map(|s| {
            let endpoints = (0..100)
                .map(|e| ExportedEndpoint {
                    address: addr(s * 100 + e),
                    identity: format!("spiffe://us-east.mesh/ns/bench/sa/svc-{s}"),
                    healthy: true,
                })
                .collect();
            (
                key(s),
                ExportedService {
                    healthy: true,
                    endpoints,
                    ports: Vec::new(),
                    exported_since: None,
                },
            )
        })
        .collect();
    ExportCatalog {
        cluster: "us-east".into(),
        version,
        services,
        trust: None,
    }
}

fn catalog_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("catalog_change_10000_endpoints");
    let old = catalog(1);
    let mut new = old.clone();
    new.version = 2;
    if let Some(svc) = new.services.get_mut(&key(37)) {
        svc.endpoints[5].healthy = false;
    }
    let delta = old.diff(&new);
    assert_eq!(delta.upserts.len(), 1, "one service changed");
    g.bench_function("apply_delta", |b| {
        b.iter_batched(
            || old.clone(),
            |mut held| {
                held.apply(&delta).expect("applies");
                held
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("naive_replace_whole_catalog", |b| {
        b.iter_batched(
            || old.clone(),
            |held| {
                // What a snapshot does: drop what is held, take the new whole.
                drop(held);
                new.clone()
            },
            BatchSize::LargeInput,
        )
    });
    // What crosses the link: a delta frame against a snapshot frame, decoded.
    let delta_json = serde_json::to_vec(&CatalogMessage::Delta {
        delta: delta.clone(),
    })
    .expect("encodes");
    let snapshot_json = serde_json::to_vec(&CatalogMessage::Snapshot {
        catalog: new.clone(),
    })
    .expect("encodes");
    g.bench_function("decode_and_apply_delta_frame", |b| {
        b.iter_batched(
            || old.clone(),
            |mut held| {
                if let Ok(CatalogMessage::Delta { delta }) =
                    serde_json::from_slice::<CatalogMessage>(&delta_json)
                {
                    let _ = held.apply(&delta);
                }
                held
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("naive_decode_snapshot_frame", |b| {
        b.iter(|| black_box(serde_json::from_slice::<CatalogMessage>(&snapshot_json)))
    });
    g.finish();
}

/// 1,000 route matches of one service (a third exact paths, the rest prefixes two and three
/// elements deep, every fourth also on a header), looked up through the path index and by the
/// naive scan of every match in precedence order.
fn route_match_benches(c: &mut Criterion) {
    use http::{HeaderMap, HeaderName, Method};
    use mesh_core::policy::route_match::{PathMatch, RequestView, RouteMatch, ValueMatch};
    use mesh_core::policy::route_table::{MatchOrigin, RouteTable};
    let entries = (0..1_000usize)
        .map(|i| {
            let path = match i % 3 {
                0 => PathMatch::exact(&format!("/api/v{}/item-{i}", i % 7)),
                1 => PathMatch::prefix(&format!("/svc-{i}/v{}", i % 5)),
                _ => PathMatch::prefix(&format!("/team-{}/svc-{i}/v2", i % 11)),
            }
            .expect("valid path");
            let headers = if i % 4 == 0 {
                vec![(
                    HeaderName::from_static("x-tenant"),
                    ValueMatch::Exact(format!("t{i}")),
                )]
            } else {
                Vec::new()
            };
            let m = RouteMatch {
                path: Some(path),
                headers,
                ..RouteMatch::default()
            };
            let origin = MatchOrigin {
                created: i as i64,
                route: format!("bench/route-{i}"),
                rule: 0,
                index: 0,
            };
            (m, origin, i)
        })
        .collect();
    let table = RouteTable::new(entries).expect("valid table");
    let headers = HeaderMap::new();
    let method = Method::GET;
    // A prefix route late in the precedence order, and a path no route matches (404).
    let hit = RequestView {
        method: &method,
        path: "/svc-997/v2/orders/17",
        query: None,
        headers: &headers,
    };
    let miss = RequestView {
        path: "/nothing/here",
        ..hit
    };
    assert_eq!(table.find(&hit), Some(&997));
    assert_eq!(table.find_by_scan(&hit), Some(&997));
    assert_eq!(table.find(&miss), None);
    let mut g = c.benchmark_group("route_match_1000_routes");
    g.bench_function("path_index_hit", |b| {
        b.iter(|| black_box(table.find(black_box(&hit))))
    });
    g.bench_function("naive_scan_hit", |b| {
        b.iter(|| black_box(table.find_by_scan(black_box(&hit))))
    });
    g.bench_function("path_index_miss", |b| {
        b.iter(|| black_box(table.find(black_box(&miss))))
    });
    g.bench_function("naive_scan_miss", |b| {
        b.iter(|| black_box(table.find_by_scan(black_box(&miss))))
    });
    g.finish();
}

criterion_group!(
    hot_paths,
    lookup_benches,
    route_match_benches,
    balance_benches,
    resilience_benches,
    locality_benches,
    wire_benches,
    catalog_benches
);
criterion_main!(hot_paths);
