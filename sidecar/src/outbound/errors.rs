//! The errors layer: every answer the outbound proxy makes itself, and the one place its
//! errors map to an HTTP status and an `x-mesh-error` label. Bodies are plain text naming the
//! service, the cluster and the cause, so `curl` output alone tells a person what went wrong.

use std::convert::Infallible;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};
use mesh_core::api::HEADER_MESH_ERROR;
use mesh_core::http::{BoxBody, text};
use mesh_core::names::{NameError, ServiceKey};
use mesh_core::policy::backend_policy::LimitExceeded;
use mesh_core::policy::rate_limit::{Decision, insert_fields};

use tower::{Service, ServiceExt};

use super::balancer::EndpointRef;
use super::fault::HEADER_MESH_FAULT;
use super::pool::ConnectError;
use crate::facts::ServiceName;
use crate::request_metrics::UnknownServiceAnswer;
use crate::stack::{Concern, ConcernLayer};

/// Why the outbound proxy answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request names no authority (no absolute URI, no Host).
    #[error("the request names no host: send an absolute URI (curl -x) or a Host header")]
    MissingAuthority,
    /// The app asked for a CONNECT tunnel (e.g. an https:// URL through the proxy).
    #[error(
        "CONNECT is not supported by the mesh's outbound proxy: call http://<svc>.<ns>.svc.clusterset.local, \
         the sidecars encrypt the hop"
    )]
    ConnectMethod,
    /// The authority is not a mesh service name.
    #[error(transparent)]
    BadAuthority(#[from] NameError),
    /// The controller says no linked cluster exports the service.
    #[error("service {service} is not exported by any linked cluster (asked {asked})")]
    UnknownService {
        /// The service.
        service: ServiceKey,
        /// Who was asked (`controller at <addr>`).
        asked: String,
    },
    /// No snapshot listed the service within the on-demand wait.
    #[error("service {service} is not known yet: {asked} did not list it within {waited:?}")]
    DiscoveryTimeout {
        /// The service.
        service: ServiceKey,
        /// Who was asked.
        asked: String,
        /// How long the request waited.
        waited: Duration,
    },
    /// The service was not asked for: the sidecar already follows as many services as it may
    /// (an app making names up cannot grow what the sidecar holds and asks the controller).
    #[error(
        "service {service} was not asked for: this sidecar already follows {limit} services, its \
         limit (does the app make names up?)"
    )]
    InterestFull {
        /// The service.
        service: ServiceKey,
        /// The most services a sidecar follows.
        limit: usize,
    },
    /// The authority named a cluster that is not among the service's localities.
    #[error(
        "cluster {cluster} is unknown or unreachable for service {service} (localities now: {known})"
    )]
    UnknownCluster {
        /// The service.
        service: ServiceKey,
        /// The cluster named.
        cluster: String,
        /// The localities the snapshot lists, comma-separated.
        known: String,
    },
    /// No locality has a usable endpoint (all ejected, breakers open, or none listed).
    #[error("service {service} has no healthy endpoint{} (all ejected, breakers open, or none registered)", in_cluster(.cluster))]
    NoEndpoint {
        /// The service.
        service: ServiceKey,
        /// The cluster named by the authority, if any.
        cluster: Option<String>,
    },
    /// The last try could not connect.
    #[error("service {service}: endpoint {} in {} unreachable after {tries} tries: {source}", .endpoint.addr, .endpoint.cluster)]
    Connect {
        /// The service.
        service: ServiceKey,
        /// The endpoint of the last try.
        endpoint: Box<EndpointRef>,
        /// Tries made.
        tries: usize,
        /// The last connect failure.
        #[source]
        source: Box<ConnectError>,
    },
    /// The last try got no response headers within the per-try timeout.
    #[error("service {service}: endpoint {} in {} did not answer within {after:?} ({tries} tries)", .endpoint.addr, .endpoint.cluster)]
    Timeout {
        /// The service.
        service: ServiceKey,
        /// The endpoint of the last try.
        endpoint: Box<EndpointRef>,
        /// The per-try timeout.
        after: Duration,
        /// Tries made.
        tries: usize,
    },
    /// The upstream connection or stream broke after the request was sent.
    #[error("service {service}: endpoint {} in {} broke the exchange: {source}", .endpoint.addr, .endpoint.cluster)]
    Upstream {
        /// The service.
        service: ServiceKey,
        /// The endpoint.
        endpoint: Box<EndpointRef>,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The app's request body could not be read, or a streamed one was already sent.
    #[error("service {service}: reading the request body failed: {reason}")]
    RequestBody {
        /// The service.
        service: ServiceKey,
        /// What went wrong.
        reason: String,
    },
    /// The service has routes and none matches the request (Gateway API: 404).
    #[error("service {service}: no route matches the request")]
    NoRoute {
        /// The service.
        service: ServiceKey,
    },
    /// The matched rule's backend is an invalid reference (Gateway API: 500 for its share).
    #[error("service {service}: the route's backend is invalid: {reason}")]
    InvalidBackend {
        /// The service.
        service: ServiceKey,
        /// Why.
        reason: String,
    },
    /// The service's policy cannot be applied here.
    #[error("service {service}: its traffic policy cannot be applied: {reason}")]
    PolicyInvalid {
        /// The service.
        service: ServiceKey,
        /// Why.
        reason: String,
    },
    /// Every endpoint left is at a concurrency limit of the service's backend policy: answered
    /// at once rather than queued (the label names the limit).
    #[error("service {service}: {limit}; answered at once rather than queued")]
    LimitExceeded {
        /// The service.
        service: ServiceKey,
        /// The limit every endpoint left was at.
        limit: LimitExceeded,
    },
    /// The route's request timeout ran out before a response head (every try included).
    #[error("service {service}: no answer within the route's request timeout of {after:?}")]
    RequestTimeout {
        /// The service.
        service: ServiceKey,
        /// The timeout.
        after: Duration,
    },
    /// The matched rule's `RateLimitPolicy` refused the request (429, with `Retry-After` and
    /// the `RateLimit` fields).
    #[error("service {service}: over the rate limit of {rule}; retry later")]
    RateLimited {
        /// The service.
        service: ServiceKey,
        /// The rule whose limit it is (`<namespace>/<route>/<rule>`).
        rule: String,
        /// The limiter's decision, for the response fields (boxed: it is most of the size of
        /// the error, which every layer returns).
        decision: Box<Decision>,
    },
    /// The matched rule's `FaultPolicy` aborted the request: answered with the policy's status
    /// without sending it.
    #[error("service {service}: fault injected by the FaultPolicy of {rule}")]
    FaultAbort {
        /// The service.
        service: ServiceKey,
        /// The rule whose fault it is.
        rule: String,
        /// The status the policy answers with.
        status: StatusCode,
        /// Whether the request was also delayed first.
        delayed: bool,
    },
    /// A layer did not find a fact that a layer above should have set: a bug in how the stack
    /// is assembled, never the request's fault.
    #[error("the outbound stack is misassembled: no {0} fact on the request")]
    Misassembled(&'static str),
}

fn in_cluster(cluster: &Option<String>) -> String {
    cluster
        .as_ref()
        .map(|c| format!(" in cluster {c}"))
        .unwrap_or_default()
}

impl ProxyError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingAuthority | Self::BadAuthority(_) | Self::RequestBody { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::ConnectMethod => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnknownService { .. }
            | Self::DiscoveryTimeout { .. }
            | Self::InterestFull { .. }
            | Self::UnknownCluster { .. }
            | Self::NoEndpoint { .. }
            | Self::LimitExceeded { .. }
            | Self::Connect { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout { .. } | Self::RequestTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::InvalidBackend { .. } | Self::PolicyInvalid { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::FaultAbort { status, .. } => *status,
            Self::Misassembled(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `x-mesh-error` label (also a metrics-friendly cause).
    pub fn label(&self) -> &'static str {
        match self {
            Self::MissingAuthority => "missing-authority",
            Self::ConnectMethod => "connect-not-supported",
            Self::BadAuthority(_) => "bad-authority",
            Self::UnknownService { .. }
            | Self::DiscoveryTimeout { .. }
            | Self::InterestFull { .. } => "unknown-service",
            Self::UnknownCluster { .. } => "unknown-cluster",
            Self::NoEndpoint { .. } => "no-healthy-endpoint",
            Self::LimitExceeded { limit, .. } => limit.label(),
            Self::Connect { .. } => "connect-failed",
            Self::Timeout { .. } => "timeout",
            Self::RequestTimeout { .. } => "request-timeout",
            Self::NoRoute { .. } => "no-route",
            Self::InvalidBackend { .. } => "invalid-backend",
            Self::PolicyInvalid { .. } => "invalid-policy",
            Self::Upstream { .. } => "upstream-protocol-error",
            Self::RequestBody { .. } => "bad-request-body",
            Self::RateLimited { .. } => "rate-limited",
            Self::FaultAbort { .. } => "fault-injected",
            Self::Misassembled(_) => "internal-error",
        }
    }

    /// The service the request was for, once the authority named one.
    pub fn service(&self) -> Option<&ServiceKey> {
        match self {
            Self::MissingAuthority
            | Self::ConnectMethod
            | Self::BadAuthority(_)
            | Self::Misassembled(_) => None,
            Self::UnknownService { service, .. }
            | Self::DiscoveryTimeout { service, .. }
            | Self::InterestFull { service, .. }
            | Self::UnknownCluster { service, .. }
            | Self::NoEndpoint { service, .. }
            | Self::LimitExceeded { service, .. }
            | Self::Connect { service, .. }
            | Self::Timeout { service, .. }
            | Self::Upstream { service, .. }
            | Self::RequestBody { service, .. }
            | Self::NoRoute { service }
            | Self::InvalidBackend { service, .. }
            | Self::PolicyInvalid { service, .. }
            | Self::RequestTimeout { service, .. }
            | Self::RateLimited { service, .. }
            | Self::FaultAbort { service, .. } => Some(service),
        }
    }

    /// Whether the request named a service the mesh does not know (no snapshot lists it):
    /// its name came from the caller's authority alone, so anything keyed by it (a metrics
    /// label) would grow with every random `Host` a client sends.
    pub fn is_unknown_service(&self) -> bool {
        matches!(
            self,
            Self::UnknownService { .. } | Self::DiscoveryTimeout { .. } | Self::InterestFull { .. }
        )
    }

    /// The plain-text answer, with `x-mesh-error`.
    pub fn response(&self) -> Response<BoxBody> {
        let mut rsp = text(self.status(), self.to_string());
        rsp.headers_mut()
            .insert(HEADER_MESH_ERROR, HeaderValue::from_static(self.label()));
        match self {
            Self::RateLimited { decision, .. } => insert_fields(decision, rsp.headers_mut()),
            Self::FaultAbort { delayed, .. } => {
                if *delayed {
                    rsp.headers_mut()
                        .append(HEADER_MESH_FAULT, HeaderValue::from_static("delay"));
                }
                rsp.headers_mut()
                    .append(HEADER_MESH_FAULT, HeaderValue::from_static("abort"));
            }
            _ => {}
        }
        rsp
    }

    /// Whether the answer is one a policy asks for (a rate limit's 429, an injected fault):
    /// expected, possibly for much of the traffic, so logged at debug level only.
    pub fn is_policy_answer(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::FaultAbort { .. })
    }
}

/// The errors layer.
pub fn layer() -> ConcernLayer<Errors> {
    ConcernLayer(Errors)
}

/// Answers every [`ProxyError`] of the layers below with its status, `x-mesh-error` label and
/// message, logs it with the request, and marks the answer with the service when one was named
/// and the mesh knows it ([`UnknownServiceAnswer`] when it does not).
#[derive(Debug, Clone, Copy)]
pub struct Errors;

impl<S, B> Concern<Request<B>, S> for Errors
where
    S: Service<Request<B>, Response = Response<BoxBody>, Error = ProxyError> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;

    async fn handle(self, req: Request<B>, next: S) -> Result<Response<BoxBody>, Infallible> {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let e = match next.oneshot(req).await {
            Ok(rsp) => return Ok(rsp),
            Err(e) => e,
        };
        let status = e.status().as_u16();
        if e.is_policy_answer() {
            tracing::debug!(%method, %uri, service = ?e.service(), status, error = %e, "answered by the sidecar");
        } else {
            tracing::info!(%method, %uri, service = ?e.service(), status, error = %e, "answered by the sidecar");
        }
        let mut rsp = e.response();
        if e.is_unknown_service() {
            rsp.extensions_mut().insert(UnknownServiceAnswer);
        } else if let Some(service) = e.service() {
            rsp.extensions_mut().insert(ServiceName(service.clone()));
        }
        Ok(rsp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_become_answers_with_label_and_service() {
        let inner = tower::service_fn(|req: Request<()>| async move {
            match req.uri().path() {
                "/ok" => Ok(text(StatusCode::OK, "fine")),
                _ => Err(ProxyError::NoEndpoint {
                    service: echo(),
                    cluster: None,
                }),
            }
        });
        let svc = tower::Layer::layer(&layer(), inner);
        let req = |path: &str| Request::builder().uri(path).body(()).unwrap();
        let ok = svc.clone().oneshot(req("/ok")).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert!(ok.headers().get(HEADER_MESH_ERROR).is_none());
        let failed = svc.oneshot(req("/none")).await.unwrap();
        assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(failed.headers()[HEADER_MESH_ERROR], "no-healthy-endpoint");
        assert_eq!(failed.extensions().get::<ServiceName>().unwrap().0, echo());
        let body = http_body_util::BodyExt::collect(failed.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("echo.demo has no healthy endpoint"));
    }

    fn echo() -> ServiceKey {
        "echo.demo".parse().unwrap()
    }

    #[test]
    fn statuses_and_labels() {
        let unknown = ProxyError::UnknownService {
            service: echo(),
            asked: "controller at 127.0.0.1:7000".into(),
        };
        assert_eq!(unknown.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            unknown.to_string(),
            "service echo.demo is not exported by any linked cluster (asked controller at 127.0.0.1:7000)"
        );
        let rsp = unknown.response();
        assert_eq!(rsp.headers()[HEADER_MESH_ERROR], "unknown-service");
        let timeout = ProxyError::Timeout {
            service: echo(),
            endpoint: Box::new(EndpointRef {
                cluster: "us-east".into(),
                addr: ([127, 0, 0, 1], 9).into(),
            }),
            after: Duration::from_secs(1),
            tries: 3,
        };
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(timeout.to_string().contains("us-east"));
        let none = ProxyError::NoEndpoint {
            service: echo(),
            cluster: Some("eu-central".into()),
        };
        assert!(none.to_string().contains("in cluster eu-central"), "{none}");
    }
}
