//! The origin-form layer: puts a request from another sidecar (HTTP/2, `:authority`) in the
//! form a plain HTTP/1.1 app expects (origin-form path, `Host`), and keeps hop-by-hop headers
//! from crossing in either direction.

use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mesh_core::http::{BoxBody, BoxError};
use tower::{Layer, Service};

use super::errors::InboundError;
use crate::headers::strip_hop_by_hop;
use crate::stack::BoxFuture;

/// Adds [`OriginForm`] to a stack.
#[derive(Debug, Clone, Copy, Default)]
pub struct OriginFormLayer;

impl<S> Layer<S> for OriginFormLayer {
    type Service = OriginForm<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OriginForm { inner }
    }
}

/// Rewrites each request to origin form with `Host` for the app.
#[derive(Debug, Clone)]
pub struct OriginForm<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for OriginForm<S>
where
    S: Service<Request<BoxBody>, Response = Response<Incoming>, Error = InboundError>,
    S::Future: Send + 'static,
    B: Body<Data = bytes::Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = InboundError;
    type Future = BoxFuture<Result<Response<BoxBody>, InboundError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), InboundError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let parts = match to_origin_form(parts) {
            Ok(parts) => parts,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let body: BoxBody = body.map_err(Into::into).boxed();
        // Boxed here, where `S::Future: Send` is a plain bound: inside the async block below
        // rustc would have to prove it for every lifetime of the body's boxed error, and can't.
        let answer: BoxFuture<Result<Response<Incoming>, InboundError>> =
            Box::pin(self.inner.call(Request::from_parts(parts, body)));
        Box::pin(async move {
            let (mut parts, body) = answer.await?.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(
                parts,
                body.map_err(BoxError::from).boxed(),
            ))
        })
    }
}

/// Origin-form path, HTTP/1.1, `Host` from the authority, no hop-by-hop headers.
fn to_origin_form(mut parts: http::request::Parts) -> Result<http::request::Parts, InboundError> {
    let host = parts.uri.authority().map(|a| a.as_str().to_string());
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = path.parse::<Uri>().map_err(|_| InboundError::BadUri)?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let Some(host) = host
        && let Ok(value) = HeaderValue::from_str(&host)
    {
        parts.headers.insert(http::header::HOST, value);
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_becomes_host_and_the_path_origin_form() {
        let parts = Request::builder()
            .version(Version::HTTP_2)
            .uri("http://echo.demo.svc.clusterset.local/a/b?c=d")
            .header("connection", "close")
            .header("keep-alive", "timeout=5")
            .header("x-kept", "1")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let parts = to_origin_form(parts).unwrap();
        assert_eq!(parts.uri, "/a/b?c=d");
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.headers["host"], "echo.demo.svc.clusterset.local");
        assert_eq!(parts.headers["x-kept"], "1");
        assert!(parts.headers.get("connection").is_none());
        assert!(parts.headers.get("keep-alive").is_none());
    }

    #[test]
    fn a_request_without_authority_keeps_its_host() {
        let parts = Request::builder()
            .uri("/x")
            .header("host", "echo.demo")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let parts = to_origin_form(parts).unwrap();
        assert_eq!(parts.uri, "/x");
        assert_eq!(parts.headers["host"], "echo.demo");
    }
}
