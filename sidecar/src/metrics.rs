//! The sidecar's Prometheus metrics, registered once in one [`Metrics`] struct.

use mesh_core::breaker::BreakerState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one request counted by the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// `outbound` or `inbound`.
    pub direction: &'static str,
    /// The destination service (`name.namespace`), `unknown` for a service the mesh does not
    /// know (bounded: see `request_metrics`), or `-` when the authority was not one.
    pub service: String,
    /// The cluster that answered, or `-` when none did (the sidecar answered itself).
    pub cluster: String,
    /// The HTTP status returned to the caller.
    pub status: u16,
}

/// Labels of one gRPC call counted by the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GrpcLabels {
    /// `outbound` or `inbound`.
    pub direction: &'static str,
    /// The destination service, `unknown`, or `-` (as in [`RequestLabels`]).
    pub service: String,
    /// The cluster that answered, or `-`.
    pub cluster: String,
    /// The call's `grpc-status` code (`0` is OK, `14` UNAVAILABLE), or `-` when the answer
    /// ended without one (the stream broke, or the client went away).
    pub grpc_status: String,
}

/// Labels of the request duration histogram.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DurationLabels {
    /// `outbound` or `inbound`.
    pub direction: &'static str,
    /// The service.
    pub service: String,
}

/// Labels naming a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ServiceLabels {
    /// The service.
    pub service: String,
}

/// Labels naming a service in one cluster (a breaker or a locality).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LocalityLabels {
    /// The service.
    pub service: String,
    /// The cluster.
    pub cluster: String,
}

/// Labels of a connection the capture rules sent to the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CaptureLabels {
    /// `outbound` or `inbound`.
    pub direction: &'static str,
    /// What became of it: `http`, `opaque`, `passthrough` or `refused`.
    pub handling: &'static str,
}

/// Labels of a request the response cache handled.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CacheLabels {
    /// The destination service.
    pub service: String,
    /// What the cache did, as `x-mesh-cache` says: `hit`, `stale`, `miss` or `bypass`.
    pub result: &'static str,
}

/// Labels of a fault injected into a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FaultLabels {
    /// The destination service.
    pub service: String,
    /// `delay` or `abort`.
    pub kind: &'static str,
}

/// Labels of a request over a rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RateLimitedLabels {
    /// `outbound` (a route's limit) or `inbound` (the served service's limit).
    pub direction: &'static str,
    /// The service.
    pub service: String,
    /// `enforce` (answered 429) or `shadow` (counted, then served).
    pub mode: &'static str,
}

