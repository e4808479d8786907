//! The HTTP client of the load driver, speaking to a client sidecar's outbound proxy: HTTP/1.1
//! over a pool of keep-alive connections, HTTP/2 with prior knowledge over one multiplexed
//! connection, each redialed when it breaks.

use std::net::SocketAddr;
use std::sync::Mutex;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::outcome::Wire;

/// Most idle HTTP/1.1 connections kept: enough for the concurrency of a few hundred requests
/// a second at a few milliseconds each.
const MAX_IDLE_H1: usize = 64;
/// Bound on dialling through capture (the request's own timeout bounds the rest).
const CAPTURED_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// An answer read whole.
#[derive(Debug)]
pub struct Answer {
    /// Status and headers.
    pub head: http::response::Parts,
    /// The whole body.
    pub body: Bytes,
}

/// Where the load's connections go.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A client sidecar's outbound proxy.
    Proxy(SocketAddr),
    /// A service VIP, dialled from inside a network namespace whose capture rules send the
    /// connection to the client sidecar there (no proxy: what a plain app does).
    Captured {
        /// The namespace (`ip netns` name).
        ns: String,
        /// The VIP and port.
        addr: SocketAddr,
    },
}

/// Connections to one proxy, or through capture.
pub struct ProxyClient {
    entry: Entry,
    idle_h1: Mutex<Vec<http1::SendRequest<Full<Bytes>>>>,
    h2: Mutex<Option<http2::SendRequest<Full<Bytes>>>>,
}

impl ProxyClient {
    /// A client of the proxy at `proxy` (no connection opened yet).
    pub fn new(proxy: SocketAddr) -> Self {
        Self::entering(Entry::Proxy(proxy))
    }

    /// A client whose connections enter the mesh at `entry`.
    pub fn entering(entry: Entry) -> Self {
        Self {
            entry,
            idle_h1: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<TokioIo<tokio::net::TcpStream>, String> {
        let tcp = match &self.entry {
            Entry::Proxy(proxy) => tokio::net::TcpStream::connect(proxy)
                .await
                .map_err(|e| format!("connect to proxy {proxy}: {e}"))?,
            Entry::Captured { ns, addr } => {
                mesh_launcher::netns::connect_in(ns, *addr, CAPTURED_CONNECT_TIMEOUT)
                    .await
                    .map_err(|e| format!("connect to {addr} in namespace {ns}: {e}"))?
            }
        };
        let _ = tcp.set_nodelay(true);
        Ok(TokioIo::new(tcp))
    }

    /// Sends `req` over `wire` and reads the whole answer (at most `limit` body bytes).
    pub async fn send(
        &self,
        wire: Wire,
        req: Request<Full<Bytes>>,
        limit: usize,
    ) -> Result<Answer, String> {
        match wire {
            Wire::Http1 => self.send_h1(req, limit).await,
            Wire::Http2 => self.send_h2(req, limit).await,
        }
    }

    async fn send_h1(&self, req: Request<Full<Bytes>>, limit: usize) -> Result<Answer, String> {
        let pooled = {
            let mut idle = self.idle_h1.lock().unwrap_or_else(|p| p.into_inner());
            let mut found = None;
            while let Some(s) = idle.pop() {
                if s.is_ready() {
                    found = Some(s);
                    break;
                }
            }
            found
        };
        let mut sender = match pooled {
            Some(s) => s,
            None => {
                let io = self.connect().await?;
                let (s, conn) = http1::handshake(io)
                    .await
                    .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
                tokio::spawn(conn);
                s
            }
        };
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP/1.1: {e}"))?;
        let answer = read(rsp, limit).await?;
        let keep = !answer
            .head
            .headers
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if keep {
            let mut idle = self.idle_h1.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE_H1 {
                idle.push(sender);
            }
        }
        Ok(answer)
    }

    async fn send_h2(&self, req: Request<Full<Bytes>>, limit: usize) -> Result<Answer, String> {
        let current = self.h2.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut sender = match current {
            Some(s) if !s.is_closed() => s,
            _ => {
                let io = self.connect().await?;
                let (s, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
                tokio::spawn(conn);
                *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
                s
            }
        };
        sender.ready().await.map_err(|e| format!("HTTP/2: {e}"))?;
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP/2: {e}"))?;
        read(rsp, limit).await
    }
}

async fn read(rsp: Response<Incoming>, limit: usize) -> Result<Answer, String> {
    let (head, body) = rsp.into_parts();
    let body = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok(Answer { head, body })
}
