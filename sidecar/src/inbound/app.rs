//! The client of the local app, in the protocol each request needs:
//!
//! - **HTTP/1.1**, most requests: a small pool of idle keep-alive connections. A connection
//!   goes back to the pool once its response body has been read to the end; one whose body was
//!   dropped half-way is closed by hyper and never reused.
//! - **HTTP/2 prior knowledge (h2c)** for gRPC (`content-type: application/grpc...`, see
//!   `outbound::grpc_status::is_grpc`): gRPC needs trailers (`grpc-status`), which HTTP/1.1
//!   cannot carry to a gRPC server, and every gRPC server speaks h2c. One multiplexed
//!   connection, dialled again when it closes. Chosen per request rather than per app, so one
//!   app may serve gRPC and plain HTTP/1.1 on one port (the demo app does) and an HTTP/1.1 app
//!   needs no setting; an app that serves plain HTTP only over HTTP/2 is not supported.
//! - **A connection of its own** for an upgrade (WebSocket, see `inbound::upgrade`): after
//!   the app's 101 it belongs to the upgraded protocol and is never pooled.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use std::task::{Context, Poll};

use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_core::http::BoxBody;
use tower::Service;

use super::errors::InboundError;
use crate::outbound::grpc_status::is_grpc;
use crate::stack::BoxFuture;

/// Idle connections kept per app: the app is on loopback, so this only bounds descriptors.
const MAX_IDLE: usize = 64;

/// Why the app could not answer.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Nothing accepts connections at the app's address (it is down or restarting).
    #[error("the app at {addr} is unavailable: {source}")]
    Unavailable {
        /// The app's address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Connecting took longer than the connect timeout.
    #[error("the app at {addr} did not accept a connection within {after:?}")]
    ConnectTimeout {
        /// The app's address.
        addr: SocketAddr,
        /// The bound.
        after: Duration,
    },
    /// The app broke the HTTP exchange.
    #[error("the app at {addr} broke the exchange: {source}")]
    Protocol {
        /// The app's address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
}

/// A pooled HTTP/1.1 client of one app; clones share the pool. As a service, the bottom of the
/// inbound stack.
#[derive(Debug, Clone)]
pub struct AppClient {
    addr: SocketAddr,
    connect_timeout: Duration,
    idle: std::sync::Arc<Mutex<Vec<SendRequest<BoxBody>>>>,
    /// The h2c connection for gRPC, once dialled.
    h2: std::sync::Arc<tokio::sync::Mutex<Option<http2::SendRequest<BoxBody>>>>,
}

impl AppClient {
    /// A client of the app at `addr`.
    pub fn new(addr: SocketAddr, connect_timeout: Duration) -> Self {
        Self {
            addr,
            connect_timeout,
            idle: Default::default(),
            h2: Default::default(),
        }
    }

    /// The app's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `req` (origin form, `Host`) in the protocol it needs: gRPC over h2c, anything
    /// else over HTTP/1.1 on an idle connection, or a new one if none is usable.
    pub async fn send(&self, req: Request<BoxBody>) -> Result<Response<Incoming>, AppError> {
        if is_grpc(req.headers()) {
            return self.send_h2(req).await;
        }
        self.send_h1(req).await
    }

    async fn send_h1(&self, mut req: Request<BoxBody>) -> Result<Response<Incoming>, AppError> {
        loop {
            let Some(mut sender) = self.pop_idle() else {
                break;
            };
            match sender.try_send_request(req).await {
                Ok(rsp) => {
                    self.recycle(sender);
                    return Ok(rsp);
                }
                Err(mut e) => match e.take_message() {
                    // The idle connection had been closed by the app: try the next one.
                    Some(unsent) => req = unsent,
                    None => {
                        return Err(AppError::Protocol {
                            addr: self.addr,
                            source: e.into_error(),
                        });
                    }
                },
            }
        }
        let mut sender = self.connect().await?;
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|source| AppError::Protocol {
                addr: self.addr,
                source,
            })?;
        self.recycle(sender);
        Ok(rsp)
    }

    fn pop_idle(&self) -> Option<SendRequest<BoxBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Puts the connection back once its current response is fully read.
    fn recycle(&self, mut sender: SendRequest<BoxBody>) {
        let idle = self.idle.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < MAX_IDLE {
                    idle.push(sender);
                }
            }
        });
    }

    /// A new TCP connection to the app, within the connect timeout (for HTTP, and for an opaque
    /// stream joined to it).
    pub async fn open_stream(&self) -> Result<tokio::net::TcpStream, AppError> {
        let addr = self.addr;
        let tcp = tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| AppError::ConnectTimeout {
                addr,
                after: self.connect_timeout,
            })?
            .map_err(|source| AppError::Unavailable { addr, source })?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// Sends `req` over the h2c connection, dialling it first when there is none or it closed.
    /// A request the closing connection did not take is sent once more on a new one.
    async fn send_h2(&self, req: Request<BoxBody>) -> Result<Response<Incoming>, AppError> {
        let addr = self.addr;
        let mut req = h2_form(req);
        for _ in 0..2 {
            let mut sender = self.h2_sender().await?;
            match sender.try_send_request(req).await {
                Ok(rsp) => return Ok(rsp),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => {
                        self.h2.lock().await.take();
                        req = unsent;
                    }
                    None => {
                        return Err(AppError::Protocol {
                            addr,
                            source: e.into_error(),
                        });
                    }
                },
            }
        }
        let mut sender = self.h2_sender().await?;
        sender
            .send_request(req)
            .await
            .map_err(|source| AppError::Protocol { addr, source })
    }

    /// The h2c connection, dialled when there is none or it closed.
    async fn h2_sender(&self) -> Result<http2::SendRequest<BoxBody>, AppError> {
        let addr = self.addr;
        let mut held = self.h2.lock().await;
        if let Some(sender) = held.as_ref()
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        let tcp = self.open_stream().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|source| AppError::Protocol { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(app = %addr, error = %e, "app h2c connection ended");
            }
        });
        *held = Some(sender.clone());
        Ok(sender)
    }

    /// Sends an upgrade request (`Connection: upgrade`) on a new connection of its own, driven
    /// with upgrades on: after a 101, `hyper::upgrade::on` of the answer is the app's side of
    /// the upgraded protocol.
    pub async fn upgrade(&self, req: Request<BoxBody>) -> Result<Response<Incoming>, AppError> {
        let addr = self.addr;
        let tcp = self.open_stream().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|source| AppError::Protocol { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(app = %addr, error = %e, "app upgrade connection ended");
            }
        });
        sender
            .send_request(req)
            .await
            .map_err(|source| AppError::Protocol { addr, source })
    }

    async fn connect(&self) -> Result<SendRequest<BoxBody>, AppError> {
        let addr = self.addr;
        let tcp = self.open_stream().await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|source| AppError::Protocol { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(app = %addr, error = %e, "app connection ended");
            }
        });
        Ok(sender)
    }
}

