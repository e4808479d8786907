//! Unit-test support: a sidecar state of cluster `us-east` with a fresh CA and no snapshot, and
//! snapshots routing `echo.demo`, for the layers' tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::api::{LocalityRoute, RouteEndpoint, ServiceRoute, SidecarSnapshot};
use mesh_core::identity::{ClusterCa, SpiffeId, TrustBundle};
use mesh_core::locality::LocalityEntry;
use mesh_core::names::ServiceKey;

use crate::identity::SidecarIdentity;
use crate::metrics::Metrics;
use crate::outbound::balancer::ResilienceConfig;
use crate::state::{SidecarState, StateOptions};

/// The cluster of the test state.
pub(crate) const CLUSTER: &str = "us-east";

/// `echo.demo`.
pub(crate) fn echo() -> ServiceKey {
    "echo.demo".parse().expect("a valid service key")
}

/// A state of [`CLUSTER`] with `request_timeout`, with `metrics`.
pub(crate) fn state_with(request_timeout: Duration, metrics: Metrics) -> Arc<SidecarState> {
    let td = format!("{CLUSTER}.mesh");
    let ca = ClusterCa::generate(&td).expect("a CA");
    let bundle = TrustBundle {
        trust_domain: td.clone(),
        cluster: CLUSTER.into(),
        ca_pem: ca.cert_pem().into(),
    };
    let id = SpiffeId::workload(&td, "demo", "client");
    let issued = ca
        .issue(&id, Duration::from_secs(3600))
        .expect("a certificate");
    let identity = SidecarIdentity::new(issued, bundle).expect("an identity");
    SidecarState::new(
        StateOptions {
            cluster: CLUSTER.into(),
            identity,
            connect_timeout: Duration::from_millis(200),
            request_timeout,
            resilience: ResilienceConfig::default(),
            discovery_source: "controller at test".into(),
            cache_max_bytes: mesh_core::policy::http_cache::DEFAULT_CAPACITY_BYTES,
        },
        metrics,
    )
}

/// A state of [`CLUSTER`] with unregistered metrics.
pub(crate) fn state() -> Arc<SidecarState> {
    state_with(Duration::from_secs(1), Metrics::unregistered())
}

/// An endpoint at `127.0.0.1:port` with the echo identity of `cluster`.
pub(crate) fn endpoint(cluster: &str, port: u16) -> RouteEndpoint {
    RouteEndpoint {
        address: ([127, 0, 0, 1], port).into(),
        identity: SpiffeId::workload(&format!("{cluster}.mesh"), "demo", "echo").to_string(),
        healthy: true,
        plaintext: false,
    }
}

/// A healthy locality of `cluster` with `endpoints`.
pub(crate) fn locality(cluster: &str, endpoints: Vec<RouteEndpoint>) -> LocalityRoute {
    LocalityRoute {
        entry: LocalityEntry {
            cluster: cluster.into(),
            health: 1.0,
            reason: "test".into(),
        },
        endpoints,
    }
}

/// A snapshot of [`CLUSTER`] routing `echo.demo` over `localities`.
pub(crate) fn snapshot(localities: Vec<LocalityRoute>) -> SidecarSnapshot {
    SidecarSnapshot {
        version: 1,
        cluster: CLUSTER.into(),
        trust_bundles: vec![],
        gateway: None,
        services: BTreeMap::from([(echo(), ServiceRoute { localities })]),
        unknown: vec![],
        policies: Default::default(),
        epoch: 0,
        warming: false,
    }
}

/// What an inbound layer's tests drive: the state, the layer over an app answering 200 (as a
/// boxed service), the app's call count, and the state's metrics as text.
pub(crate) type InboundHarness = (
    Arc<SidecarState>,
    tower::util::BoxCloneService<
        http::Request<()>,
        http::Response<mesh_core::http::BoxBody>,
        crate::inbound::errors::InboundError,
    >,
    Arc<std::sync::atomic::AtomicUsize>,
    Box<dyn Fn() -> String>,
);

/// The app below an inbound layer in its tests.
pub(crate) type CountedApp = tower::util::BoxCloneService<
    http::Request<()>,
    http::Response<mesh_core::http::BoxBody>,
    crate::inbound::errors::InboundError,
>;

/// An inbound layer built by `layer` on a test state with registered metrics, over an app that
/// counts its calls and answers 200.
pub(crate) fn inbound_harness<L>(layer: impl FnOnce(Arc<SidecarState>) -> L) -> InboundHarness
where
    L: tower::Layer<CountedApp>,
    L::Service: tower::Service<
            http::Request<()>,
            Response = http::Response<mesh_core::http::BoxBody>,
            Error = crate::inbound::errors::InboundError,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut registry = prometheus_client::registry::Registry::default();
    let state = state_with(Duration::from_secs(1), Metrics::new(&mut registry));
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = CountedApp::new(tower::service_fn(move |_: http::Request<()>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            Ok::<_, crate::inbound::errors::InboundError>(mesh_core::http::text(
                http::StatusCode::OK,
                "app",
            ))
        }
    }));
    let svc = layer(state.clone()).layer(app);
    let exported = Box::new(move || {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    });
    (
        state,
        tower::util::BoxCloneService::new(svc),
        calls,
        exported,
    )
}
