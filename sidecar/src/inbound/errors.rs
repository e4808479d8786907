//! The inbound errors layer: the one place inbound failures map to a status and an
//! `x-mesh-error` label, with a plain-text body naming the service, the cluster and the cause.
//! A gRPC call refused by authorization is answered the gRPC way instead: HTTP 200,
//! trailers-only, `grpc-status: 7` (PERMISSION_DENIED) and the same words in `grpc-message`,
//! so a gRPC client sees the policy rather than an unexplained 403.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};
use mesh_core::api::HEADER_MESH_ERROR;
use mesh_core::http::{BoxBody, empty, text};
use mesh_core::names::ServiceKey;
use mesh_core::policy::rate_limit::{Decision, insert_fields};
use tower::{Service, ServiceExt};

use super::app::AppError;
use crate::outbound::grpc_status::{HEADER_GRPC_STATUS, is_grpc};
use crate::stack::{Concern, ConcernLayer};

/// Why an inbound request got no answer from the app.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The app could not be reached or broke the exchange.
    #[error(transparent)]
    App(#[from] AppError),
    /// The app sent no response head in time.
    #[error("the app did not answer within {0:?}")]
    Timeout(Duration),
    /// The request's path cannot be put in origin form.
    #[error("the request path is not a valid origin-form URI")]
    BadUri,
    /// The service's inbound `RateLimitPolicy` refused the request (429, with `Retry-After`
    /// and the `RateLimit` fields); the decision is boxed to keep the error small.
    #[error("over the service's inbound rate limit; retry later")]
    RateLimited(Box<Decision>),
    /// The service's `AuthorizationPolicy`s refuse the caller (403); says which policy.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The service's inbound policy cannot be applied here.
    #[error("the service's inbound policy cannot be applied: {0}")]
    PolicyInvalid(String),
}

impl InboundError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::App(AppError::Unavailable { .. } | AppError::ConnectTimeout { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::App(AppError::Protocol { .. }) => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::BadUri => StatusCode::BAD_REQUEST,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unauthorized(_) => StatusCode::FORBIDDEN,
            Self::PolicyInvalid(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `x-mesh-error` label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::App(AppError::Unavailable { .. } | AppError::ConnectTimeout { .. }) => {
                "app-unavailable"
            }
            Self::App(AppError::Protocol { .. }) => "app-protocol-error",
            Self::Timeout(_) => "app-timeout",
            Self::BadUri => "bad-request",
            Self::RateLimited(_) => "rate-limited",
            Self::Unauthorized(_) => "unauthorized",
            Self::PolicyInvalid(_) => "invalid-policy",
        }
    }
}

/// The errors layer, answering for `service` in `cluster`.
pub fn layer(service: ServiceKey, cluster: String) -> ConcernLayer<Errors> {
    ConcernLayer(Errors {
        service: Arc::new(service),
        cluster: Arc::from(cluster),
    })
}

/// Answers every [`InboundError`] of the layers below, and logs it.
#[derive(Debug, Clone)]
pub struct Errors {
    service: Arc<ServiceKey>,
    cluster: Arc<str>,
}

/// The rest of the inbound stack below a layer: answers with a response or an
/// [`InboundError`] (which the errors layer maps), and can run on another task. Every such
/// service is one (a blanket implementation); this names the bounds once for every layer.
pub trait InboundNext<B>:
    Service<Request<B>, Response = Response<BoxBody>, Error = InboundError, Future: Send + 'static>
    + Send
    + 'static
{
}

impl<S, B> InboundNext<B> for S where
    S: Service<
            Request<B>,
            Response = Response<BoxBody>,
            Error = InboundError,
            Future: Send + 'static,
        > + Send
        + 'static
{
}

