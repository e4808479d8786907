//! The whole inbound stack, assembled in one place: what happens to a request from another
//! sidecar (or a gateway's tunnel) on its way to the local app, top to bottom.

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_core::names::ServiceKey;
use tower::ServiceBuilder;

use super::app::AppClient;
use super::errors::{self, InboundError};
use super::origin_form::OriginFormLayer;
use super::{authorization, opaque, rate_limit, served_by, upgrade};
use crate::outbound::balancer::EndpointRef;
use crate::request_metrics::{self, Direction};
use crate::stack::HttpStack;
use crate::state::SidecarState;
use crate::timeout;

/// The inbound stack of a sidecar serving `service` from the app at `app`, reached by its peers
/// at `advertised`, one layer per concern, in request order:
///
/// 1. *access log* (not built yet: the observability issue adds it here);
/// 2. **metrics**: request count and duration;
/// 3. **served by**: `x-mesh-cluster` on every answer;
/// 4. *trace* (not built yet: the server span, observability issue);
/// 5. **errors**: the one mapping of every error below to a status and `x-mesh-error`;
/// 6. **authorization**: the `AuthorizationPolicy`s of the service and its namespace, and the
///    namespace's default, from the latest snapshot, on the caller's SPIFFE ID (the
///    `PeerIdentity` fact `server` sets from the TLS handshake), the method, the path and the
///    app's port (an opaque stream has no method nor path); denied: 403 naming the policy
///    (gRPC: `grpc-status: 7`); AUDIT policies only log;
/// 7. **rate limit**: the service's inbound `RateLimitPolicy` from the latest snapshot, per
///    caller identity (over it: 429 with `Retry-After` and the `RateLimit` fields; shadow
///    mode only counts);
/// 8. **timeout**: bounds the app's answer (its head: a streamed body or an upgraded
///    connection outlives it);
/// 9. **upgrade**: an extended CONNECT (an HTTP/1.1 `Upgrade` another sidecar carried) is
///    replayed to the app on a connection of its own; after the app's 101 the stream and the
///    connection are joined, and it goes no further;
/// 10. **opaque**: a CONNECT (a stream another sidecar's capture took for something other than
///     HTTP) is joined to a new connection to the app, and goes no further;
/// 11. **origin form**: the request as a plain HTTP/1.1 app expects it;
/// 12. **app**: the client of the app: pooled HTTP/1.1, or h2c for gRPC (trailers).
pub fn inbound_stack(
    state: &Arc<SidecarState>,
    service: ServiceKey,
    app: SocketAddr,
    advertised: SocketAddr,
) -> impl HttpStack {
    let app_port = app.port();
    let app = AppClient::new(app, state.connect_timeout());
    let own = EndpointRef {
        cluster: state.cluster().to_string(),
        addr: advertised,
    };
    ServiceBuilder::new()
        .layer(request_metrics::layer(
            state.metrics().clone(),
            Direction::Inbound,
        ))
        .layer(served_by::layer(own, service.clone()))
        .layer(errors::layer(service.clone(), state.cluster().to_string()))
        .layer(authorization::layer(
            state.clone(),
            service.clone(),
            app_port,
        ))
        .layer(rate_limit::layer(state.clone(), service))
        .layer(timeout::layer(
            state.request_timeout(),
            InboundError::Timeout,
        ))
        .layer(upgrade::layer(app.clone()))
        .layer(opaque::layer(app.clone()))
        .layer(OriginFormLayer)
        .service(app)
}
