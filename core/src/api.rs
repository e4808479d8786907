//! The JSON messages and paths between components: the contract that sidecars, gateways, the
//! controller and the CLI agree on.
//!
//! Two controller listeners:
//! - **control** (TLS 1.3, HTTP/2, mTLS; the CSR call alone may come without a client
//!   certificate, authenticated by the cluster's join token), used by sidecars and the gateway;
//! - **admin** (plain HTTP on loopback), used by operators and `mesh link` / `mesh status`.
//!
//! Streams are newline-delimited JSON (one message per line), each message a full versioned
//! snapshot of what the subscriber asked for.
//!
//! Every message here crosses a socket between components that may run two consecutive
//! releases during an upgrade (see "Compatibility" in ARCHITECTURE.md), so decoders accept and
//! ignore fields they do not know: a release may add a field (with `#[serde(default)]` so that
//! its absence from the previous release's messages decodes), never remove, rename or retype
//! one. Files a person writes are the opposite: they refuse unknown fields, so a typo fails.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::breaker::BreakerState;
use crate::catalog::ExportCatalog;
use crate::identity::TrustBundle;
use crate::locality::LocalityEntry;
use crate::names::ServiceKey;

/// Control: `POST` a [`CsrRequest`] with `authorization: Bearer <join token>`; answers [`CsrResponse`].
pub const PATH_CERTIFICATES: &str = "/v1/certificates";
/// Control: `PUT /v1/workloads/{id}` a [`WorkloadRegistration`] (register and heartbeat);
/// `DELETE /v1/workloads/{id}` on clean shutdown.
pub const PATH_WORKLOADS: &str = "/v1/workloads/";
/// Control: `PUT` a [`BreakerReport`] (the reporter's full breaker state, replacing the last).
pub const PATH_BREAKER_REPORTS: &str = "/v1/breaker-reports";
/// Control: `GET ?services=echo.demo,foo.bar` streams [`SidecarSnapshot`]s (NDJSON).
pub const PATH_DISCOVERY: &str = "/v1/discovery";
/// Control: `GET` streams [`GatewaySnapshot`]s (NDJSON) to the cluster's gateway.
pub const PATH_GATEWAY_STREAM: &str = "/v1/gateway/stream";
/// Control: `PUT` a [`GatewayReport`] (gateway addresses and per-peer link state), every second.
pub const PATH_GATEWAY_REPORT: &str = "/v1/gateway/report";
/// Control: `POST /v1/federation/{peer}` a [`crate::catalog::CatalogMessage`] received from that
/// peer; answers 200, or 409 when a snapshot is needed (the gateway then sends a resync request).
pub const PATH_FEDERATION: &str = "/v1/federation/";
/// Control: `GET /v1/vips/{ip}` answers the [`VipTarget`] of a cluster-set or per-cluster VIP
/// the controller's DNS handed out, or 404 (a sidecar asks for a captured connection's
/// original destination).
pub const PATH_VIPS: &str = "/v1/vips/";

/// Admin: `GET` answers [`LinkInfo`] of this cluster (what a peer needs to link with it).
pub const PATH_LINK_INFO: &str = "/v1/link-info";
/// Admin: `POST` a peer's [`LinkInfo`] (idempotent); `DELETE /v1/links/{cluster}` unlinks.
pub const PATH_LINKS: &str = "/v1/links";
/// Admin: `GET` answers [`ControllerStatus`].
pub const PATH_STATUS: &str = "/v1/status";
/// Controller admin route: the traffic policy in force and why the latest version was refused.
pub const PATH_POLICY: &str = "/v1/policy";

/// Response header the inbound sidecar adds: the cluster that served the request.
pub const HEADER_SERVED_BY_CLUSTER: &str = "x-mesh-cluster";
/// Response header set by a sidecar on answers it generated itself (not the app): why.
pub const HEADER_MESH_ERROR: &str = "x-mesh-error";
/// CONNECT request header naming the target cluster (sidecar to gateway).
pub const HEADER_TARGET_CLUSTER: &str = "x-mesh-target-cluster";
/// CONNECT request header naming the target service `name.namespace` (sidecar to gateway).
pub const HEADER_TARGET_SERVICE: &str = "x-mesh-target-service";

/// ALPN of the HTTP/2 hops.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN of the QUIC link between gateways.
pub const ALPN_MESH_LINK: &[u8] = b"mesh-link/1";

/// A certificate request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CsrRequest {
    /// PKCS#10 request in PEM with one SPIFFE URI SAN.
    pub csr_pem: String,
}

