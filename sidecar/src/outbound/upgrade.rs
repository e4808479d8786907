//! The upgrade layer (outbound): an HTTP/1.1 request that asks to switch protocols
//! (`Connection: upgrade` with `Upgrade: websocket`, or any other protocol but `h2c`) crosses
//! the mesh's HTTP/2 hop as an extended CONNECT (RFC 8441): method CONNECT with `:protocol`
//! naming the protocol, the request's path and headers as they were (`Sec-WebSocket-Key` and
//! the like included). The server sidecar replays it to its app as the HTTP/1.1 upgrade it was
//! (`inbound::upgrade`) and answers 200 with the app's 101 headers; this layer then answers the
//! app 101 with those headers and joins the two upgraded connections byte for byte.
//!
//! Why extended CONNECT rather than an opaque stream with the request replayed inside: the
//! request stays a request on the way, so resolve, route (path and header matches, filters),
//! rate limits, faults, breakers, balancing and connect-failure retries apply to it as to any
//! other, and the server sidecar's inbound stack (rate limit, metrics, `x-mesh-cluster`) sees
//! it. The layers below see the method CONNECT: it is never cached, and retried only when its
//! connection failed (CONNECT is not idempotent). A route's `method` match sees CONNECT too.
//!
//! Refusals and failures (no route, 503, a 4xx from the app) come back as ordinary answers.
//! Timeouts bound only the answer's head, so no request timeout ever cuts an upgraded
//! connection: once joined it lives until both sides close. An HTTP/2 client of the outbound
//! listener may send extended CONNECT itself; it passes this layer untouched.

use http::header::{CONNECTION, CONTENT_LENGTH, UPGRADE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::ext::Protocol;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use mesh_core::api::HEADER_MESH_ERROR;
use mesh_core::http::{BoxBody, empty, text};
use tower::{Service, ServiceExt};

use super::errors::ProxyError;
use crate::headers::{strip_hop_by_hop, upgrade_protocol};
use crate::stack::{Concern, ConcernLayer};
use crate::transparent::splice::splice;

/// The `x-mesh-error` label of an upgrade the far side accepted without a stream to join.
pub const LABEL_UPGRADE_FAILED: &str = "upgrade-failed";

/// The upgrade layer.
pub fn layer() -> ConcernLayer<Upgrades> {
    ConcernLayer(Upgrades)
}

/// Carries HTTP/1.1 upgrades across the mesh as extended CONNECTs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Upgrades;

impl<S, B> Concern<Request<B>, S> for Upgrades
where
    S: Service<Request<B>, Response = Response<BoxBody>, Error = ProxyError> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = ProxyError;

    async fn handle(self, mut req: Request<B>, next: S) -> Result<Response<BoxBody>, ProxyError> {
        let protocol = match req.version() {
            Version::HTTP_11 => upgrade_protocol(req.headers()),
            _ => None,
        };
        let Some(protocol) = protocol else {
            return next.oneshot(req).await;
        };
        let client = hyper::upgrade::on(&mut req);
        to_extended_connect(&mut req, &protocol);
        let mut rsp = next.oneshot(req).await?;
        if !rsp.status().is_success() {
            // Refused on the way or by the app: the answer as it came, the connection stays
            // HTTP/1.1.
            return Ok(rsp);
        }
        let Some(upstream) = rsp.extensions_mut().remove::<OnUpgrade>() else {
            return Ok(no_stream(&protocol));
        };
        tokio::spawn(join(client, upstream, protocol.clone()));
        Ok(switching_protocols(rsp, &protocol))
    }
}

/// Puts an HTTP/1.1 upgrade request in its extended CONNECT form: method CONNECT, `:protocol`
/// the protocol asked for, no `Connection`/`Upgrade` (HTTP/2 has no such headers), its path,
/// authority and other headers unchanged.
pub fn to_extended_connect<B>(req: &mut Request<B>, protocol: &str) {
    *req.method_mut() = Method::CONNECT;
    req.extensions_mut().insert(Protocol::from(protocol));
    strip_hop_by_hop(req.headers_mut());
}

