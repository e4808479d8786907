//! A minimal client of the control API with the same shape as `mesh_core::control_client`
//! (bootstrap with the join token, JSON calls, NDJSON streams).
//!
//! It exists because `ControlClient` in mesh-core sets HTTP/2 keep-alive without giving hyper a
//! timer, which panics ("You must supply a timer") on the first connection. Once core adds
//! `.timer(TokioTimer::new())` to its builder, these tests can use `ControlClient` directly.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::anyhow;
use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_core::api::{ALPN_H2, CsrRequest, CsrResponse, PATH_CERTIFICATES};
use mesh_core::identity::{
    SpiffeId, TrustBundle, TrustStore, WorkloadCsr, WorkloadIdentity, client_config,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A failed call.
#[derive(Debug)]
pub enum CallError {
    /// The controller answered with an error status.
    Status { status: StatusCode, body: String },
    /// Anything else.
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for CallError {
    fn from(e: E) -> Self {
        CallError::Other(e.into())
    }
}

impl CallError {
    /// The status, when the controller answered one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            CallError::Other(_) => None,
        }
    }

    /// The answer body, when the controller answered.
    pub fn body(&self) -> &str {
        match self {
            CallError::Status { body, .. } => body,
            CallError::Other(_) => "",
        }
    }

    /// Converts into an `anyhow` error for `?` in tests.
    pub fn into_anyhow(self) -> anyhow::Error {
        match self {
            CallError::Status { status, body } => anyhow!("controller answered {status}: {body}"),
            CallError::Other(e) => e,
        }
    }
}

/// An HTTP/2 connection to the control port.
#[derive(Clone)]
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
}

async fn connect(addr: SocketAddr, cfg: rustls::ClientConfig) -> anyhow::Result<Client> {
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("controller.mesh.invalid")?;
    let stream = tls.connect(name, tcp).await?;
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(conn);
    Ok(Client { sender })
}

impl Client {
    /// Gets a certificate for `id` with `token` and connects with it.
    pub async fn bootstrap(
        addr: SocketAddr,
        cluster: &str,
        ca_pem: &str,
        token: &str,
        id: &SpiffeId,
    ) -> Result<(Client, TrustBundle), CallError> {
        let bundle = TrustBundle {
            trust_domain: id.trust_domain.clone(),
            cluster: cluster.to_string(),
            ca_pem: ca_pem.to_string(),
        };
        let trust = TrustStore::new(std::slice::from_ref(&bundle))?;
        let anonymous = connect(addr, client_config(None, trust.clone(), &[ALPN_H2])?).await?;
        let csr = WorkloadCsr::generate(id)?;
        let body = serde_json::to_vec(&CsrRequest {
            csr_pem: csr.csr_pem.clone(),
        })?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("https://controller{PATH_CERTIFICATES}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body)))?;
        let answer: CsrResponse = serde_json::from_slice(&anonymous.call(req).await?)?;
        let identity = WorkloadIdentity::from_pem(&answer.cert_chain_pem, &csr.key_pem)?;
        let client = connect(addr, client_config(Some(&identity), trust, &[ALPN_H2])?).await?;
        Ok((client, answer.trust_bundle))
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<http::Response<Incoming>, CallError> {
        let mut sender = self.sender.clone();
        sender.ready().await?;
        Ok(sender.send_request(req).await?)
    }

    async fn call(&self, req: Request<Full<Bytes>>) -> Result<Bytes, CallError> {
        let rsp = self.send(req).await?;
        let status = rsp.status();
        let body = rsp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(CallError::Status {
                status,
                body: String::from_utf8_lossy(&body).trim().to_string(),
            });
        }
        Ok(body)
    }

    /// Sends `body` as JSON.
    pub async fn send_json<T: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&T>,
    ) -> Result<Bytes, CallError> {
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b)?),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("https://controller{path}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))?;
        self.call(req).await
    }

    /// Opens an NDJSON stream.
    pub async fn stream<T: DeserializeOwned>(&self, path: &str) -> Result<Ndjson<T>, CallError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("https://controller{path}"))
            .body(Full::new(Bytes::new()))?;
        let rsp = self.send(req).await?;
        let status = rsp.status();
        if !status.is_success() {
            let body = rsp.into_body().collect().await?.to_bytes();
            return Err(CallError::Status {
                status,
                body: String::from_utf8_lossy(&body).trim().to_string(),
            });
        }
        Ok(Ndjson {
            body: rsp.into_body(),
            buf: BytesMut::new(),
            _t: std::marker::PhantomData,
        })
    }
}

/// A stream of newline-delimited JSON messages.
pub struct Ndjson<T> {
    body: Incoming,
    buf: BytesMut,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Ndjson<T> {
    /// The next message; `None` when the stream ended cleanly.
    pub async fn next(&mut self) -> anyhow::Result<Option<T>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                return Ok(Some(serde_json::from_slice(&line[..pos])?));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(mut data) = frame?.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
            }
        }
    }
}