/// A signed certificate and the cluster's trust bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CsrResponse {
    /// Leaf certificate (and any intermediates) in PEM.
    pub cert_chain_pem: String,
    /// The issuing cluster's trust bundle.
    pub trust_bundle: TrustBundle,
}

/// A workload registration, sent again as heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadRegistration {
    /// Unique id of the workload instance (e.g. `echo-0`).
    pub id: String,
    /// Service the workload serves.
    pub service: ServiceKey,
    /// The cluster it runs in.
    pub cluster: String,
    /// Its sidecar's inbound (mTLS) address.
    pub address: SocketAddr,
    /// The SPIFFE ID its sidecar presents.
    pub identity: String,
    /// Whether the sidecar's app answers its health check.
    pub healthy: bool,
}

/// A breaker's state as a sidecar reports it to its controller. Unlike
/// [`BreakerState`], it has room for states a later release may add: the controller counts only
/// `open` towards the quorum that fails a locality over, so a state it does not know counts as
/// a reporter that is not open. That is the conservative reading: an unknown state never fails
/// a locality over, and the reporting sidecar still acts on its own breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportedBreakerState {
    /// Traffic flows.
    Closed,
    /// Traffic is refused.
    Open,
    /// Probing whether the locality recovered.
    HalfOpen,
    /// A state added by a later release.
    #[serde(other)]
    Unknown,
}

impl From<BreakerState> for ReportedBreakerState {
    fn from(state: BreakerState) -> Self {
        match state {
            BreakerState::Closed => Self::Closed,
            BreakerState::Open => Self::Open,
            BreakerState::HalfOpen => Self::HalfOpen,
        }
    }
}

/// One breaker's state as seen by one sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerObservation {
    /// The service.
    pub service: ServiceKey,
    /// The locality (cluster) the breaker guards.
    pub cluster: String,
    /// Its state.
    pub state: ReportedBreakerState,
}

/// A sidecar's full breaker state; replaces its previous report, expires if not renewed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerReport {
    /// The reporting sidecar's id.
    pub reporter: String,
    /// Every breaker it holds.
    pub breakers: Vec<BreakerObservation>,
}

/// An endpoint as a sidecar routes to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteEndpoint {
    /// Sidecar inbound address (reached directly in the own cluster, via gateways otherwise).
    pub address: SocketAddr,
    /// The SPIFFE ID the endpoint must present.
    pub identity: String,
    /// Whether its cluster considers it healthy.
    pub healthy: bool,
    /// Reached over plain HTTP/2 (prior knowledge, no TLS) instead of mTLS: a local server
    /// without a sidecar of its own, marked `plaintext: true` in the controller's static
    /// services file. Such endpoints are never exported to other clusters.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plaintext: bool,
}

/// One locality of a service, in failover order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalityRoute {
    /// The controller's verdict for this locality (cluster, health, reason).
    #[serde(flatten)]
    pub entry: LocalityEntry,
    /// Its endpoints.
    pub endpoints: Vec<RouteEndpoint>,
}

/// How a sidecar routes to one service: localities in failover order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRoute {
    /// Localities, own cluster first (when it has endpoints), unreachable ones left out.
    pub localities: Vec<LocalityRoute>,
}

/// What the controller streams to a sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SidecarSnapshot {
    /// Monotonic version of the controller's view.
    pub version: u64,
    /// The controller's cluster.
    pub cluster: String,
    /// Trust bundles of this cluster and every linked cluster.
    pub trust_bundles: Vec<TrustBundle>,
    /// The cluster gateway's tunnel (HTTP/2 CONNECT over mTLS) address, once known.
    pub gateway: Option<SocketAddr>,
    /// Routes of the services asked for that exist somewhere.
    pub services: BTreeMap<ServiceKey, ServiceRoute>,
    /// Services asked for that no cluster exports.
    pub unknown: Vec<ServiceKey>,
    /// The traffic policy (routes) of the services asked for that have one; a service missing
    /// here has the implicit routing (each request to the service).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<ServiceKey, crate::policy::service_policy::ServicePolicy>,
    /// When this controller instance started (Unix ms): a new value means it restarted.
    #[serde(default)]
    pub epoch: u64,
    /// The controller started moments ago and is still relearning its registrations and its
    /// peers' catalogs: what it lacks may exist. A sidecar that holds a snapshot of an earlier
    /// epoch takes only additions from it (see the sidecar's `snapshot_merge`).
    #[serde(default)]
    pub warming: bool,
}

