//! The upgrade layer (inbound): an extended CONNECT from another sidecar (RFC 8441: CONNECT
//! with `:protocol`, how `outbound::upgrade` carries an HTTP/1.1 `Upgrade` across the mesh) is
//! replayed to the app as the HTTP/1.1 upgrade request it was: GET of the same path, `Host`,
//! `Connection: upgrade`, `Upgrade: <protocol>`, its other headers unchanged, on a connection
//! of its own. The app's 101 is answered 200 with the 101's headers (`Sec-WebSocket-Accept`),
//! and the mesh stream and the app's connection are joined byte for byte until both close.
//!
//! Any other answer of the app (a 400, a 404, a 426) goes back as it came, and the caller's
//! sidecar passes it to its app. A 2xx that is not a 101 (an app that ignored the `Upgrade`)
//! cannot: on HTTP/2 a 2xx to a CONNECT opens the tunnel, so it is answered 502
//! `upgrade-refused` naming what the app did.
//!
//! A plain CONNECT (no `:protocol`, an opaque stream) goes on to the opaque layer below.

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, UPGRADE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::ext::Protocol;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use mesh_core::api::HEADER_MESH_ERROR;
use mesh_core::http::{BoxBody, BoxError, empty, text};
use tower::ServiceExt;

use super::app::AppClient;
use super::errors::{InboundError, InboundNext};
use crate::headers::strip_hop_by_hop;
use crate::stack::{Concern, ConcernLayer};
use crate::transparent::splice::splice;

/// The `x-mesh-error` label of an upgrade the app answered with a 2xx other than 101.
pub const LABEL_UPGRADE_REFUSED: &str = "upgrade-refused";

/// The upgrade layer, replaying upgrades to the app `app` reaches.
pub fn layer(app: AppClient) -> ConcernLayer<Upgrades> {
    ConcernLayer(Upgrades { app })
}

/// Replays extended CONNECTs to the app as HTTP/1.1 upgrades.
#[derive(Debug, Clone)]
pub struct Upgrades {
    app: AppClient,
}

impl<S, B> Concern<Request<B>, S> for Upgrades
where
    S: InboundNext<B>,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = InboundError;

    async fn handle(self, mut req: Request<B>, next: S) -> Result<Response<BoxBody>, InboundError> {
        let protocol = match req.extensions().get::<Protocol>() {
            Some(p) if req.method() == Method::CONNECT => p.as_str().to_string(),
            _ => return next.oneshot(req).await,
        };
        let peer = hyper::upgrade::on(&mut req);
        let upgrade = to_http1_upgrade(req.map(|_| ()), &protocol)?;
        let mut rsp = self.app.upgrade(upgrade.map(|()| empty())).await?;
        let status = rsp.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let app = hyper::upgrade::on(&mut rsp);
            tokio::spawn(join(peer, app, protocol));
            return Ok(tunnel_open(rsp));
        }
        if status.is_success() {
            return Ok(refused(&protocol, status));
        }
        let (mut parts, body) = rsp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed(),
        ))
    }
}

/// The HTTP/1.1 upgrade request an extended CONNECT stands for: GET of its path, `Host` from
/// its authority, `Connection: upgrade` and `Upgrade: <protocol>`, its other headers kept.
pub fn to_http1_upgrade(req: Request<()>, protocol: &str) -> Result<Request<()>, InboundError> {
    let (mut parts, ()) = req.into_parts();
    let host = parts.uri.authority().map(|a| a.as_str().to_string());
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = path.parse::<Uri>().map_err(|_| InboundError::BadUri)?;
    parts.method = Method::GET;
    parts.version = Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(host) = host
        && let Ok(value) = HeaderValue::from_str(&host)
    {
        parts.headers.insert(HOST, value);
    }
    parts
        .headers
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    let upgrade = HeaderValue::from_str(protocol).map_err(|_| InboundError::BadUri)?;
    parts.headers.insert(UPGRADE, upgrade);
    Ok(Request::from_parts(parts, ()))
}

/// The 200 that opens the mesh stream, carrying the app's 101 headers (hop-by-hop ones left
/// out: the caller's sidecar puts its own `Connection` and `Upgrade` back).
fn tunnel_open<B>(rsp: Response<B>) -> Response<BoxBody> {
    let (mut parts, _) = rsp.into_parts();
    parts.status = StatusCode::OK;
    strip_hop_by_hop(&mut parts.headers);
    // hyper refuses a length on a 2xx to CONNECT: the stream has none.
    parts.headers.remove(CONTENT_LENGTH);
    parts.extensions = http::Extensions::new();
    Response::from_parts(parts, empty())
}

/// The answer when the app took an upgrade request for a plain one.
fn refused(protocol: &str, status: StatusCode) -> Response<BoxBody> {
    let mut rsp = text(
        StatusCode::BAD_GATEWAY,
        format!(
            "the app answered {status} to an upgrade to {protocol} without switching protocols \
             (it does not serve {protocol} at this path)"
        ),
    );
    rsp.headers_mut().insert(
        HEADER_MESH_ERROR,
        HeaderValue::from_static(LABEL_UPGRADE_REFUSED),
    );
    rsp
}

/// Joins the mesh stream to the app's upgraded connection, until both sides close.
async fn join(peer: OnUpgrade, app: OnUpgrade, protocol: String) {
    match tokio::try_join!(peer, app) {
        Ok((peer, app)) => splice(TokioIo::new(peer), TokioIo::new(app), "upgrade inbound").await,
        Err(e) => tracing::debug!(protocol, error = %e, "the upgraded connection did not open"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extended_connect_is_replayed_as_the_http1_upgrade_it_was() {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .version(Version::HTTP_2)
            .uri("http://echo.demo.svc.eu-central.clusterset.local/ws?x=1")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .header("keep-alive", "timeout=5")
            .body(())
            .unwrap();
        req.extensions_mut().insert(Protocol::from("websocket"));
        let req = to_http1_upgrade(req, "websocket").unwrap();
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.uri(), "/ws?x=1");
        let h = req.headers();
        assert_eq!(h["host"], "echo.demo.svc.eu-central.clusterset.local");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert!(h.get("keep-alive").is_none());
        assert!(req.extensions().get::<Protocol>().is_none());
    }

    #[test]
    fn the_apps_101_opens_the_stream_with_its_headers() {
        let rsp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(())
            .unwrap();
        let rsp = tunnel_open(rsp);
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(
            rsp.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(rsp.headers().get("connection").is_none());
        assert!(rsp.headers().get("upgrade").is_none());
        let refusal = refused("websocket", StatusCode::OK);
        assert_eq!(refusal.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(refusal.headers()[HEADER_MESH_ERROR], LABEL_UPGRADE_REFUSED);
    }

    #[tokio::test]
    async fn other_requests_go_on_down_the_stack() {
        let app = AppClient::new(
            ([127, 0, 0, 1], 9).into(),
            std::time::Duration::from_secs(1),
        );
        let inner = tower::service_fn(|req: Request<()>| async move {
            Ok::<_, InboundError>(text(StatusCode::OK, req.method().to_string()))
        });
        let svc = tower::Layer::layer(&layer(app), inner);
        // A plain CONNECT (an opaque stream) is the opaque layer's.
        let connect = Request::builder()
            .method(Method::CONNECT)
            .uri("echo.demo:7")
            .body(())
            .unwrap();
        let rsp = svc.clone().oneshot(connect).await.unwrap();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "CONNECT\n");
        let get = Request::builder().uri("/").body(()).unwrap();
        let rsp = svc.oneshot(get).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
    }
}
