//! The control API client the tests use: core's `ControlClient`, with its errors turned into a
//! small `CallError` whose status and body the tests assert on.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::anyhow;
use bytes::Bytes;
use http::{Method, StatusCode};
use mesh_core::control_client::{ControlClient, ControlError, NdjsonStream};
use mesh_core::identity::{SpiffeId, TrustBundle};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A failed call.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The controller answered with an error status.
    Status { status: StatusCode, body: String },
    /// Anything else.
    Other(anyhow::Error),
}

impl From<ControlError> for CallError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Status { status, body, .. } => CallError::Status { status, body },
            other => CallError::Other(other.into()),
        }
    }
}

impl CallError {
    /// The status, when the controller answered one.
    pub(crate) fn status(&self) -> Option<StatusCode> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            CallError::Other(_) => None,
        }
    }

    /// The answer body, when the controller answered.
    pub(crate) fn body(&self) -> &str {
        match self {
            CallError::Status { body, .. } => body,
            CallError::Other(_) => "",
        }
    }

    /// Converts into an `anyhow` error for `?` in tests.
    pub(crate) fn into_anyhow(self) -> anyhow::Error {
        match self {
            CallError::Status { status, body } => anyhow!("controller answered {status}: {body}"),
            CallError::Other(e) => e,
        }
    }
}

/// A client of the control port.
#[derive(Clone)]
pub(crate) struct Client(Arc<ControlClient>);

impl Client {
    /// Gets a certificate for `id` with `token` and connects with it.
    pub(crate) async fn bootstrap(
        addr: SocketAddr,
        cluster: &str,
        ca_pem: &str,
        token: &str,
        id: &SpiffeId,
    ) -> Result<(Client, TrustBundle), CallError> {
        let (client, _, bundle) =
            ControlClient::bootstrap(addr.into(), cluster, ca_pem, token, id).await?;
        Ok((Client(client), bundle))
    }

    /// Sends `body` as JSON.
    pub(crate) async fn send_json<T: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&T>,
    ) -> Result<Bytes, CallError> {
        Ok(self.0.send_json(method, path, body).await?)
    }

    /// Opens an NDJSON stream.
    pub(crate) async fn stream<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Ndjson<T>, CallError> {
        Ok(Ndjson(self.0.stream(path).await?))
    }
}

/// A stream of snapshots.
pub(crate) struct Ndjson<T>(NdjsonStream<T>);

impl<T: DeserializeOwned> Ndjson<T> {
    /// The next message, `None` when the stream ended.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<T>> {
        Ok(self.0.next().await?)
    }
}
