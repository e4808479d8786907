//! The failover decision on hand-built inputs: order, export health and breaker quorum.

use std::net::SocketAddr;

use super::*;

fn key(s: &str) -> ServiceKey {
    s.parse().unwrap()
}

fn local(port: u16, healthy: bool) -> RegistryEndpoint {
    RegistryEndpoint {
        service: key("echo.demo"),
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        identity: "spiffe://home.mesh/ns/demo/sa/echo".into(),
        healthy,
        plaintext: false,
        spec: None,
    }
}

fn catalog(cluster: &str, healthy: bool, endpoints: &[(u16, bool)]) -> ExportCatalog {
    let mut c = ExportCatalog::new(cluster);
    c.version = 7;
    c.services.insert(
        key("echo.demo"),
        ExportedService {
            healthy,
            endpoints: endpoints
                .iter()
                .map(|(port, h)| ExportedEndpoint {
                    address: SocketAddr::from(([10, 0, 0, 1], *port)),
                    identity: format!("spiffe://{cluster}.mesh/ns/demo/sa/echo"),
                    healthy: *h,
                })
                .collect(),
            ports: Vec::new(),
            exported_since: None,
        },
    );
    c
}

fn peer<'a>(
    cluster: &'a str,
    region: &'a str,
    rtt_ms: u64,
    catalog: &'a ExportCatalog,
) -> PeerInput<'a> {
    PeerInput {
        cluster,
        region,
        reachable: true,
        rtt: Some(Duration::from_millis(rtt_ms)),
        catalog,
    }
}

fn order(d: &FailoverDecision, service: &str) -> Vec<String> {
    d.services[&key(service)]
        .route
        .localities
        .iter()
        .map(|l| l.entry.cluster.clone())
        .collect()
}

