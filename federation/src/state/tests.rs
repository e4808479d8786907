//! The state over time, with injected instants: registrations, leases, breaker reports and
//! versions.

use std::net::SocketAddr;

use mesh_core::api::{BreakerObservation, PeerLinkStatus};
use mesh_core::breaker::BreakerState;
use mesh_core::catalog::{ExportedEndpoint, ExportedService};
use mesh_core::identity::ClusterCa;
use mesh_core::names::ServiceKey;

use super::*;
use crate::peering::GATEWAY_REPORT_TIMEOUT;

const GRACE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(3);

fn key() -> ServiceKey {
    "echo.demo".parse().unwrap()
}

fn bundle(cluster: &str) -> TrustBundle {
    let td = format!("{cluster}.mesh");
    TrustBundle {
        ca_pem: ClusterCa::generate(&td).unwrap().cert_pem().to_string(),
        trust_domain: td,
        cluster: cluster.into(),
    }
}

fn state() -> FederationState {
    state_with(ExportCache::ephemeral())
}

/// A state of cluster `home` whose export catalog is cached in `cache`.
fn state_with(cache: ExportCache) -> FederationState {
    let config = StateConfig {
        cluster: "home".into(),
        region: "us".into(),
        own_bundle: bundle("home"),
        policy: LocalityPolicy::default(),
        lease_grace: GRACE,
        registration_ttl: TTL,
        initial_version: 100,
    };
    FederationState::new(
        config,
        LinkStore::ephemeral("home", "home.mesh"),
        None,
        Vec::new(),
        cache,
    )
}

fn caller() -> SpiffeId {
    SpiffeId::workload("home.mesh", "demo", "echo")
}

fn registration(id: &str, port: u16, healthy: bool) -> WorkloadRegistration {
    WorkloadRegistration {
        id: id.into(),
        service: key(),
        cluster: "home".into(),
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        identity: caller().to_string(),
        healthy,
    }
}

fn link(cluster: &str) -> LinkInfo {
    LinkInfo {
        cluster: cluster.into(),
        region: "eu".into(),
        trust_bundle: bundle(cluster),
        gateway_addr: "127.0.0.1:7000".parse().unwrap(),
    }
}

fn peer_snapshot(cluster: &str) -> CatalogMessage {
    let mut catalog = ExportCatalog::new(cluster);
    catalog.version = 5;
    catalog.services.insert(
        key(),
        ExportedService {
            healthy: true,
            endpoints: vec![ExportedEndpoint {
                address: "10.0.0.1:9000".parse().unwrap(),
                identity: format!("spiffe://{cluster}.mesh/ns/demo/sa/echo"),
                healthy: true,
            }],
            ports: Vec::new(),
            exported_since: None,
        },
    );
    CatalogMessage::Snapshot { catalog }
}

fn report(peers: &[(&str, bool)]) -> GatewayReport {
    GatewayReport {
        quic_addr: "127.0.0.1:7100".parse().unwrap(),
        tunnel_addr: "127.0.0.1:7101".parse().unwrap(),
        peers: peers
            .iter()
            .map(|(c, up)| PeerLinkStatus {
                cluster: (*c).into(),
                up: *up,
                rtt_seconds: Some(0.02),
                loss: 0.0,
                last_error: None,
            })
            .collect(),
    }
}