/// Labels of an inbound request judged by the served service's authorization policies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuthorizationLabels {
    /// The served service.
    pub service: String,
    /// The policy that decided (`<namespace>/<name>`), or `-` when none did (no ALLOW policy
    /// matched, or there is none).
    pub policy: String,
    /// `allow`, `deny` or `audit` (an AUDIT policy matched: counted beside the decision).
    pub decision: &'static str,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~33 s: loopback hops up to the longest per-try timeout people configure.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric the sidecar exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `mesh_sidecar_requests_total{direction,service,cluster,status}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `mesh_sidecar_request_duration_seconds{direction,service}`.
    pub duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    /// `mesh_sidecar_retries_total{service}`.
    pub retries: Family<ServiceLabels, Counter>,
    /// `mesh_sidecar_grpc_responses_total{direction,service,cluster,grpc_status}`.
    pub grpc_responses: Family<GrpcLabels, Counter>,
    /// `mesh_sidecar_breaker_state{service,cluster}`: 0 closed, 1 half-open, 2 open.
    pub breaker_state: Family<LocalityLabels, Gauge>,
    /// `mesh_sidecar_outlier_ejections_total{service,cluster}`.
    pub ejections: Family<LocalityLabels, Counter>,
    /// `mesh_sidecar_latency_shifted{service,cluster}`: 1 while latency weighting gives the
    /// locality's traffic away.
    pub latency_shifted: Family<LocalityLabels, Gauge>,
    /// `mesh_sidecar_discovery_connected`: 1 while the discovery stream is open.
    pub discovery_connected: Gauge,
    /// `mesh_sidecar_snapshot_version`: version of the last snapshot applied.
    pub snapshot_version: Gauge,
    /// `mesh_sidecar_captured_connections_total{direction,handling}`.
    pub captured: Family<CaptureLabels, Counter>,
    /// `mesh_sidecar_faults_injected_total{service,kind}`.
    pub faults_injected: Family<FaultLabels, Counter>,
    /// `mesh_sidecar_rate_limited_total{direction,service,mode}`.
    pub rate_limited: Family<RateLimitedLabels, Counter>,
    /// `mesh_sidecar_authorization_total{service,policy,decision}`.
    pub authorization: Family<AuthorizationLabels, Counter>,
    /// `mesh_sidecar_cache_lookups_total{service,result}`.
    pub cache_lookups: Family<CacheLabels, Counter>,
    /// `mesh_sidecar_cache_bytes`: bytes the response cache holds.
    pub cache_bytes: Gauge,
    /// `mesh_sidecar_cache_entries`: answers the response cache holds.
    pub cache_entries: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            retries: Family::default(),
            grpc_responses: Family::default(),
            breaker_state: Family::default(),
            ejections: Family::default(),
            latency_shifted: Family::default(),
            discovery_connected: Gauge::default(),
            snapshot_version: Gauge::default(),
            captured: Family::default(),
            faults_injected: Family::default(),
            rate_limited: Family::default(),
            authorization: Family::default(),
            cache_lookups: Family::default(),
            cache_bytes: Gauge::default(),
            cache_entries: Gauge::default(),
        };
        registry.register(
            "mesh_sidecar_requests",
            "Requests handled, by direction, destination service, serving cluster and status",
            metrics.requests.clone(),
        );
        registry.register(
            "mesh_sidecar_request_duration_seconds",
            "Time from request to response headers, retries included",
            metrics.duration.clone(),
        );
        registry.register(
            "mesh_sidecar_grpc_responses",
            "gRPC calls answered, by direction, destination service, serving cluster and \
             grpc-status (from the trailers, or the head of a trailers-only answer)",
            metrics.grpc_responses.clone(),
        );
        registry.register(
            "mesh_sidecar_retries",
            "Retries sent, by destination service",
            metrics.retries.clone(),
        );
        registry.register(
            "mesh_sidecar_breaker_state",
            "Circuit breaker state per service and cluster: 0 closed, 1 half-open, 2 open",
            metrics.breaker_state.clone(),
        );
        registry.register(
            "mesh_sidecar_outlier_ejections",
            "Endpoints ejected by outlier detection, per service and cluster",
            metrics.ejections.clone(),
        );
        registry.register(
            "mesh_sidecar_latency_shifted",
            "1 while a locality, far slower than another usable one, gives its traffic away",
            metrics.latency_shifted.clone(),
        );
        registry.register(
            "mesh_sidecar_discovery_connected",
            "1 while the discovery stream from the controller is open",
            metrics.discovery_connected.clone(),
        );
        registry.register(
            "mesh_sidecar_snapshot_version",
            "Version of the last discovery snapshot applied",
            metrics.snapshot_version.clone(),
        );
        registry.register(
            "mesh_sidecar_captured_connections",
            "Connections the capture rules sent to the sidecar, by direction and what became of \
             them (http, opaque, passthrough, refused)",
            metrics.captured.clone(),
        );
        registry.register(
            "mesh_sidecar_faults_injected",
            "Faults injected into outbound requests by a FaultPolicy, by destination service and \
             kind (delay, abort)",
            metrics.faults_injected.clone(),
        );
        registry.register(
            "mesh_sidecar_rate_limited",
            "Requests over a rate limit, by direction, service and mode (enforce: answered 429; \
             shadow: counted and served)",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "mesh_sidecar_authorization",
            "Inbound requests judged by authorization policies, by served service, deciding \
             policy (- for none) and decision (allow, deny; audit for each AUDIT policy matched)",
            metrics.authorization.clone(),
        );
        registry.register(
            "mesh_sidecar_cache_lookups",
            "Requests the response cache handled, by destination service and result (hit, \
             stale, miss, bypass)",
            metrics.cache_lookups.clone(),
        );
        registry.register(
            "mesh_sidecar_cache_bytes",
            "Bytes the response cache holds (bodies, header fields, keys)",
            metrics.cache_bytes.clone(),
        );
        registry.register(
            "mesh_sidecar_cache_entries",
            "Answers the response cache holds",
            metrics.cache_entries.clone(),
        );
        metrics
    }

    /// Counts one captured connection.
    pub fn count_captured(&self, direction: &'static str, handling: &'static str) {
        self.captured
            .get_or_create(&CaptureLabels {
                direction,
                handling,
            })
            .inc();
    }

    /// Counts one injected fault (`delay` or `abort`) on a request to `service`.
    pub fn count_fault(&self, service: &str, kind: &'static str) {
        self.faults_injected
            .get_or_create(&FaultLabels {
                service: service.to_string(),
                kind,
            })
            .inc();
    }

    /// Counts one request over a rate limit (`mode`: `enforce` or `shadow`).
    pub fn count_rate_limited(&self, direction: &'static str, service: &str, mode: &'static str) {
        self.rate_limited
            .get_or_create(&RateLimitedLabels {
                direction,
                service: service.to_string(),
                mode,
            })
            .inc();
    }

    /// Counts one authorization decision (`allow`, `deny`, `audit`) by `policy` for `service`.
    pub fn count_authorization(&self, service: &str, policy: &str, decision: &'static str) {
        self.authorization
            .get_or_create(&AuthorizationLabels {
                service: service.to_string(),
                policy: policy.to_string(),
                decision,
            })
            .inc();
    }

    /// Metrics registered nowhere (tests, tools).
    pub fn unregistered() -> Self {
        Self::new(&mut Registry::default())
    }

    /// Sets the breaker gauge of (service, cluster).
    pub fn set_breaker_state(&self, service: &str, cluster: &str, state: BreakerState) {
        let value = match state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        self.breaker_state
            .get_or_create(&LocalityLabels {
                service: service.to_string(),
                cluster: cluster.to_string(),
            })
            .set(value);
    }

    /// Sets the latency-shift gauge of (service, cluster).
    pub fn set_latency_shifted(&self, service: &str, cluster: &str, shifted: bool) {
        self.latency_shifted
            .get_or_create(&LocalityLabels {
                service: service.to_string(),
                cluster: cluster.to_string(),
            })
            .set(i64::from(shifted));
    }

    /// Counts one request and its duration.
    pub fn observe_request(
        &self,
        direction: &'static str,
        service: &str,
        cluster: &str,
        status: u16,
        seconds: f64,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                direction,
                service: service.to_string(),
                cluster: cluster.to_string(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&DurationLabels {
                direction,
                service: service.to_string(),
            })
            .observe(seconds);
    }
}