impl Service<Request<BoxBody>> for AppClient {
    type Response = Response<Incoming>;
    type Error = InboundError;
    type Future = BoxFuture<Result<Response<Incoming>, InboundError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), InboundError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<BoxBody>) -> Self::Future {
        let app = self.clone();
        Box::pin(async move { Ok(app.send(req).await?) })
    }
}

/// A request in origin form with `Host` (as the origin-form layer makes it) in the form an
/// HTTP/2 client sends: the authority from `Host` in the URI (`:authority`), no `Host`.
fn h2_form(req: Request<BoxBody>) -> Request<BoxBody> {
    let (mut parts, body) = req.into_parts();
    let host = parts
        .headers
        .remove(http::header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_string));
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut uri = Uri::builder().scheme("http").path_and_query(path);
    if let Some(host) = host.as_deref().filter(|h| !h.is_empty()) {
        uri = uri.authority(host);
    } else {
        // h2 needs an authority or none with a scheme: name the app itself.
        uri = uri.authority(parts.uri.authority().map_or("localhost", |a| a.as_str()));
    }
    if let Ok(uri) = uri.build() {
        parts.uri = uri;
    }
    parts.version = Version::HTTP_2;
    Request::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use mesh_core::http::empty;

    use super::*;

    #[test]
    fn grpc_goes_to_the_app_with_its_authority_and_no_host() {
        let req = Request::builder()
            .uri("/mesh.demo.Echo/Say")
            .header("host", "echo.demo.svc.clusterset.local")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(empty())
            .unwrap();
        let req = h2_form(req);
        assert_eq!(
            req.uri(),
            "http://echo.demo.svc.clusterset.local/mesh.demo.Echo/Say"
        );
        assert_eq!(req.version(), Version::HTTP_2);
        assert!(req.headers().get("host").is_none());
        assert_eq!(req.headers()["te"], "trailers");
    }

    #[tokio::test]
    async fn grpc_reaches_an_h2c_app_and_its_trailers_come_back() {
        use http_body_util::BodyExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // An app that answers over whichever protocol it was asked in, with trailers on h2.
        let app = tower::service_fn(|req: Request<Incoming>| async move {
            let version = format!("{:?}", req.version());
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let body = http_body_util::Full::new(bytes::Bytes::from(version))
                .map_err(|e| -> mesh_core::http::BoxError { match e {} })
                .with_trailers(async move { Some(Ok(trailers)) })
                .boxed();
            Ok::<_, std::convert::Infallible>(Response::new(body))
        });
        tokio::spawn(mesh_core::serve::serve_plain(listener, "app", app));
        let client = AppClient::new(addr, Duration::from_secs(5));
        let request = |ct: &'static str| {
            Request::builder()
                .uri("/x")
                .header("host", "echo.demo")
                .header("content-type", ct)
                .body(empty())
                .unwrap()
        };
        for _ in 0..2 {
            let rsp = client.send(request("application/grpc")).await.unwrap();
            let collected = rsp.into_body().collect().await.unwrap();
            let trailers = collected.trailers().cloned().unwrap();
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(collected.to_bytes(), "HTTP/2.0");
        }
        let rsp = client.send(request("text/plain")).await.unwrap();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "HTTP/1.1");
    }
}