/// The app's 101 answer made of the far side's 200 to the extended CONNECT: its headers
/// (`Sec-WebSocket-Accept` and the like, `x-mesh-cluster`), `Connection: upgrade` and the
/// protocol switched to; its extensions (facts for the layers above) kept.
pub fn switching_protocols(rsp: Response<BoxBody>, protocol: &str) -> Response<BoxBody> {
    let (mut parts, _) = rsp.into_parts();
    parts.status = StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(value) = HeaderValue::from_str(protocol) {
        parts.headers.insert(UPGRADE, value);
    }
    Response::from_parts(parts, empty())
}

/// The answer when the far side said yes but no stream came with it (an answer a layer made
/// up, not the server sidecar's).
fn no_stream(protocol: &str) -> Response<BoxBody> {
    let mut rsp = text(
        StatusCode::BAD_GATEWAY,
        format!("the upgrade to {protocol} was accepted but no stream came with the answer"),
    );
    rsp.headers_mut().insert(
        HEADER_MESH_ERROR,
        HeaderValue::from_static(LABEL_UPGRADE_FAILED),
    );
    rsp
}

/// Joins the app's upgraded connection to the mesh stream, until both sides close.
async fn join(client: OnUpgrade, upstream: OnUpgrade, protocol: String) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            splice(
                TokioIo::new(client),
                TokioIo::new(upstream),
                "upgrade outbound",
            )
            .await
        }
        Err(e) => tracing::debug!(protocol, error = %e, "the upgraded connection did not open"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_becomes_an_extended_connect_to_the_same_path() {
        let mut req = Request::builder()
            .uri("http://echo.demo.svc.clusterset.local/ws?room=1")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap();
        to_extended_connect(&mut req, "websocket");
        assert_eq!(req.method(), Method::CONNECT);
        assert_eq!(
            req.extensions().get::<Protocol>().map(Protocol::as_str),
            Some("websocket")
        );
        assert_eq!(req.uri().path(), "/ws");
        assert_eq!(req.uri().query(), Some("room=1"));
        assert!(req.headers().get("connection").is_none());
        assert!(req.headers().get("upgrade").is_none());
        assert_eq!(
            req.headers()["sec-websocket-key"],
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        assert_eq!(req.headers()["sec-websocket-version"], "13");
    }

    #[test]
    fn the_far_sides_200_becomes_the_apps_101_with_its_headers() {
        let mut rsp = Response::new(empty());
        rsp.headers_mut().insert(
            "sec-websocket-accept",
            HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        );
        rsp.headers_mut()
            .insert("x-mesh-cluster", HeaderValue::from_static("eu-central"));
        rsp.headers_mut()
            .insert("content-length", HeaderValue::from_static("0"));
        rsp.extensions_mut().insert(7u8);
        let rsp = switching_protocols(rsp, "websocket");
        assert_eq!(rsp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(rsp.headers()["connection"], "upgrade");
        assert_eq!(rsp.headers()["upgrade"], "websocket");
        assert_eq!(
            rsp.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(rsp.headers()["x-mesh-cluster"], "eu-central");
        assert!(rsp.headers().get("content-length").is_none());
        assert_eq!(rsp.extensions().get::<u8>(), Some(&7));
    }

    #[tokio::test]
    async fn requests_without_an_upgrade_and_refusals_pass_as_they_are() {
        let inner = tower::service_fn(|req: Request<()>| async move {
            let status = if req.method() == Method::CONNECT {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            Ok::<_, ProxyError>(text(status, req.method().to_string()))
        });
        let svc = tower::Layer::layer(&layer(), inner);
        let plain = Request::builder().uri("/").body(()).unwrap();
        let rsp = svc.clone().oneshot(plain).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        let ws = Request::builder()
            .uri("/ws")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        // The far side refused (no route: 404): the client gets the refusal, not a 101.
        let rsp = svc.clone().oneshot(ws).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
        // HTTP/2 has no `Upgrade`: such a request passes as it is.
        let h2 = Request::builder()
            .version(Version::HTTP_2)
            .uri("/ws")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        let rsp = svc.oneshot(h2).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_yes_without_a_stream_is_a_502() {
        let inner = tower::service_fn(|_: Request<()>| async {
            Ok::<_, ProxyError>(text(StatusCode::OK, "made up"))
        });
        let svc = tower::Layer::layer(&layer(), inner);
        let ws = Request::builder()
            .uri("/ws")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        let rsp = svc.oneshot(ws).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(rsp.headers()[HEADER_MESH_ERROR], LABEL_UPGRADE_FAILED);
    }
}
