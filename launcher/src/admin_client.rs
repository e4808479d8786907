//! A small plain-HTTP/1.1 JSON client for the components' admin APIs (`mesh link`,
//! `mesh status`, `mesh up` readiness checks).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use mesh_core::http::{BoxBody, empty, full, read_body};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bound on one admin call: admin APIs are local and answer at once, or are down.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest admin answer read.
const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// Errors calling an admin API.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Could not connect, or the connection failed.
    #[error("admin API at {addr}: {reason}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The API answered with an error status.
    #[error("{method} http://{addr}{path} answered {status}: {body}")]
    Status {
        /// The address.
        addr: SocketAddr,
        /// The method.
        method: Method,
        /// The path.
        path: String,
        /// The status.
        status: StatusCode,
        /// The body.
        body: String,
    },
    /// An answer that is not the JSON expected.
    #[error("answer of http://{addr}{path} is not what was expected: {reason}")]
    Malformed {
        /// The address.
        addr: SocketAddr,
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
}

impl AdminError {
    /// The HTTP status, when the API answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            AdminError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Sends one request and returns the body of a 2xx answer.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Bytes, AdminError> {
    let connect_err = |e: &dyn std::fmt::Display| AdminError::Connect {
        addr,
        reason: e.to_string(),
    };
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| connect_err(&e))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, BoxBody>(TokioIo::new(tcp))
                .await
                .map_err(|e| connect_err(&e))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map(full).unwrap_or_else(empty))
            .map_err(|e| connect_err(&e))?;
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| connect_err(&e))?;
        let status = rsp.status();
        let bytes = read_body(rsp.into_body(), MAX_ANSWER)
            .await
            .map_err(|e| connect_err(&e))?;
        if !status.is_success() {
            return Err(AdminError::Status {
                addr,
                method: method.clone(),
                path: path.to_string(),
                status,
                body: String::from_utf8_lossy(&bytes).trim().to_string(),
            });
        }
        Ok(bytes)
    };
    tokio::time::timeout(ADMIN_TIMEOUT, fut)
        .await
        .map_err(|_| connect_err(&"timed out"))?
}

/// `GET` and decode JSON.
pub async fn get_json<T: DeserializeOwned>(addr: SocketAddr, path: &str) -> Result<T, AdminError> {
    let bytes = call(addr, Method::GET, path, None).await?;
    serde_json::from_slice(&bytes).map_err(|e| AdminError::Malformed {
        addr,
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// Sends `value` as JSON with `method`.
pub async fn send_json<T: Serialize>(
    addr: SocketAddr,
    method: Method,
    path: &str,
    value: &T,
) -> Result<Bytes, AdminError> {
    let body = serde_json::to_vec(value).map_err(|e| AdminError::Malformed {
        addr,
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    call(addr, method, path, Some(body)).await
}
