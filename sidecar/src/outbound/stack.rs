//! The whole outbound stack, assembled in one place: what happens to a request from the local
//! app, top to bottom.

use std::sync::Arc;

use bytes::Bytes;
use http_body::Body;
use mesh_core::http::BoxError;
use tower::ServiceBuilder;

use super::connect::{Connect, TryError};
use super::retry::RetryBudgets;
use super::{balance, breaker, cache, errors, fault, rate_limit, resolve, retry, route, upgrade};
use crate::request_metrics::{self, Direction};
use crate::stack::Stack;
use crate::state::SidecarState;
use crate::timeout;

/// The retry budgets of a sidecar's outbound stacks (one per service, shared by them).
pub fn retry_budgets(state: &Arc<SidecarState>) -> Arc<RetryBudgets> {
    Arc::new(RetryBudgets::new(state.resilience().retry_budget.clone()))
}

/// The outbound stack of a sidecar, over any request body (the app's requests, or the CONNECT
/// that opens a captured opaque stream, see `crate::transparent`), sharing `budgets` with the
/// sidecar's other outbound stacks; one layer per concern, in request order:
///
/// 1. *access log* (not built yet: the observability issue adds it here);
/// 2. **metrics**: request count and duration by service, serving cluster and status;
/// 3. *trace* (not built yet: the client span per request, observability issue);
/// 4. **errors**: the one mapping of every error below to a status and `x-mesh-error`;
/// 5. **upgrade**: an HTTP/1.1 `Upgrade` (WebSocket) goes down as an extended CONNECT; the
///    far side's yes becomes the app's 101, and the two connections are joined (no timeout
///    below cuts them: every one bounds the answer's head only);
/// 6. **resolve**: authority -> destination -> the snapshot's route (on-demand discovery),
///    request put in upstream form;
/// 7. **route**: the service's traffic policy: the matching rule (none: 404), its filters,
///    the backend by weight, its timeouts and retries (as facts for `retry` and the per-try
///    timeout), the request timeout around everything below;
/// 8. **rate limit**: the rule's `RateLimitPolicy`, this sidecar as the caller (over it: 429
///    with `Retry-After` and the `RateLimit` fields; shadow mode only counts);
/// 9. **fault**: the rule's `FaultPolicy`: a delay, then on; an abort answered at once with
///    the policy's status (`x-mesh-fault`);
/// 10. **cache**: the rule's `CachePolicy`: fresh answers from the store (`x-mesh-cache`),
///     concurrent misses for one key collapsed, storable answers stored;
/// 11. **breaker**: settles the request on the breakers of the localities it tried;
/// 12. **retry**: replayable body, tries until settled, within the policy and the budget (the
///     only layer that calls its inner service more than once);
/// 13. **balance**: the endpoint of each try (priority spill, P2C, latency probes) and its
///     outcome (outlier detection, latency estimates);
/// 14. **per-try timeout**: bounds one try until its response head (below `balance`, so a
///     timed-out try counts against the endpoint it went to); the route's `backendRequest`
///     when it sets one;
/// 15. **connect**: the try on a pooled connection, direct, tunnelled or plaintext.
pub fn outbound_service<B>(state: &Arc<SidecarState>, budgets: Arc<RetryBudgets>) -> impl Stack<B>
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    ServiceBuilder::new()
        .layer(request_metrics::layer(
            state.metrics().clone(),
            Direction::Outbound,
        ))
        .layer(errors::layer())
        .layer(upgrade::layer())
        .layer(resolve::layer(state.clone()))
        .layer(route::layer(state.clone()))
        .layer(rate_limit::layer(state))
        .layer(fault::layer(state.metrics().clone()))
        .layer(cache::layer(state.response_cache().clone()))
        .layer(breaker::layer(state.clone()))
        .layer(retry::layer(budgets, state.metrics().clone()))
        .layer(balance::layer(state.clone()))
        .layer(timeout::layer(state.request_timeout(), TryError::Timeout))
        .service(Connect::new(state.clone()))
}
