//! The opaque-stream layer: a CONNECT from another sidecar carries a connection its capture
//! took for something other than HTTP (TLS, a database protocol); it is answered 200 and joined
//! byte for byte to a new connection to the app. Every other request goes on down the stack.

use http::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use mesh_core::http::{BoxBody, empty};
use tower::ServiceExt;

use super::app::AppClient;
use super::errors::{InboundError, InboundNext};
use crate::stack::{Concern, ConcernLayer};
use crate::transparent::splice::splice;

/// The opaque-stream layer, joining streams to the app `app` reaches.
pub fn layer(app: AppClient) -> ConcernLayer<OpaqueStreams> {
    ConcernLayer(OpaqueStreams { app })
}

/// Joins CONNECT streams to the app.
#[derive(Debug, Clone)]
pub struct OpaqueStreams {
    app: AppClient,
}

impl<S, B> Concern<Request<B>, S> for OpaqueStreams
where
    S: InboundNext<B>,
    B: Send + 'static,
{
    type Response = Response<BoxBody>;
    type Error = InboundError;

    async fn handle(self, mut req: Request<B>, next: S) -> Result<Response<BoxBody>, InboundError> {
        if req.method() != Method::CONNECT {
            return next.oneshot(req).await;
        }
        // The app is dialled before the answer, so a down app is a 503 the caller can retry
        // elsewhere, not a stream that opens and closes.
        let app = self.app.open_stream().await?;
        let stream = hyper::upgrade::on(&mut req);
        let authority = req.uri().to_string();
        tokio::spawn(async move {
            match stream.await {
                Ok(upgraded) => splice(TokioIo::new(upgraded), app, "opaque inbound").await,
                Err(e) => tracing::debug!(authority, error = %e, "the opaque stream did not open"),
            }
        });
        Ok(Response::new(empty()))
    }
}
