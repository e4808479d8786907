//! What one layer of a stack learns and others need, carried with the request (its extensions)
//! on the way in and with the response on the way out, never through shared state or
//! out-parameters. Each fact names the layer that sets it and the layers that read it.

use std::sync::Arc;

use mesh_core::api::{RouteEndpoint, SidecarSnapshot, VipTarget};
use mesh_core::identity::SpiffeId;
use mesh_core::names::{Destination, ServiceKey};

use crate::outbound::balancer::EndpointRef;

/// Request (outbound): where the request goes and the snapshot that routes it. Set by
/// `resolve`; read by `retry` (the budget's service), `balance` (the route) and `connect` (the
/// gateway, the service named in tunnels).
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The destination the authority named.
    pub dest: Destination,
    /// The snapshot that lists its route.
    pub snapshot: Arc<SidecarSnapshot>,
}

/// Request (outbound): the endpoints earlier tries of this request went to, which `balance`
/// skips. Set by `retry` on each try. Response: every endpoint tried, in order, the one that
/// answered last; read by `breaker`.
#[derive(Debug, Clone, Default)]
pub struct Tried(pub Vec<EndpointRef>);

/// Request (outbound): the endpoint `balance` chose for this try; read by `connect`.
#[derive(Debug, Clone)]
pub struct Picked {
    /// The endpoint's cluster.
    pub cluster: String,
    /// The endpoint, as the snapshot lists it (address, identity, plaintext).
    pub endpoint: RouteEndpoint,
}

/// Response: the endpoint that answered (outbound: set by `balance`; inbound: this sidecar,
/// set by its `served_by` layer). Read by `retry` and the metrics layer.
#[derive(Debug, Clone)]
pub struct ServedBy(pub EndpointRef);

/// Response: the service the request was for, once known. Set by `resolve` (or `errors`, from
/// the error) outbound and by `served_by` inbound; read by the metrics layer.
#[derive(Debug, Clone)]
pub struct ServiceName(pub ServiceKey);

/// Request (outbound, captured connections): the mesh service the connection's original
/// destination, a VIP, stands for. Set by the transparent listener on every request of the
/// connection; read by `resolve`, which routes by it when the authority is not a mesh name (an
/// address) and which accepts a CONNECT (an opaque stream) only with it.
#[derive(Debug, Clone)]
pub struct CapturedVip(pub VipTarget);

/// Request (outbound): the route rule the request matched, for the layers of the rule's other
/// settings (and metrics). Set by `route`.
#[derive(Debug, Clone)]
pub struct MatchedRule(pub Arc<mesh_core::policy::router::CompiledRule>);

/// Request (inbound): the SPIFFE ID the caller presented in the mTLS handshake. Set by the
/// inbound listener (`inbound::server`) on every request of the connection, absent when the
/// certificate named none; read by `inbound::rate_limit` (the caller's bucket).
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// The identity.
    pub id: Arc<SpiffeId>,
    /// Its URI text, as rate limit overrides name callers.
    pub uri: Arc<str>,
}

impl PeerIdentity {
    /// The fact for `id`.
    pub fn new(id: SpiffeId) -> Self {
        Self {
            uri: Arc::from(id.uri()),
            id: Arc::new(id),
        }
    }
}