fn localities(s: &FederationState) -> Vec<String> {
    s.view()
        .services
        .get(&key())
        .map(|d| {
            d.route
                .localities
                .iter()
                .map(|l| l.entry.cluster.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn registrations_appear_renew_quietly_and_expire() {
    let t0 = Instant::now();
    let mut s = state();
    assert!(
        s.recompute(t0).is_none(),
        "nothing known: the initial view stands"
    );
    s.register("echo-0", registration("echo-0", 9000, true), &caller(), t0)
        .unwrap();
    let v1 = s.recompute(t0).expect("a new endpoint changes the view");
    assert_eq!(v1.version, 101);
    assert_eq!(v1.exports.version, 101);
    assert_eq!(localities(&s), ["home"]);
    // A heartbeat with nothing new publishes nothing.
    let t1 = t0 + Duration::from_secs(1);
    s.register("echo-0", registration("echo-0", 9000, true), &caller(), t1)
        .unwrap();
    assert!(s.recompute(t1).is_none());
    // A health change does.
    s.register("echo-0", registration("echo-0", 9000, false), &caller(), t1)
        .unwrap();
    let v2 = s.recompute(t1).unwrap();
    assert_eq!((v2.version, v2.exports.version), (102, 102));
    assert!(!v2.exports.services[&key()].healthy);
    // Three seconds without a heartbeat: gone.
    let t4 = t1 + TTL;
    assert_eq!(s.tick(t4).workloads, vec!["echo-0".to_string()]);
    let v3 = s.recompute(t4).unwrap();
    assert!(v3.services.is_empty());
    assert!(v3.exports.services.is_empty());
    assert_eq!(s.workloads(t4), 0);
}

#[test]
fn lease_expiry_withdraws_a_peer() {
    let t0 = Instant::now();
    let mut s = state();
    s.add_link(link("eu")).unwrap();
    s.apply_catalog("eu", &peer_snapshot("eu")).unwrap();
    s.gateway_report(report(&[("eu", true)]), t0);
    s.recompute(t0).unwrap();
    assert_eq!(localities(&s), ["eu"]);
    assert!(s.view().services[&key()].failover_active);
    // The link drops: no traffic through it, but the catalog is kept under lease.
    let t1 = t0 + Duration::from_secs(1);
    s.gateway_report(report(&[("eu", false)]), t1);
    s.tick(t1);
    s.recompute(t1).unwrap();
    assert!(localities(&s).is_empty());
    assert!(
        s.view().services.contains_key(&key()),
        "still known while leased"
    );
    assert_eq!(s.status(t1).links[0].state, "down");
    // The gateway keeps reporting the link down until the grace period ends.
    let mut t = t1;
    while t < t1 + GRACE - Duration::from_secs(1) {
        t += Duration::from_secs(1);
        s.gateway_report(report(&[("eu", false)]), t);
        assert!(s.tick(t).peers.is_empty());
    }
    let end = t1 + GRACE;
    s.gateway_report(report(&[("eu", false)]), end);
    assert_eq!(s.tick(end).peers, vec!["eu".to_string()]);
    s.recompute(end).unwrap();
    assert!(
        s.view().services.is_empty(),
        "withdrawn: the service is unknown now"
    );
    let status = s.status(end);
    assert_eq!(status.links[0].state, "withdrawn");
    assert_eq!(status.links[0].catalog_version, None);
}

#[test]
fn a_silent_gateway_fails_links_and_a_report_restores_them() {
    let t0 = Instant::now();
    let mut s = state();
    s.add_link(link("eu")).unwrap();
    s.apply_catalog("eu", &peer_snapshot("eu")).unwrap();
    s.gateway_report(report(&[("eu", true)]), t0);
    s.recompute(t0);
    let silent = t0 + GATEWAY_REPORT_TIMEOUT;
    s.tick(silent);
    s.recompute(silent).unwrap();
    assert!(localities(&s).is_empty());
    assert!(!s.status(silent).gateway_connected);
    s.gateway_report(report(&[("eu", true)]), silent);
    s.recompute(silent).unwrap();
    assert_eq!(localities(&s), ["eu"]);
}

#[test]
fn a_breaker_quorum_fails_the_local_copy_over_until_reports_expire() {
    let t0 = Instant::now();
    let mut s = state();
    s.add_link(link("eu")).unwrap();
    s.apply_catalog("eu", &peer_snapshot("eu")).unwrap();
    s.gateway_report(report(&[("eu", true)]), t0);
    s.register("echo-0", registration("echo-0", 9000, true), &caller(), t0)
        .unwrap();
    s.recompute(t0);
    let export_v = s.view().exports.version;
    for reporter in ["a", "b"] {
        let report = BreakerReport {
            reporter: reporter.into(),
            breakers: vec![BreakerObservation {
                service: key(),
                cluster: "home".into(),
                state: BreakerState::Open.into(),
            }],
        };
        s.put_breakers(&caller(), report, t0).unwrap();
    }
    let v = s.recompute(t0).unwrap();
    assert!(
        !v.exports.services[&key()].healthy,
        "peers are told to stay away"
    );
    assert_eq!(v.exports.version, export_v + 1);
    assert_eq!(v.services[&key()].route.localities[0].entry.health, 0.0);
    assert!(v.services[&key()].failover_active);
    // Sidecars stop reporting (and the workload keeps heartbeating): health returns.
    let later = t0 + BREAKER_REPORT_TTL;
    s.register(
        "echo-0",
        registration("echo-0", 9000, true),
        &caller(),
        later,
    )
    .unwrap();
    s.gateway_report(report(&[("eu", true)]), later);
    assert_eq!(s.tick(later).breaker_reports, 2);
    let v = s.recompute(later).unwrap();
    assert!(v.exports.services[&key()].healthy);
    assert!(!v.services[&key()].failover_active);
}

#[test]
fn catalogs_only_from_linked_peers_and_unlink_drops_everything() {
    let t0 = Instant::now();
    let mut s = state();
    assert!(matches!(
        s.apply_catalog("eu", &peer_snapshot("eu")),
        Err(CatalogRefusal::NotLinked(_))
    ));
    s.add_link(link("eu")).unwrap();
    let delta = CatalogMessage::Delta {
        delta: ExportCatalog::new("eu").diff(&ExportCatalog::new("eu")),
    };
    assert!(matches!(
        s.apply_catalog("eu", &delta),
        Err(CatalogRefusal::Catalog(CatalogError::VersionGap { .. }))
    ));
    s.apply_catalog("eu", &peer_snapshot("eu")).unwrap();
    let v = s.recompute(t0).unwrap();
    assert_eq!(v.peer_bundles.len(), 1);
    assert_eq!(v.peers[0].cluster, "eu");
    s.remove_link("eu").unwrap();
    let v = s.recompute(t0).unwrap();
    assert!(v.peer_bundles.is_empty() && v.peers.is_empty() && v.services.is_empty());
    assert!(matches!(s.remove_link("eu"), Err(LinkError::NotLinked(_))));
}

#[test]
fn link_info_waits_for_the_gateway() {
    let t0 = Instant::now();
    let mut s = state();
    assert!(s.link_info().is_none());
    s.gateway_report(report(&[]), t0);
    let info = s.link_info().unwrap();
    assert_eq!(info.gateway_addr, "127.0.0.1:7100".parse().unwrap());
    assert_eq!(info.region, "us");
    let v = s.recompute(t0).unwrap();
    assert_eq!(v.gateway_tunnel, Some("127.0.0.1:7101".parse().unwrap()));
}

#[test]
fn a_started_controller_is_warming_until_registrations_and_peer_catalogs_are_back() {
    let t0 = Instant::now();
    let mut s = state();
    s.add_link(link("eu")).unwrap();
    s.recompute(t0);
    assert!(s.view().warming, "just started");
    // Registrations are back after three heartbeats, but eu's catalog has not arrived.
    let t1 = t0 + WARMUP_MIN;
    s.recompute(t1);
    assert!(s.view().warming, "still waiting for eu's catalog");
    s.apply_catalog("eu", &peer_snapshot("eu")).unwrap();
    s.recompute(t1).expect("the end of warm-up is published");
    assert!(!s.view().warming);
    assert!(!s.view().sidecar_snapshot(&[key()]).warming);
    // A link added later does not start warm-up again.
    s.add_link(link("ap")).unwrap();
    s.recompute(t1 + Duration::from_secs(1));
    assert!(!s.view().warming);
}

#[test]
fn a_peer_that_never_answers_ends_warm_up_at_the_bound() {
    let t0 = Instant::now();
    let mut s = state();
    s.add_link(link("eu")).unwrap();
    s.recompute(t0);
    s.recompute(t0 + WARMUP_MAX - Duration::from_millis(1));
    assert!(s.view().warming);
    s.recompute(t0 + WARMUP_MAX)
        .expect("the end of warm-up is published");
    assert!(!s.view().warming);
}

#[test]
fn without_links_warm_up_lasts_three_heartbeats() {
    let t0 = Instant::now();
    let mut s = state();
    s.recompute(t0);
    assert!(s.view().warming);
    s.recompute(t0 + WARMUP_MIN)
        .expect("the end of warm-up is published");
    assert!(!s.view().warming);
}

#[test]
fn a_restarted_controller_keeps_exporting_its_cached_catalog_until_warm() {
    let dir = std::env::temp_dir().join(format!("mesh-state-exports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The first run exports echo with two replicas (and caches it).
    let t0 = Instant::now();
    let mut first = state_with(ExportCache::in_dir(&dir));
    for (id, port) in [("echo-0", 9000), ("echo-1", 9001)] {
        first
            .register(id, registration(id, port, true), &caller(), t0)
            .unwrap();
    }
    first.recompute(t0);
    assert_eq!(first.view().exports.services[&key()].endpoints.len(), 2);
    // Restarted: nothing registered yet, but the cached catalog is still exported.
    let mut second = state_with(ExportCache::in_dir(&dir));
    second.recompute(t0);
    assert_eq!(second.view().exports.services[&key()].endpoints.len(), 2);
    // Once warm, only what it knows: echo-1 never came back.
    let warm = t0 + WARMUP_MIN;
    second
        .register(
            "echo-0",
            registration("echo-0", 9000, true),
            &caller(),
            warm,
        )
        .unwrap();
    second.recompute(warm);
    assert_eq!(second.view().exports.services[&key()].endpoints.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
