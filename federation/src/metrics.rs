//! The controller's Prometheus metrics, registered in one place.

use std::collections::BTreeSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a peer cluster.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerLabels {
    /// The peer cluster.
    pub peer: String,
}

/// Labels of a received catalog message.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CatalogMessageLabels {
    /// The peer cluster (`unlinked` when the sender is not linked).
    pub peer: String,
    /// `snapshot`, `delta` or `resync_request`.
    pub kind: String,
    /// `applied`, `version_gap`, `refused` or `not_linked`.
    pub result: String,
}

/// Labels of a refusal: a CSR's, an ignored breaker report's.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusalLabels {
    /// Why: `token`, `policy` or `malformed` (CSRs); `unknown_identity` or `reporter_limit`
    /// (breaker reports).
    pub reason: String,
}

/// Labels of a discovery stream.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StreamLabels {
    /// `sidecar` or `gateway`.
    pub stream: String,
}

/// Labels naming a service.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ServiceLabels {
    /// The service, `name.namespace`.
    pub service: String,
}

/// Labels of a DNS query: its type (`A`, `SRV`, ..., `other`, `malformed`) and the rcode of
/// the response (`NOERROR`, `NXDOMAIN`, `REFUSED`, `FORMERR`, ..., `dropped`, `ratelimited`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DnsQueryLabels {
    /// The query type.
    pub r#type: String,
    /// The response code, or what happened instead of a response.
    pub rcode: String,
}

/// Labels of a forwarded DNS query's outcome: `answered`, `failed` (no upstream answered in
/// time: SERVFAIL), `overloaded` (too many in flight: SERVFAIL at once).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DnsForwardLabels {
    /// The outcome.
    pub result: String,
}

/// Labels of one try at an upstream resolver: the upstream (one of the configured few) and
/// `answered`, `timeout`, `error`, `mismatch` or `truncated` (asked again over TCP).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DnsUpstreamLabels {
    /// The upstream's address.
    pub upstream: String,
    /// The try's outcome.
    pub result: String,
}

/// Labels of an admission request to the injection webhook.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct InjectionLabels {
    /// `injected`, `skipped`, `refused` or `error`.
    pub result: String,
}

/// Every metric of the controller.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Workloads registered through the API.
    pub registered_workloads: Gauge,
    /// Services known locally or from peers.
    pub services: Gauge,
    /// Services this cluster exports.
    pub exported_services: Gauge,
    /// 1 when the link to a peer is up.
    pub peer_link_up: Family<PeerLabels, Gauge>,
    /// Endpoints in a peer's held catalog.
    pub peer_catalog_endpoints: Family<PeerLabels, Gauge>,
    /// Catalog messages received from peers.
    pub catalog_messages: Family<CatalogMessageLabels, Counter>,
    /// Certificates signed.
    pub csrs_signed: Counter,
    /// Certificate requests refused.
    pub csrs_refused: Family<RefusalLabels, Counter>,
    /// Open discovery streams.
    pub discovery_subscribers: Family<StreamLabels, Gauge>,
    /// Version of the published view.
    pub view_version: Gauge,
    /// 1 when a service's traffic is not all going to the own cluster.
    pub failover_active: Family<ServiceLabels, Gauge>,
    /// Kubernetes mode: 1 while every watch of the API server works, 0 while the controller
    /// serves its last known state because it cannot reach the API server.
    pub kubernetes_api_up: Gauge,
    /// Kubernetes mode: 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// DNS queries, by type and rcode.
    pub dns_queries: Family<DnsQueryLabels, Counter>,
    /// Time to answer a DNS query (decoding to encoded response), seconds.
    pub dns_latency: Histogram,
    /// Queries forwarded to the upstreams, by outcome.
    pub dns_forwards: Family<DnsForwardLabels, Counter>,
    /// Tries at each upstream, by outcome.
    pub dns_upstream_tries: Family<DnsUpstreamLabels, Counter>,
    /// Admission requests to the injection webhook, by result.
    pub injections: Family<InjectionLabels, Counter>,
    /// Breaker reports ignored (`unknown_identity`, `reporter_limit`).
    pub breaker_reports_ignored: Family<RefusalLabels, Counter>,
    /// Registrations refused by the per-identity rate limit.
    pub registrations_limited: Counter,
    /// Label values set last time, so vanished peers and services are removed.
    known: Mutex<KnownLabels>,
}

