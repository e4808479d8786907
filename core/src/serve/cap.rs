//! How many connections a listener holds at once. Past the cap a new connection is accepted
//! and closed at once (fail fast: the client sees the close immediately and can go elsewhere,
//! instead of waiting in the kernel's backlog), and counted per listener in
//! `<component>_connections_refused_total{listener}`. Closing, not answering 503: the accept
//! loop does not know the protocol (TLS, HTTP/2 prior knowledge, an opaque captured stream),
//! and a refusal must cost less than serving.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Default cap of a data-path listener (sidecar inbound and outbound, gateway tunnel port,
/// controller control API): 4096 connections, far above what one workload's clients or a
/// cluster's sidecars hold (pooled HTTP/2), and under the usual 1024-per-process soft limit
/// raised by container runtimes (1048576), so the process refuses before it runs out of file
/// descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Default cap of an admin listener (probes, metrics scrapes, `mesh` commands): 256.
pub const DEFAULT_MAX_ADMIN_CONNECTIONS: usize = 256;

/// The labels of the refused-connections counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ListenerLabels {
    /// The listener's role (`inbound`, `outbound`, `admin`, `control`, `tunnel`).
    pub listener: String,
}

/// A component's refused-connections counter, one series per listener.
#[derive(Debug, Clone, Default)]
pub struct RefusedConnections(Family<ListenerLabels, Counter>);

impl RefusedConnections {
    /// Registers `<prefix>_connections_refused_total` in `registry`.
    pub fn register(registry: &mut Registry, prefix: &str) -> Self {
        let family = Family::<ListenerLabels, Counter>::default();
        registry.register(
            format!("{prefix}_connections_refused"),
            "Connections a listener accepted and closed at once because it held its maximum, \
             by listener",
            family.clone(),
        );
        Self(family)
    }

    /// The cap of `listener`: at most `max` connections, refusals counted here.
    pub fn cap(&self, listener: &str, max: usize) -> ConnectionCap {
        ConnectionCap {
            max,
            refused: self
                .0
                .get_or_create(&ListenerLabels {
                    listener: listener.to_string(),
                })
                .clone(),
        }
    }
}

/// At most `max` connections at once on one listener; refusals counted.
#[derive(Debug, Clone)]
pub struct ConnectionCap {
    max: usize,
    refused: Counter,
}

impl ConnectionCap {
    /// No cap (tests, the demo app); refusals are counted nowhere.
    pub fn unlimited() -> Self {
        Self {
            max: usize::MAX,
            refused: Counter::default(),
        }
    }

    /// The most connections held at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }

    /// Whether one more connection fits next to `held`; counts the refusal when not (for
    /// accept loops of their own, such as the controller's control listener).
    pub fn admit(&self, held: usize) -> bool {
        if held < self.max {
            return true;
        }
        self.refused.inc();
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_past_the_cap_are_refused_and_counted_per_listener() {
        let mut registry = Registry::default();
        let refused = RefusedConnections::register(&mut registry, "mesh_test");
        let cap = refused.cap("inbound", 2);
        assert!(cap.admit(0) && cap.admit(1));
        assert!(!cap.admit(2));
        assert_eq!(cap.refused(), 1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("mesh_test_connections_refused_total{listener=\"inbound\"} 1"),
            "{text}"
        );
    }
}