/// What a VIP stands for: a service, pinned to one cluster for a per-cluster VIP
/// (`<svc>.<ns>.svc.<cluster>.clusterset.local`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipTarget {
    /// The service.
    pub service: ServiceKey,
    /// The cluster a per-cluster VIP pins; `None` for the cluster-set VIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

impl VipTarget {
    /// The destination the VIP names.
    pub fn destination(&self) -> crate::names::Destination {
        crate::names::Destination {
            service: self.service.clone(),
            cluster: self.cluster.clone(),
        }
    }

    /// The mesh name of the destination, e.g. `echo.demo.svc.clusterset.local` or
    /// `echo.demo.svc.us-east.clusterset.local`: the authority an opaque stream is opened with.
    pub fn host(&self) -> String {
        let (name, ns) = (&self.service.name, &self.service.namespace);
        match &self.cluster {
            Some(c) => format!("{name}.{ns}.svc.{c}.clusterset.local"),
            None => format!("{name}.{ns}.svc.clusterset.local"),
        }
    }
}

/// A linked peer, as the gateway needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerLinkConfig {
    /// The peer cluster.
    pub cluster: String,
    /// Its trust bundle.
    pub trust_bundle: TrustBundle,
    /// Its gateway's QUIC (UDP) address.
    pub gateway_addr: SocketAddr,
}

/// What the controller streams to its gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewaySnapshot {
    /// Monotonic version.
    pub version: u64,
    /// The cluster.
    pub cluster: String,
    /// The cluster's own trust bundle.
    pub trust_bundle: TrustBundle,
    /// Linked peers.
    pub peers: Vec<PeerLinkConfig>,
    /// What this cluster exports: tunnels may only reach these endpoints, and this is the
    /// catalog sent to peers.
    pub exports: ExportCatalog,
}

/// State of the QUIC link to one peer, as the gateway measures it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerLinkStatus {
    /// The peer cluster.
    pub cluster: String,
    /// Whether a QUIC connection is established.
    pub up: bool,
    /// Smoothed round-trip time in seconds.
    pub rtt_seconds: Option<f64>,
    /// Share of packets lost over the connection's life, in [0, 1].
    pub loss: f64,
    /// Last error, for `mesh status` (e.g. a refused handshake).
    pub last_error: Option<String>,
}

/// The gateway's periodic report to its controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayReport {
    /// The gateway's QUIC (UDP) address peers dial.
    pub quic_addr: SocketAddr,
    /// The tunnel (HTTP/2 CONNECT over mTLS) address local sidecars dial.
    pub tunnel_addr: SocketAddr,
    /// Per-peer link state.
    pub peers: Vec<PeerLinkStatus>,
}

/// What a peer needs to link with a cluster; exchanged by `mesh link`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// The cluster.
    pub cluster: String,
    /// Its region (for failover priority).
    pub region: String,
    /// Its trust bundle.
    pub trust_bundle: TrustBundle,
    /// Its gateway's QUIC address.
    pub gateway_addr: SocketAddr,
}

/// One link in [`ControllerStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkStatusView {
    /// The peer cluster.
    pub cluster: String,
    /// Its region.
    pub region: String,
    /// `up`, `down` (catalog kept under lease) or `withdrawn` (lease expired).
    pub state: String,
    /// Round-trip time in seconds.
    pub rtt_seconds: Option<f64>,
    /// Loss share.
    pub loss: f64,
    /// Version of the peer's catalog held, if any.
    pub catalog_version: Option<u64>,
    /// Last error the gateway saw on this link.
    pub last_error: Option<String>,
}

/// Endpoint counts of one service in one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointCount {
    /// The cluster.
    pub cluster: String,
    /// Healthy endpoints.
    pub healthy: u32,
    /// All endpoints.
    pub total: u32,
}

/// Breaker reports of one service for one locality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerSummary {
    /// The locality.
    pub cluster: String,
    /// Workload identities whose vote is open (one vote per identity, however many sidecars
    /// share it; half-open ones are probing and do not count).
    pub open: u32,
    /// Workload identities reporting on it at all.
    pub reporters: u32,
}

/// One service in [`ControllerStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatusView {
    /// The service.
    pub service: ServiceKey,
    /// The failover order now published.
    pub localities: Vec<LocalityEntry>,
    /// Endpoint counts per cluster (including ones not in the order).
    pub endpoints: Vec<EndpointCount>,
    /// Breaker reports per locality.
    pub breakers: Vec<BreakerSummary>,
    /// True when traffic from this cluster is not all going to the own cluster.
    pub failover_active: bool,
}

