//! A small plain-HTTP/1.1 JSON client for the components' admin APIs (`mesh link`,
//! `mesh status`, `mesh up` readiness checks). Calls that change something carry the
//! controller's admin token ([`AdminTokens`] says where each cluster's is).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
pub use mesh_core::admin_token::{ADMIN_TOKEN_FILE, AdminToken};
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
    /// The admin token of a cluster could not be read.
    #[error(
        "the admin token of cluster {cluster} (admin API at {addr}): {reason}; the controller \
         creates it in its state directory, or pass --admin-token-file"
    )]
    Token {
        /// The cluster.
        cluster: String,
        /// Its admin address.
        addr: SocketAddr,
        /// What went wrong, with the file.
        reason: String,
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

/// Where the admin tokens of controllers come from: a file given for an admin address, else
/// `<state dir>/<cluster>/admin-token` (where `mesh up` and `mesh ca` put each cluster's
/// state, and the controller creates its token).
#[derive(Debug, Clone, Default)]
pub struct AdminTokens {
    state_dir: Option<PathBuf>,
    files: BTreeMap<SocketAddr, PathBuf>,
}

impl AdminTokens {
    /// Tokens under the cluster-set state directory `dir`.
    pub fn in_state_dir(dir: &Path) -> Self {
        Self {
            state_dir: Some(dir.to_path_buf()),
            files: BTreeMap::new(),
        }
    }

    /// The token of the controller at `admin` is in `file` (a remote cluster's).
    pub fn with_file(mut self, admin: SocketAddr, file: &Path) -> Self {
        self.files.insert(admin, file.to_path_buf());
        self
    }

    /// The token of `cluster`, whose controller's admin API is at `admin`.
    pub fn token_for(&self, admin: SocketAddr, cluster: &str) -> Result<AdminToken, AdminError> {
        let err = |reason: String| AdminError::Token {
            cluster: cluster.to_string(),
            addr: admin,
            reason,
        };
        let path = match (self.files.get(&admin), &self.state_dir) {
            (Some(file), _) => file.clone(),
            (None, Some(dir)) => dir.join(cluster).join(ADMIN_TOKEN_FILE),
            (None, None) => return Err(err("no token file given".into())),
        };
        AdminToken::read(&path).map_err(|e| err(e.to_string()))
    }
}

/// Sends one request without credentials (reads) and returns the body of a 2xx answer.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Bytes, AdminError> {
    call_with(addr, None, method, path, body).await
}

/// Sends one request, with `Authorization: Bearer <token>` when given, and returns the body
/// of a 2xx answer.
pub async fn call_with(
    addr: SocketAddr,
    token: Option<&AdminToken>,
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
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, addr.to_string())
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, token.header_value());
        }
        let req = req
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

/// Sends `value` as JSON with `method`, without credentials (the demo app's admin API).
pub async fn send_json<T: Serialize>(
    addr: SocketAddr,
    method: Method,
    path: &str,
    value: &T,
) -> Result<Bytes, AdminError> {
    send_json_with(addr, None, method, path, value).await
}

/// Sends `value` as JSON with `method`, with the admin token when given.
pub async fn send_json_with<T: Serialize>(
    addr: SocketAddr,
    token: Option<&AdminToken>,
    method: Method,
    path: &str,
    value: &T,
) -> Result<Bytes, AdminError> {
    let body = serde_json::to_vec(value).map_err(|e| AdminError::Malformed {
        addr,
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    call_with(addr, token, method, path, Some(body)).await
}