#[derive(Debug, Default)]
struct KnownLabels {
    peers: BTreeSet<String>,
    services: BTreeSet<String>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = Self {
            registered_workloads: Gauge::default(),
            services: Gauge::default(),
            exported_services: Gauge::default(),
            peer_link_up: Family::default(),
            peer_catalog_endpoints: Family::default(),
            catalog_messages: Family::default(),
            csrs_signed: Counter::default(),
            csrs_refused: Family::default(),
            discovery_subscribers: Family::default(),
            view_version: Gauge::default(),
            failover_active: Family::default(),
            kubernetes_api_up: Gauge::default(),
            leader: Gauge::default(),
            dns_queries: Family::default(),
            dns_latency: Histogram::new(exponential_buckets(0.000_005, 4.0, 9)),
            dns_forwards: Family::default(),
            dns_upstream_tries: Family::default(),
            injections: Family::default(),
            breaker_reports_ignored: Family::default(),
            registrations_limited: Counter::default(),
            known: Mutex::new(KnownLabels::default()),
        };
        registry.register(
            "mesh_injection",
            "Pod admission requests to the sidecar injection webhook, by result: injected, skipped (not a pod creation, opted out, already injected), refused (a bad annotation), error (allowed unchanged: the webhook could not build its answer)",
            m.injections.clone(),
        );
        registry.register(
            "mesh_dns_queries",
            "DNS queries answered by the controller's DNS server, by query type and rcode",
            m.dns_queries.clone(),
        );
        registry.register(
            "mesh_dns_query_duration_seconds",
            "Time the DNS server took to answer a query, from the received packet to the encoded response",
            m.dns_latency.clone(),
        );
        registry.register(
            "mesh_dns_forwards",
            "DNS queries outside clusterset.local forwarded to the upstream resolvers, by outcome",
            m.dns_forwards.clone(),
        );
        registry.register(
            "mesh_dns_upstream_tries",
            "Tries at each upstream resolver, by outcome",
            m.dns_upstream_tries.clone(),
        );
        registry.register(
            "mesh_controller_kubernetes_api_up",
            "Kubernetes mode: 1 while the API server's watches work, 0 while the controller serves its last known state",
            m.kubernetes_api_up.clone(),
        );
        registry.register(
            "mesh_controller_leader",
            "Kubernetes mode: 1 while this replica holds the leader Lease",
            m.leader.clone(),
        );
        registry.register(
            "mesh_controller_registered_workloads",
            "Workloads registered through the control API",
            m.registered_workloads.clone(),
        );
        registry.register(
            "mesh_controller_services",
            "Services known locally or from linked peers",
            m.services.clone(),
        );
        registry.register(
            "mesh_controller_exported_services",
            "Services this cluster exports to its peers",
            m.exported_services.clone(),
        );
        registry.register(
            "mesh_controller_peer_link_up",
            "1 when the gateway's link to the peer is up",
            m.peer_link_up.clone(),
        );
        registry.register(
            "mesh_controller_peer_catalog_endpoints",
            "Endpoints in the peer's catalog held here",
            m.peer_catalog_endpoints.clone(),
        );
        registry.register(
            "mesh_controller_catalog_messages",
            "Catalog messages received from peers, by kind and result",
            m.catalog_messages.clone(),
        );
        registry.register(
            "mesh_controller_breaker_reports_ignored",
            "Breaker reports that did not count, by reason: unknown_identity (no registered workload or open discovery stream of the caller's identity), reporter_limit (too many workload ids under one identity)",
            m.breaker_reports_ignored.clone(),
        );
        registry.register(
            "mesh_controller_registrations_rate_limited",
            "Workload registrations answered 429 because their identity was over its rate",
            m.registrations_limited.clone(),
        );
        registry.register(
            "mesh_controller_csrs_signed",
            "Certificates signed for sidecars and the gateway",
            m.csrs_signed.clone(),
        );
        registry.register(
            "mesh_controller_csrs_refused",
            "Certificate requests refused, by reason",
            m.csrs_refused.clone(),
        );
        registry.register(
            "mesh_controller_discovery_subscribers",
            "Open discovery streams",
            m.discovery_subscribers.clone(),
        );
        registry.register(
            "mesh_controller_view_version",
            "Version of the published view",
            m.view_version.clone(),
        );
        registry.register(
            "mesh_controller_failover_active",
            "1 when the service's traffic from this cluster is not all going to this cluster",
            m.failover_active.clone(),
        );
        m
    }

    /// Counts a catalog message.
    pub(crate) fn catalog_message(&self, peer: &str, kind: &str, result: &str) {
        self.catalog_messages
            .get_or_create(&CatalogMessageLabels {
                peer: peer.to_string(),
                kind: kind.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts a DNS query.
    pub(crate) fn dns_query(&self, qtype: &str, rcode: &str) {
        self.dns_queries
            .get_or_create(&DnsQueryLabels {
                r#type: qtype.to_string(),
                rcode: rcode.to_string(),
            })
            .inc();
    }

    /// Counts a forwarded DNS query's outcome.
    pub(crate) fn dns_forward(&self, result: &str) {
        self.dns_forwards
            .get_or_create(&DnsForwardLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts one try at an upstream resolver.
    pub(crate) fn dns_upstream_try(&self, upstream: std::net::SocketAddr, result: &str) {
        self.dns_upstream_tries
            .get_or_create(&DnsUpstreamLabels {
                upstream: upstream.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts a breaker report that did not count, by reason.
    pub(crate) fn breaker_report_ignored(&self, reason: &str) {
        self.breaker_reports_ignored
            .get_or_create(&RefusalLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a refused certificate request.
    pub(crate) fn csr_refused(&self, reason: &str) {
        self.csrs_refused
            .get_or_create(&RefusalLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Sets the per-peer gauges; peers not listed any more lose their series.
    pub(crate) fn set_peers(&self, peers: &[(String, bool, usize)]) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let now: BTreeSet<String> = peers.iter().map(|(p, _, _)| p.clone()).collect();
        for gone in known.peers.difference(&now) {
            let labels = PeerLabels { peer: gone.clone() };
            self.peer_link_up.remove(&labels);
            self.peer_catalog_endpoints.remove(&labels);
        }
        for (peer, up, endpoints) in peers {
            let labels = PeerLabels { peer: peer.clone() };
            self.peer_link_up.get_or_create(&labels).set(i64::from(*up));
            self.peer_catalog_endpoints
                .get_or_create(&labels)
                .set(i64::try_from(*endpoints).unwrap_or(i64::MAX));
        }
        known.peers = now;
    }

    /// Sets the per-service failover gauges; services not listed any more lose their series.
    pub(crate) fn set_failover(&self, services: &[(String, bool)]) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let now: BTreeSet<String> = services.iter().map(|(s, _)| s.clone()).collect();
        for gone in known.services.difference(&now) {
            self.failover_active.remove(&ServiceLabels {
                service: gone.clone(),
            });
        }
        for (service, active) in services {
            self.failover_active
                .get_or_create(&ServiceLabels {
                    service: service.clone(),
                })
                .set(i64::from(*active));
        }
        known.services = now;
    }

    /// A guard counting one open discovery stream of `stream` kind until dropped.
    pub(crate) fn subscriber(&self, stream: &str) -> SubscriberGuard {
        let gauge = self
            .discovery_subscribers
            .get_or_create(&StreamLabels {
                stream: stream.to_string(),
            })
            .clone();
        gauge.inc();
        SubscriberGuard(gauge)
    }
}

/// Decrements the subscriber gauge when the stream ends.
#[derive(Debug)]
pub(crate) struct SubscriberGuard(Gauge);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn vanished_peers_lose_their_series() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        m.set_peers(&[("eu".into(), true, 3), ("ap".into(), false, 0)]);
        let text = encode(&registry);
        assert!(
            text.contains("mesh_controller_peer_link_up{peer=\"eu\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mesh_controller_peer_catalog_endpoints{peer=\"eu\"} 3"),
            "{text}"
        );
        m.set_peers(&[("eu".into(), false, 3)]);
        let text = encode(&registry);
        assert!(!text.contains("peer=\"ap\""), "{text}");
        assert!(
            text.contains("mesh_controller_peer_link_up{peer=\"eu\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn subscriber_guards_count_open_streams() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        let a = m.subscriber("sidecar");
        let _b = m.subscriber("sidecar");
        drop(a);
        let text = encode(&registry);
        assert!(
            text.contains("mesh_controller_discovery_subscribers{stream=\"sidecar\"} 1"),
            "{text}"
        );
        m.csr_refused("token");
        assert!(
            encode(&registry).contains("mesh_controller_csrs_refused_total{reason=\"token\"} 1")
        );
    }
}