/// `GET /v1/status` of a controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerStatus {
    /// The cluster.
    pub cluster: String,
    /// Its region.
    pub region: String,
    /// Version of the published view.
    pub version: u64,
    /// Whether the gateway reported in the last few seconds.
    pub gateway_connected: bool,
    /// Links.
    pub links: Vec<LinkStatusView>,
    /// Services known here (local and imported).
    pub services: Vec<ServiceStatusView>,
    /// Registered workloads.
    pub workloads: u32,
}

/// Written by every component once its listeners are bound (`--ready-file`), so a supervisor
/// learns the real addresses of ephemeral ports without racing for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyFile {
    /// `controller`, `gateway`, `sidecar` or `demo-app`.
    pub component: String,
    /// The cluster.
    pub cluster: String,
    /// Bound addresses by role (`admin`, `control`, `quic`, `tunnel`, `outbound`, `inbound`, `listen`), named after the flag that sets each.
    pub addrs: BTreeMap<String, SocketAddr>,
    /// The process id.
    pub pid: u32,
}

impl ReadyFile {
    /// Writes the file atomically (temporary file, then rename).
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path)
    }

    /// Reads a ready file.
    pub fn read(path: &std::path::Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// The address bound for `role`.
    pub fn addr(&self, role: &str) -> Option<SocketAddr> {
        self.addrs.get(role).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUNDLE: &str =
        r#"{"trust_domain": "us-east.mesh", "cluster": "us-east", "ca_pem": "pem", "kid": 2}"#;

    #[test]
    fn snapshots_of_the_next_release_decode_with_their_additions_ignored() {
        let sidecar = format!(
            r#"{{"version": 9, "cluster": "us-east", "trust_bundles": [{BUNDLE}],
            "gateway": null, "unknown": [], "epoch": 1, "warming": false, "route_rules": [],
            "services": {{"echo.demo": {{"timeout": "2s", "localities": [{{"cluster": "us-east",
                "health": 1.0, "reason": "local", "zone": "a", "endpoints": [{{
                "address": "127.0.0.1:9", "identity": "spiffe://us-east.mesh/ns/demo/sa/echo",
                "healthy": true, "weight": 5}}]}}]}}}}}}"#
        );
        let snap: SidecarSnapshot = serde_json::from_str(&sidecar).unwrap();
        let route = &snap.services[&"echo.demo".parse().unwrap()];
        assert_eq!(route.localities[0].entry.cluster, "us-east");
        assert_eq!(route.localities[0].endpoints[0].address.port(), 9);
        assert_eq!(snap.trust_bundles[0].cluster, "us-east");

        let gateway = format!(
            r#"{{"version": 3, "cluster": "us-east", "trust_bundle": {BUNDLE}, "mtu": 1200,
            "peers": [{{"cluster": "eu", "trust_bundle": {BUNDLE}, "gateway_addr": "127.0.0.1:4",
                "transport": "quic-v2"}}],
            "exports": {{"cluster": "us-east", "version": 3, "services": {{}}, "shard": 0}}}}"#
        );
        let snap: GatewaySnapshot = serde_json::from_str(&gateway).unwrap();
        assert_eq!(snap.peers[0].gateway_addr.port(), 4);
        assert_eq!(snap.exports.version, 3);
    }

    #[test]
    fn a_breaker_state_of_a_later_release_is_read_as_unknown_not_open() {
        let report = r#"{"reporter": "client-0", "sequence": 4, "breakers": [
            {"service": "echo.demo", "cluster": "eu", "state": "open"},
            {"service": "echo.demo", "cluster": "us", "state": "forced-open", "since": 3}]}"#;
        let report: BreakerReport = serde_json::from_str(report).unwrap();
        let states: Vec<_> = report.breakers.iter().map(|b| b.state).collect();
        assert_eq!(
            states,
            [ReportedBreakerState::Open, ReportedBreakerState::Unknown]
        );
        // Today's states keep their wire names.
        for (state, name) in [
            (BreakerState::Closed, "closed"),
            (BreakerState::Open, "open"),
            (BreakerState::HalfOpen, "half-open"),
        ] {
            let wire = serde_json::to_value(ReportedBreakerState::from(state)).unwrap();
            assert_eq!(wire, serde_json::json!(name));
        }
    }
}
