//! The retry layer, the only layer that calls its inner service more than once. It reads the
//! request body into a [`ReplayBody`] (held in memory when small and of known length, so it can
//! be sent again), then sends tries down the stack, each with the endpoints tried so far
//! ([`Tried`]), until one answers with something that is not worth another endpoint, the
//! policy ([`retry_policy`](super::retry_policy)) says no, or the service's retry budget is
//! spent. The budget (20% of requests plus a floor per second, per service) lives here.
//!
//! It answers with the response of the try that settled it, else with the last failure: a
//! 502/503/504 from upstream as it came, a failed try as a [`ProxyError`]. Either way the
//! endpoints tried travel up for the breaker layer (on the response's [`Tried`], or in
//! [`Unanswered`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use mesh_core::http::{BoxBody, BoxError};
use mesh_core::names::{Destination, ServiceKey};
use mesh_core::retry_budget::{RetryBudget, RetryBudgetConfig};
use tower::{Service, ServiceExt};

use super::balance::BalanceError;
use super::balancer::EndpointRef;
use super::body::{ReplayBody, TryBody};
use super::connect::TryError;
use super::errors::ProxyError;
use super::grpc_status;
use super::retry_policy::{RetryRules, TryFailure};
use crate::facts::{Resolved, ServedBy, Tried};
use crate::metrics::{Metrics, ServiceLabels};
use crate::stack::{Concern, ConcernLayer};
use crate::state::now;

/// A request that got no response, with the endpoints it tried (for the breaker layer).
#[derive(Debug)]
pub struct Unanswered {
    /// Why, as the app will be told.
    pub error: ProxyError,
    /// Every endpoint tried, in order.
    pub tried: Vec<EndpointRef>,
}

/// The retry budget of every service, created on first use.
#[derive(Debug)]
pub struct RetryBudgets {
    config: RetryBudgetConfig,
    budgets: Mutex<HashMap<ServiceKey, RetryBudget>>,
}

impl RetryBudgets {
    /// Budgets built with `config`.
    pub fn new(config: RetryBudgetConfig) -> Self {
        Self {
            config,
            budgets: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, service: &ServiceKey, f: impl FnOnce(&mut RetryBudget) -> T) -> T {
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(budget) = budgets.get_mut(service) {
            return f(budget);
        }
        let budget = budgets
            .entry(service.clone())
            .or_insert_with(|| RetryBudget::new(self.config.clone()));
        f(budget)
    }

    /// Credits one request of `service`.
    pub fn deposit(&self, service: &ServiceKey) {
        self.with(service, |b| b.deposit(now()))
    }

    /// Takes one retry of `service` from its budget, if it allows one.
    pub fn try_withdraw(&self, service: &ServiceKey) -> bool {
        self.with(service, |b| b.try_withdraw(now()))
    }
}

/// The retry layer: retries within `budgets`, counting retries in `metrics`.
pub fn layer(budgets: Arc<RetryBudgets>, metrics: Metrics) -> ConcernLayer<Retry> {
    ConcernLayer(Retry { budgets, metrics })
}

/// Sends tries until one settles the request.
#[derive(Debug, Clone)]
pub struct Retry {
    budgets: Arc<RetryBudgets>,
    metrics: Metrics,
}

/// The last failed try, kept to answer with when no retry follows.
enum LastFailure {
    /// A 502/503/504 from upstream: passed to the app as-is (with its `x-mesh-error`).
    Response(Response<BoxBody>),
    /// A try that produced no response.
    Try(EndpointRef, TryError),
}

impl LastFailure {
    fn kind(&self) -> TryFailure {
        match self {
            Self::Response(rsp) => {
                TryFailure::Status(grpc_status::effective_status(rsp.status(), rsp.headers()))
            }
            Self::Try(_, TryError::Connect(_)) => TryFailure::Connect,
            Self::Try(_, TryError::Timeout(_)) => TryFailure::Timeout,
            // The balance layer answers a limit itself; kept out of the retryable kinds.
            Self::Try(
                _,
                TryError::Protocol(_)
                | TryError::BodyGone
                | TryError::MissingFact(_)
                | TryError::LimitExceeded(_),
            ) => TryFailure::Protocol,
        }
    }
}

impl<S, B> Concern<Request<B>, S> for Retry
where
    S: Service<Request<TryBody>, Response = Response<BoxBody>, Error = BalanceError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = Unanswered;

