//! One client connection of the load generator (HTTP/1.1 or HTTP/2 prior knowledge over TCP),
//! and the request it sends.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{Protocol, Target};

/// A connection ready to send requests.
#[derive(Debug)]
pub enum Conn {
    /// HTTP/1.1.
    H1(http1::SendRequest<Full<Bytes>>),
    /// HTTP/2.
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }

    /// Another handle on the same connection (HTTP/2 only: HTTP/1.1 carries one request at a
    /// time).
    pub fn share(&self) -> Option<Conn> {
        match self {
            Conn::H1(_) => None,
            Conn::H2(s) => Some(Conn::H2(s.clone())),
        }
    }
}

/// Opens a connection to `addr` (TCP, no delay) speaking `protocol`.
pub async fn connect(addr: SocketAddr, protocol: Protocol) -> Result<Conn, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("TCP connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let io = TokioIo::new(tcp);
    match protocol {
        Protocol::Http1 => {
            let (sender, conn) = http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1 handshake with {addr}: {e}"))?;
            tokio::spawn(conn);
            Ok(Conn::H1(sender))
        }
        Protocol::Http2 => {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
            tokio::spawn(conn);
            Ok(Conn::H2(sender))
        }
    }
}

/// The request of a run: GET without a body, POST with one.
pub fn request(target: &Target, protocol: Protocol, body: Bytes) -> Request<Full<Bytes>> {
    let absolute = format!("http://{}{}", target.authority, target.path);
    let uri = match protocol {
        Protocol::Http2 => absolute,
        Protocol::Http1 if target.absolute_form => absolute,
        Protocol::Http1 => target.path.clone(),
    };
    let method = if body.is_empty() {
        Method::GET
    } else {
        Method::POST
    };
    let mut builder = Request::builder().method(method).uri(uri);
    if protocol == Protocol::Http1 {
        builder = builder.header(http::header::HOST, &target.authority);
    }
    builder
        .body(Full::new(body))
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}

/// Sends `req` and reads the whole answer; a non-2xx status is an error.
pub async fn exchange(conn: &mut Conn, req: Request<Full<Bytes>>) -> Result<(), String> {
    let rsp = match conn {
        Conn::H1(s) => {
            s.ready().await.map_err(|e| e.to_string())?;
            s.send_request(req).await.map_err(|e| e.to_string())?
        }
        Conn::H2(s) => s.send_request(req).await.map_err(|e| e.to_string())?,
    };
    let status = rsp.status();
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    if status.is_success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&body.to_bytes()).trim().to_string();
        Err(format!("status {status}: {text}"))
    }
}