impl<S, B> Concern<Request<B>, S> for Errors
where
    S: InboundNext<B>,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = Infallible;

    async fn handle(self, req: Request<B>, next: S) -> Result<Response<BoxBody>, Infallible> {
        let grpc = is_grpc(req.headers());
        let e = match next.oneshot(req).await {
            Ok(rsp) => return Ok(rsp),
            Err(e) => e,
        };
        let Self { service, cluster } = self;
        if let InboundError::RateLimited(_) | InboundError::Unauthorized(_) = e {
            // Expected, possibly for much of the traffic: not worth a line each (the
            // authorization layer logs its denials itself).
            tracing::debug!(%service, error = %e, "answered by the sidecar");
        } else {
            tracing::info!(%service, error = %e, "app did not answer");
        }
        let message = format!("service {service} in cluster {cluster}: {e}");
        let mut rsp = match e {
            InboundError::Unauthorized(_) if grpc => grpc_refusal(PERMISSION_DENIED, &message),
            _ => text(e.status(), message),
        };
        rsp.headers_mut()
            .insert(HEADER_MESH_ERROR, HeaderValue::from_static(e.label()));
        if let InboundError::RateLimited(decision) = &e {
            insert_fields(decision, rsp.headers_mut());
        }
        Ok(rsp)
    }
}

/// gRPC's PERMISSION_DENIED.
const PERMISSION_DENIED: u32 = 7;

/// A trailers-only gRPC answer: HTTP 200 with the status `code` and `message` in its head.
fn grpc_refusal(code: u32, message: &str) -> Response<BoxBody> {
    let mut rsp = Response::new(empty());
    let headers = rsp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(HEADER_GRPC_STATUS, HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&grpc_message(message)) {
        headers.insert("grpc-message", v);
    }
    rsp
}

/// `message` as `grpc-message` carries it: percent-encoded outside printable ASCII and `%`
/// (gRPC's PROTOCOL-HTTP2.md).
fn grpc_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn app_failures_are_answered_with_status_label_and_where() {
        let inner = tower::service_fn(|req: Request<()>| async move {
            match req.uri().path() {
                "/slow" => Err(InboundError::Timeout(Duration::from_secs(15))),
                "/down" => Err(InboundError::App(AppError::Unavailable {
                    addr: ([127, 0, 0, 1], 9).into(),
                    source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                })),
                _ => Ok(text(StatusCode::OK, "ok")),
            }
        });
        let svc = tower::Layer::layer(
            &layer("echo.demo".parse().unwrap(), "us-west".into()),
            inner,
        );
        let req = |path: &str| Request::builder().uri(path).body(()).unwrap();
        let slow = svc.clone().oneshot(req("/slow")).await.unwrap();
        assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(slow.headers()[HEADER_MESH_ERROR], "app-timeout");
        let down = svc.clone().oneshot(req("/down")).await.unwrap();
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(down.headers()[HEADER_MESH_ERROR], "app-unavailable");
        let body = http_body_util::BodyExt::collect(down.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.starts_with(
                "service echo.demo in cluster us-west: the app at 127.0.0.1:9 is unavailable"
            ),
            "{body}"
        );
        let ok = svc.oneshot(req("/")).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_grpc_call_refused_by_authorization_gets_permission_denied() {
        let inner = tower::service_fn(|_: Request<()>| async move {
            Err::<Response<BoxBody>, _>(InboundError::Unauthorized(
                "denied by DENY policy demo/no-grpc".into(),
            ))
        });
        let svc = tower::Layer::layer(
            &layer("echo.demo".parse().unwrap(), "us-west".into()),
            inner,
        );
        let grpc = Request::builder()
            .uri("/demo.Echo/Say")
            .header("content-type", "application/grpc+proto")
            .body(())
            .unwrap();
        let rsp = svc.clone().oneshot(grpc).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()[HEADER_GRPC_STATUS], "7");
        assert_eq!(rsp.headers()[HEADER_MESH_ERROR], "unauthorized");
        assert_eq!(rsp.headers()["content-type"], "application/grpc");
        assert_eq!(
            rsp.headers()["grpc-message"],
            "service echo.demo in cluster us-west: unauthorized: denied by DENY policy demo/no-grpc"
        );
        // Not gRPC: the plain 403.
        let plain = Request::builder().uri("/").body(()).unwrap();
        let rsp = svc.oneshot(plain).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
        assert!(rsp.headers().get(HEADER_GRPC_STATUS).is_none());
        assert_eq!(grpc_message("a%b\u{e9}\n"), "a%25b%C3%A9%0A");
    }
}