    async fn handle(self, req: Request<B>, next: S) -> Result<Response<BoxBody>, Unanswered> {
        let Self { budgets, metrics } = self;
        let (parts, body) = req.into_parts();
        let Some(dest) = parts.extensions.get::<Resolved>().map(|r| r.dest.clone()) else {
            return Err(Unanswered {
                error: ProxyError::Misassembled("Resolved"),
                tried: Vec::new(),
            });
        };
        let body = match ReplayBody::read(body).await {
            Ok(body) => TryBody::new(body),
            Err(e) => {
                return Err(Unanswered {
                    error: ProxyError::RequestBody {
                        service: dest.service,
                        reason: e.to_string(),
                    },
                    tried: Vec::new(),
                });
            }
        };
        let rules = parts
            .extensions
            .get::<RetryRules>()
            .cloned()
            .unwrap_or_default();
        let service = &dest.service;
        budgets.deposit(service);
        let mut tried: Vec<EndpointRef> = Vec::new();
        // Tries before this index are no longer skipped (see `reuses_endpoints`).
        let mut skip_from = 0;
        let mut last: Option<LastFailure> = None;
        loop {
            if let Some(failure) = &last {
                if !rules.should_retry(&parts.method, failure.kind(), tried.len(), body.available())
                {
                    break;
                }
                if !budgets.try_withdraw(service) {
                    tracing::info!(%service, "retry budget exhausted; not retrying");
                    break;
                }
                metrics
                    .retries
                    .get_or_create(&ServiceLabels {
                        service: service.to_string(),
                    })
                    .inc();
                if let Some(backoff) = rules.backoff {
                    tokio::time::sleep(backoff).await;
                }
            }
            let attempt = |skip: &[EndpointRef]| {
                let mut attempt = Request::new(body.clone());
                *attempt.method_mut() = parts.method.clone();
                *attempt.uri_mut() = parts.uri.clone();
                *attempt.version_mut() = parts.version;
                *attempt.headers_mut() = parts.headers.clone();
                *attempt.extensions_mut() = parts.extensions.clone();
                attempt.extensions_mut().insert(Tried(skip.to_vec()));
                attempt
            };
            let mut result = next.clone().oneshot(attempt(&tried[skip_from..])).await;
            // A route that asks for more tries than there are endpoints may go back to one
            // already tried, once every endpoint has been.
            if matches!(result, Err(BalanceError::NoEndpoint))
                && rules.reuses_endpoints()
                && skip_from < tried.len()
            {
                skip_from = tried.len();
                result = next.clone().oneshot(attempt(&[])).await;
            }
            match result {
                Ok(rsp) => {
                    if let Some(served) = rsp.extensions().get::<ServedBy>() {
                        tried.push(served.0.clone());
                    }
                    // A trailers-only gRPC UNAVAILABLE is retried as a 503 would be.
                    let status = grpc_status::effective_status(rsp.status(), rsp.headers());
                    if !rules.is_retryable_status(status) {
                        return Ok(with_tried(rsp, tried));
                    }
                    last = Some(LastFailure::Response(rsp));
                }
                Err(BalanceError::NoEndpoint) => break,
                // Every endpoint left is at its limit: no retry (the balancer looked at them
                // all); the answer is an earlier try's failure, or else the limit.
                Err(BalanceError::LimitExceeded(limit)) => {
                    if last.is_none() {
                        let service = dest.service.clone();
                        let error = ProxyError::LimitExceeded { service, limit };
                        return Err(Unanswered { error, tried });
                    }
                    break;
                }
                Err(BalanceError::MissingFact(fact)) => {
                    return Err(Unanswered {
                        error: ProxyError::Misassembled(fact),
                        tried,
                    });
                }
                Err(BalanceError::Try {
                    endpoint,
                    error: TryError::BodyGone,
                }) => {
                    tried.push(endpoint);
                    return Err(Unanswered {
                        error: ProxyError::RequestBody {
                            service: dest.service.clone(),
                            reason: TryError::BodyGone.to_string(),
                        },
                        tried,
                    });
                }
                Err(BalanceError::Try { endpoint, error }) => {
                    tried.push(endpoint.clone());
                    last = Some(LastFailure::Try(endpoint, error));
                }
            }
        }
        match last {
            Some(LastFailure::Response(rsp)) => Ok(with_tried(rsp, tried)),
            Some(LastFailure::Try(endpoint, error)) => Err(Unanswered {
                error: failed_try(&dest, endpoint, error, tried.len()),
                tried,
            }),
            None => Err(Unanswered {
                error: ProxyError::NoEndpoint {
                    service: dest.service.clone(),
                    cluster: dest.cluster.clone(),
                },
                tried,
            }),
        }
    }
}

fn with_tried(mut rsp: Response<BoxBody>, tried: Vec<EndpointRef>) -> Response<BoxBody> {
    rsp.extensions_mut().insert(Tried(tried));
    rsp
}

/// The answer for a request whose last try, on `endpoint`, failed with `error`.
fn failed_try(
    dest: &Destination,
    endpoint: EndpointRef,
    error: TryError,
    tries: usize,
) -> ProxyError {
    let service = dest.service.clone();
    let endpoint = Box::new(endpoint);
    match error {
        TryError::Connect(source) => ProxyError::Connect {
            service,
            endpoint,
            tries,
            source: Box::new(source),
        },
        TryError::Protocol(source) => ProxyError::Upstream {
            service,
            endpoint,
            source,
        },
        TryError::Timeout(after) => ProxyError::Timeout {
            service,
            endpoint,
            after,
            tries,
        },
        TryError::BodyGone => ProxyError::RequestBody {
            service,
            reason: TryError::BodyGone.to_string(),
        },
        TryError::LimitExceeded(limit) => ProxyError::LimitExceeded { service, limit },
        TryError::MissingFact(fact) => ProxyError::Misassembled(fact),
    }
}

#[cfg(test)]
mod tests;
