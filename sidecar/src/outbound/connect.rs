//! The connect service, the bottom of the outbound stack: sends one try to the endpoint that
//! `balance` picked ([`Picked`]), over the pool's connection to it (direct mTLS, a tunnel
//! through the own gateway, or plaintext). The connection is obtained before the body is taken,
//! so a connect failure leaves the body unsent and any request may then be retried. It never
//! retries itself. The service's backend-policy limits go to the pool with the target, which
//! refuses a try that would wait past `limits.maxPendingRequests` ([`TryError::LimitExceeded`]).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tower::Service;

use super::body::TryBody;
use mesh_core::policy::backend_policy::LimitExceeded;

use super::pool::{ConnectError, GetError, PoolKey, Target};
use crate::facts::{Picked, Resolved};
use crate::stack::BoxFuture;
use crate::state::SidecarState;

/// Why one try produced no response.
#[derive(Debug, thiserror::Error)]
pub enum TryError {
    /// No connection, or the request was not sent on it.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The upstream connection or stream broke after the request was sent.
    #[error("the exchange broke: {0}")]
    Protocol(#[source] hyper::Error),
    /// No response head within the per-try timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A streamed body went to an earlier try (the retry policy rules this out beforehand).
    #[error("the streamed request body was sent to an earlier try")]
    BodyGone,
    /// The service's limit refused to let the try wait for a connection: nothing was sent, and
    /// nothing is known about the endpoint.
    #[error(transparent)]
    LimitExceeded(LimitExceeded),
    /// A layer above did not set a fact this one needs: the stack is assembled wrongly.
    #[error("the outbound stack is misassembled: no {0} fact on the request")]
    MissingFact(&'static str),
}

impl From<GetError> for TryError {
    fn from(error: GetError) -> Self {
        match error {
            GetError::Connect(e) => Self::Connect(e),
            GetError::LimitExceeded(limit) => Self::LimitExceeded(limit),
        }
    }
}

/// Sends each try on a pooled connection.
#[derive(Debug, Clone)]
pub struct Connect {
    state: Arc<SidecarState>,
}

impl Connect {
    /// Sends through `state`'s connection pool.
    pub fn new(state: Arc<SidecarState>) -> Self {
        Self { state }
    }
}

impl Service<Request<TryBody>> for Connect {
    type Response = Response<Incoming>;
    type Error = TryError;
    type Future = BoxFuture<Result<Response<Incoming>, TryError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), TryError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<TryBody>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let picked = parts
                .extensions
                .get::<Picked>()
                .ok_or(TryError::MissingFact("Picked"))?;
            let resolved = parts
                .extensions
                .get::<Resolved>()
                .ok_or(TryError::MissingFact("Resolved"))?;
            let target = Target {
                cluster: &picked.cluster,
                endpoint: &picked.endpoint,
                service: &resolved.dest.service,
                gateway: resolved.snapshot.gateway,
                traceparent: parts.headers.get("traceparent"),
                limits: resolved
                    .snapshot
                    .policies
                    .get(&resolved.dest.service)
                    .and_then(|p| p.backend.as_ref())
                    .map(|b| &b.limits),
            };
            let mut conn = state.pool().get(target).await?;
            let Some(request_body) = body.take() else {
                return Err(TryError::BodyGone);
            };
            let key = PoolKey::Endpoint {
                cluster: picked.cluster.clone(),
                addr: picked.endpoint.address,
            };
            let addr = picked.endpoint.address;
            match conn
                .try_send_request(Request::from_parts(parts, request_body))
                .await
            {
                Ok(rsp) => Ok(rsp),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => {
                        body.put_back(unsent.into_body());
                        state.pool().evict(&key);
                        Err(TryError::Connect(ConnectError::NotSent {
                            addr,
                            source: e.into_error(),
                        }))
                    }
                    None => Err(TryError::Protocol(e.into_error())),
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use mesh_core::names::Destination;
    use tower::ServiceExt;

    use super::*;
    use crate::outbound::body::ReplayBody;
    use crate::test_state::{CLUSTER, echo, endpoint, snapshot, state};

    fn request(picked: Option<Picked>) -> (Request<TryBody>, TryBody) {
        let body = TryBody::new(ReplayBody::Streaming(Some(mesh_core::http::full(
            Bytes::from_static(b"once"),
        ))));
        let mut req = Request::new(body.clone());
        req.extensions_mut().insert(Resolved {
            dest: Destination {
                service: echo(),
                cluster: None,
            },
            snapshot: Arc::new(snapshot(vec![])),
        });
        if let Some(picked) = picked {
            req.extensions_mut().insert(picked);
        }
        (req, body)
    }

    #[tokio::test]
    async fn a_connect_failure_leaves_a_streamed_body_unsent() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (req, body) = request(Some(Picked {
            cluster: CLUSTER.into(),
            endpoint: endpoint(CLUSTER, port),
        }));
        let err = Connect::new(state()).oneshot(req).await.unwrap_err();
        assert!(
            matches!(err, TryError::Connect(ConnectError::Tcp { .. })),
            "{err}"
        );
        assert!(
            body.available(),
            "the body is still there for another endpoint"
        );
    }

    #[tokio::test]
    async fn a_try_past_the_services_max_pending_is_refused_with_its_body_kept() {
        use mesh_core::policy::backend_policy::{BackendPolicySpec, LimitsSpec};
        use mesh_core::policy::service_policy::ServicePolicy;
        // Accepts and never answers the TLS handshake: the first try waits in its dial.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut snap = snapshot(vec![]);
        let backend = BackendPolicySpec {
            limits: LimitsSpec {
                max_pending_requests: Some(1),
                ..LimitsSpec::default()
            },
            ..BackendPolicySpec::default()
        };
        let policy = ServicePolicy {
            backend: Some(backend),
            ..ServicePolicy::default()
        };
        snap.policies.insert(echo(), policy);
        let snap = Arc::new(snap);
        let limited = || {
            let (mut req, body) = request(Some(Picked {
                cluster: CLUSTER.into(),
                endpoint: endpoint(CLUSTER, port),
            }));
            req.extensions_mut().insert(Resolved {
                dest: Destination {
                    service: echo(),
                    cluster: None,
                },
                snapshot: snap.clone(),
            });
            (req, body)
        };
        let state = state();
        let (first, _) = limited();
        let waiting = tokio::spawn(Connect::new(state.clone()).oneshot(first));
        let _accepted = listener.accept().await.unwrap();
        let pending = async {
            while state.pool().pending(&echo()) == 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(1), pending)
            .await
            .expect("the first try waits in its dial");
        let (second, body) = limited();
        let err = Connect::new(state.clone())
            .oneshot(second)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                TryError::LimitExceeded(LimitExceeded::PendingRequests { max: 1 })
            ),
            "{err}"
        );
        assert!(body.available(), "nothing was sent");
        waiting.abort();
    }

    #[tokio::test]
    async fn a_try_without_a_pick_is_a_misassembled_stack() {
        let (req, body) = request(None);
        let err = Connect::new(state()).oneshot(req).await.unwrap_err();
        assert!(matches!(err, TryError::MissingFact("Picked")), "{err}");
        assert!(body.available());
    }
}
