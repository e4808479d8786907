//! The plain HTTP/1.1 client to the local app: a small pool of idle keep-alive connections.
//! A connection goes back to the pool once its response body has been read to the end; one
//! whose body was dropped half-way is closed by hyper and never reused.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use mesh_core::http::BoxBody;
use tower::Service;

use super::errors::InboundError;
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
}

impl AppClient {
    /// A client of the app at `addr`.
    pub fn new(addr: SocketAddr, connect_timeout: Duration) -> Self {
        Self {
            addr,
            connect_timeout,
            idle: Default::default(),
        }
    }

    /// The app's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `req` on an idle connection, or a new one if none is usable.
    pub async fn send(&self, mut req: Request<BoxBody>) -> Result<Response<Incoming>, AppError> {
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
