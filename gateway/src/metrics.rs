//! The gateway's Prometheus metrics, registered in one place.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels naming a peer cluster.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerLabels {
    /// The peer cluster.
    pub peer: String,
}

/// Labels naming a reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    /// Short, fixed label of the reason.
    pub reason: String,
}

/// Labels of a tunnel outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TunnelLabels {
    /// The peer cluster the tunnel goes to (ingress) or comes from (egress).
    pub peer: String,
    /// `ingress` (opened by a local sidecar) or `egress` (opened by a peer gateway).
    pub side: String,
    /// `accepted` or the refusal / failure label.
    pub result: String,
}

/// Labels of tunnel bytes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BytesLabels {
    /// The peer cluster.
    pub peer: String,
    /// `to_peer` (sent over QUIC) or `from_peer` (received over QUIC).
    pub direction: String,
}

/// Labels of catalog messages on control streams.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CatalogLabels {
    /// The peer cluster.
    pub peer: String,
    /// `sent` or `received`.
    pub direction: String,
    /// `snapshot`, `delta` or `resync_request`.
    pub kind: String,
}

/// Labels of the controller replica gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReplicaStateLabels {
    /// `known` (what `--controller` resolves to) or `reachable` (the last call reached it).
    pub state: &'static str,
}

/// The metrics of the gateway's session with its controller's replicas.
#[derive(Debug, Clone, Default)]
pub(crate) struct ControllerMetrics {
    /// Replicas known and reachable.
    pub replicas: Family<ReplicaStateLabels, Gauge>,
}

impl ControllerMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "mesh_gateway_controller_replicas",
            "Controller replicas the gateway knows (state=known: the addresses --controller \
             resolves to) and reaches (state=reachable: its last call to them was answered)",
            m.replicas.clone(),
        );
        m
    }

    /// Sets the gauges from `(known, reachable)`.
    pub(crate) fn set(&self, (known, reachable): (usize, usize)) {
        for (state, n) in [("known", known), ("reachable", reachable)] {
            self.replicas
                .get_or_create(&ReplicaStateLabels { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// Every metric the gateway exports.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// 1 while the QUIC link to the peer is up.
    pub link_up: Family<PeerLabels, Gauge>,
    /// Smoothed RTT of the link.
    pub link_rtt_seconds: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    /// Lost over sent packets of the link's current connection.
    pub link_loss_ratio: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    /// QUIC handshakes that failed, by reason.
    pub handshake_failures: Family<ReasonLabels, Counter>,
    /// Tunnels by peer, side and result.
    pub tunnels: Family<TunnelLabels, Counter>,
    /// Tunnels splicing bytes now, by peer.
    pub tunnels_active: Family<PeerLabels, Gauge>,
    /// Bytes carried through tunnels.
    pub tunnel_bytes: Family<BytesLabels, Counter>,
    /// QUIC streams refused for a bad header, by `HeaderError::label`.
    pub stream_rejected: Family<ReasonLabels, Counter>,
    /// Catalog messages on control streams.
    pub catalog_messages: Family<CatalogLabels, Counter>,
    /// Failed attempts to hand a peer's catalog message to the controller.
    pub catalog_delivery_failures: Family<PeerLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "mesh_gateway_link_up",
            "Whether the QUIC link to the peer cluster is up (1) or not (0)",
            m.link_up.clone(),
        );
        registry.register(
            "mesh_gateway_link_rtt_seconds",
            "Smoothed round-trip time of the QUIC link to the peer",
            m.link_rtt_seconds.clone(),
        );
        registry.register(
            "mesh_gateway_link_loss_ratio",
            "Share of packets lost on the current QUIC connection to the peer",
            m.link_loss_ratio.clone(),
        );
        registry.register(
            "mesh_gateway_handshake_failures",
            "QUIC handshakes with peer gateways that failed, by reason",
            m.handshake_failures.clone(),
        );
        registry.register(
            "mesh_gateway_tunnels",
            "Tunnels by peer, side (ingress from sidecars, egress from peers) and result",
            m.tunnels.clone(),
        );
        registry.register(
            "mesh_gateway_tunnels_active",
            "Tunnels splicing bytes now, by peer",
            m.tunnels_active.clone(),
        );
        registry.register(
            "mesh_gateway_tunnel_bytes",
            "Bytes carried through tunnels, by peer and direction",
            m.tunnel_bytes.clone(),
        );
        registry.register(
            "mesh_gateway_stream_rejected",
            "QUIC streams refused because their header was malformed, by reason",
            m.stream_rejected.clone(),
        );
        registry.register(
            "mesh_gateway_catalog_messages",
            "Catalog messages on control streams, by peer, direction and kind",
            m.catalog_messages.clone(),
        );
        registry.register(
            "mesh_gateway_catalog_delivery_failures",
            "Attempts to hand a peer's catalog message to the controller that failed",
            m.catalog_delivery_failures.clone(),
        );
        m
    }

    /// Counts one tunnel outcome.
    pub(crate) fn tunnel(&self, peer: &str, side: &str, result: &str) {
        self.tunnels
            .get_or_create(&TunnelLabels {
                peer: peer.to_string(),
                side: side.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts a failed handshake.
    pub(crate) fn handshake_failure(&self, reason: &str) {
        self.handshake_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a refused stream.
    pub(crate) fn stream_rejected(&self, reason: &str) {
        self.stream_rejected
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one catalog message.
    pub(crate) fn catalog_message(&self, peer: &str, direction: &str, kind: &str) {
        self.catalog_messages
            .get_or_create(&CatalogLabels {
                peer: peer.to_string(),
                direction: direction.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Marks a tunnel with `peer` active until the guard drops.
    pub(crate) fn active_tunnel(&self, peer: &str) -> ActiveTunnel {
        let gauge = self
            .tunnels_active
            .get_or_create(&PeerLabels {
                peer: peer.to_string(),
            })
            .clone();
        gauge.inc();
        ActiveTunnel(gauge)
    }

    /// Drops every per-peer series of a peer that was unlinked.
    pub(crate) fn forget_peer(&self, peer: &str) {
        let labels = PeerLabels {
            peer: peer.to_string(),
        };
        self.link_up.remove(&labels);
        self.link_rtt_seconds.remove(&labels);
        self.link_loss_ratio.remove(&labels);
    }
}

/// Counts one active tunnel while it lives.
#[derive(Debug)]
pub(crate) struct ActiveTunnel(Gauge);

impl Drop for ActiveTunnel {
    fn drop(&mut self) {
        self.0.dec();
    }
}