fn decide_with(
    local_eps: &[RegistryEndpoint],
    peers: &[PeerInput<'_>],
    regions: &[&str],
    breakers: &BreakerTally,
) -> FailoverDecision {
    let policy = LocalityPolicy {
        region_priority: regions.iter().map(|r| r.to_string()).collect(),
        breaker_quorum: 0.5,
    };
    decide(&FailoverInputs {
        cluster: "home",
        region: "us",
        policy: &policy,
        local: local_eps,
        defined: &[],
        peers,
        breakers,
    })
}

#[test]
fn local_first_while_healthy() {
    let eu = catalog("eu", true, &[(1, true)]);
    let d = decide_with(
        &[local(1, true), local(2, true)],
        &[peer("eu", "eu", 5, &eu)],
        &[],
        &BreakerTally::new(),
    );
    assert_eq!(order(&d, "echo.demo"), ["home", "eu"]);
    let svc = &d.services[&key("echo.demo")];
    assert!(!svc.failover_active);
    assert_eq!(svc.route.localities[0].endpoints.len(), 2);
    assert_eq!(svc.route.localities[1].endpoints[0].address.port(), 1);
    assert_eq!(
        svc.endpoints,
        vec![
            EndpointCount {
                cluster: "eu".into(),
                healthy: 1,
                total: 1
            },
            EndpointCount {
                cluster: "home".into(),
                healthy: 2,
                total: 2
            },
        ]
    );
    let export = &d.exports[&key("echo.demo")];
    assert!(export.healthy);
    assert_eq!(export.endpoints.len(), 2);
}

#[test]
fn plaintext_endpoints_are_routed_locally_but_never_exported() {
    let mut plain = local(3, true);
    plain.plaintext = true;
    plain.identity = String::new();
    let mut legacy = plain.clone();
    legacy.service = key("legacy.demo");
    let d = decide_with(
        &[local(1, true), plain, legacy],
        &[],
        &[],
        &BreakerTally::new(),
    );
    let echo = &d.services[&key("echo.demo")].route.localities[0].endpoints;
    let flags: Vec<(u16, bool)> = echo
        .iter()
        .map(|e| (e.address.port(), e.plaintext))
        .collect();
    assert_eq!(flags, [(1, false), (3, true)]);
    assert_eq!(
        d.exports[&key("echo.demo")].endpoints.len(),
        1,
        "only the mTLS endpoint is exported"
    );
    assert!(d.services[&key("legacy.demo")].route.localities[0].endpoints[0].plaintext);
    assert!(
        !d.exports.contains_key(&key("legacy.demo")),
        "a service with only plaintext endpoints is not exported at all"
    );
}

#[test]
fn region_priority_beats_rtt_and_a_sick_local_copy_activates_failover() {
    let near = catalog("near", true, &[(1, true)]);
    let eu = catalog("eu-1", true, &[(2, true)]);
    let d = decide_with(
        &[local(1, true), local(2, false)],
        &[
            peer("near", "us-west", 2, &near),
            peer("eu-1", "eu", 80, &eu),
        ],
        &["eu"],
        &BreakerTally::new(),
    );
    assert_eq!(order(&d, "echo.demo"), ["home", "eu-1", "near"]);
    let svc = &d.services[&key("echo.demo")];
    assert_eq!(svc.route.localities[0].entry.health, 0.5);
    assert!(svc.failover_active, "half the local endpoints are down");
    assert!(
        d.exports[&key("echo.demo")].healthy,
        "one local endpoint is still healthy"
    );
}

#[test]
fn unreachable_peers_are_dropped_but_still_counted() {
    let eu = catalog("eu", true, &[(1, true)]);
    let mut down = peer("eu", "eu", 5, &eu);
    down.reachable = false;
    let d = decide_with(&[], &[down], &[], &BreakerTally::new());
    let svc = &d.services[&key("echo.demo")];
    assert!(svc.route.localities.is_empty());
    assert_eq!(
        svc.endpoints.len(),
        1,
        "status still shows the leased catalog"
    );
    assert!(svc.failover_active);
    assert!(d.exports.is_empty(), "only local services are exported");
}

#[test]
fn a_breaker_quorum_marks_the_export_unhealthy_and_fails_over() {
    let eu = catalog("eu", true, &[(1, true)]);
    let mut breakers = BreakerTally::new();
    breakers.insert(
        (key("echo.demo"), "home".into()),
        BreakerCount {
            open: 2,
            reporters: 3,
        },
    );
    let d = decide_with(
        &[local(1, true)],
        &[peer("eu", "eu", 5, &eu)],
        &[],
        &breakers,
    );
    let svc = &d.services[&key("echo.demo")];
    assert_eq!(svc.route.localities[0].entry.health, 0.0);
    assert!(svc.failover_active);
    assert_eq!(
        svc.breakers,
        vec![BreakerSummary {
            cluster: "home".into(),
            open: 2,
            reporters: 3
        }]
    );
    assert!(!d.exports[&key("echo.demo")].healthy);
    // A minority does not.
    breakers.insert(
        (key("echo.demo"), "home".into()),
        BreakerCount {
            open: 1,
            reporters: 3,
        },
    );
    let d = decide_with(
        &[local(1, true)],
        &[peer("eu", "eu", 5, &eu)],
        &[],
        &breakers,
    );
    assert!(d.exports[&key("echo.demo")].healthy);
    assert!(!d.services[&key("echo.demo")].failover_active);
}

#[test]
fn no_healthy_local_endpoint_marks_the_export_unhealthy() {
    let d = decide_with(&[local(1, false)], &[], &[], &BreakerTally::new());
    assert!(!d.exports[&key("echo.demo")].healthy);
    assert_eq!(
        d.services[&key("echo.demo")].route.localities[0]
            .entry
            .health,
        0.0
    );
}

#[test]
fn a_peer_that_failed_a_service_away_gets_no_traffic_share() {
    let eu = catalog("eu", false, &[(1, true)]);
    let d = decide_with(&[], &[peer("eu", "eu", 5, &eu)], &[], &BreakerTally::new());
    let loc = &d.services[&key("echo.demo")].route.localities[0];
    assert_eq!(loc.entry.health, 0.0);
    assert!(!loc.endpoints[0].healthy);
}

#[test]
fn a_defined_service_without_endpoints_is_exported_empty_with_its_ports() {
    let spec = Arc::new(ServiceSpec {
        ports: vec![mesh_core::catalog::ServicePort {
            name: "http".into(),
            protocol: "TCP".into(),
            port: 80,
            app_protocol: None,
        }],
        exported_since: Some(1_700_000_000),
    });
    let policy = LocalityPolicy::default();
    let decision = decide(&FailoverInputs {
        cluster: "home",
        region: "us",
        policy: &policy,
        local: &[],
        defined: &[(key("echo.demo"), spec)],
        peers: &[],
        breakers: &BreakerTally::default(),
    });
    let exported = &decision.exports[&key("echo.demo")];
    assert!(exported.endpoints.is_empty());
    assert!(!exported.healthy, "nothing to serve yet");
    assert_eq!(exported.ports[0].port, 80);
    assert_eq!(exported.exported_since, Some(1_700_000_000));
}
