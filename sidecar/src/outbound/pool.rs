//! Pooled mTLS HTTP/2 connections to endpoints: one multiplexed connection per endpoint,
//! re-created when it closes. Own-cluster endpoints are dialled directly; endpoints of other
//! clusters through the own gateway: one pooled connection to the gateway, one HTTP/2 `CONNECT`
//! per remote endpoint, the inner TLS end to end with the remote sidecar, HTTP/2 over that.
//! After every handshake the peer's SPIFFE ID must be the one the snapshot lists. Endpoints the
//! controller lists as `plaintext` (local servers without a sidecar) get HTTP/2 prior knowledge
//! over plain TCP instead: there is no identity to check.
//!
//! This module only connects: it never retries (the proxy decides that).
//!
//! Backend policy limits: one connection per endpoint means `limits.maxConnections` (at
//! least 1) always holds here. `limits.maxPendingRequests` bounds the requests of one service
//! that wait in [`ConnectionPool::get`] at once, over all its endpoints. A request is pending
//! here while it has no connection to send on yet: it dials the endpoint (TCP, TLS, identity
//! check, HTTP/2 handshake, and through a tunnel the gateway connection and `CONNECT` too), or
//! waits on the endpoint's slot while another request dials it. A request that finds a live
//! pooled connection at once never waits and is not counted. One more waiting request than the
//! limit is refused at once with [`GetError::LimitExceeded`] (503, `x-mesh-error:
//! max-pending-requests`), a refusal of the service's own limit, not a [`ConnectError`]: it
//! says nothing of the endpoint, so outlier detection does not count it, and it is not retried.
//! Not counted: the wait for an HTTP/2 stream slot inside hyper on a connection the request
//! already has (the peer's concurrent-stream limit), which hyper does not expose; per-endpoint
//! concurrency is bounded before that by `limits.maxRequestsPerEndpoint` in the balancer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_core::api::{
    HEADER_MESH_ERROR, HEADER_TARGET_CLUSTER, HEADER_TARGET_SERVICE, RouteEndpoint,
};
use mesh_core::http::{BoxBody, empty};
use mesh_core::identity::{SpiffeId, peer_spiffe_id};
use mesh_core::names::ServiceKey;
use mesh_core::policy::backend_policy::LimitsSpec;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

pub use super::connect_error::{ConnectError, GetError};
use pending::PendingCounts;

mod pending;
#[cfg(test)]
mod tests;

/// HTTP/2 pings on idle pooled connections, so a peer that vanished without a reset (a
/// partition, a dead host) is noticed within seconds instead of at the next request.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may go unanswered before the connection is declared dead.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest gateway refusal body kept for the error message.
const MAX_REFUSAL_BODY: usize = 4096;

/// Where one try goes.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The endpoint's cluster.
    pub cluster: &'a str,
    /// The endpoint.
    pub endpoint: &'a RouteEndpoint,
    /// The service (named in the tunnel request).
    pub service: &'a ServiceKey,
    /// The own gateway's tunnel address, for other clusters.
    pub gateway: Option<SocketAddr>,
    /// Trace context of the request that opens the tunnel.
    pub traceparent: Option<&'a HeaderValue>,
    /// The service's backend-policy limits (`None` without a policy: no limit).
    pub limits: Option<&'a LimitsSpec>,
}

/// What a pooled connection leads to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PoolKey {
    /// An endpoint of a cluster (directly or through a tunnel).
    Endpoint {
        /// The cluster.
        cluster: String,
        /// The endpoint's address.
        addr: SocketAddr,
    },
    /// The own gateway's tunnel port.
    Gateway(SocketAddr),
}

type Slot = Arc<tokio::sync::Mutex<Option<SendRequest<BoxBody>>>>;

/// The pool of HTTP/2 connections of one sidecar.
pub struct ConnectionPool {
    own_cluster: String,
    gateway_id: SpiffeId,
    tls: TlsConnector,
    connect_timeout: Duration,
    slots: Mutex<HashMap<PoolKey, Slot>>,
    /// Requests of each service waiting for a connection (see the module doc).
    pending: PendingCounts,
}

impl std::fmt::Debug for ConnectionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPool")
            .field("own_cluster", &self.own_cluster)
            .finish_non_exhaustive()
    }
}

impl ConnectionPool {
    /// A pool for a sidecar of `own_cluster` (whose gateway presents `gateway_id`).
    pub fn new(
        own_cluster: &str,
        gateway_id: SpiffeId,
        tls: Arc<ClientConfig>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            own_cluster: own_cluster.to_string(),
            gateway_id,
            tls: TlsConnector::from(tls),
            connect_timeout,
            slots: Mutex::new(HashMap::new()),
            pending: PendingCounts::default(),
        }
    }

    fn slot(&self, key: &PoolKey) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(key.clone()).or_default().clone()
    }

    /// A ready connection to the target's endpoint, pooled or new; refused at once when the
    /// request would have to wait and the service's `maxPendingRequests` already do.
    pub async fn get(&self, target: Target<'_>) -> Result<SendRequest<BoxBody>, GetError> {
        let key = PoolKey::Endpoint {
            cluster: target.cluster.to_string(),
            addr: target.endpoint.address,
        };
        let slot = self.slot(&key);
        // One connect per endpoint at a time; concurrent requests wait for it and share it.
        // Whoever has to wait (for the slot, or for its own dial) holds a pending place until
        // it has a connection or gives up.
        let mut pending = None;
        let mut held = match slot.try_lock() {
            Ok(held) => held,
            Err(_) => {
                pending = Some(self.pending.enter(target.service, target.limits)?);
                slot.lock().await
            }
        };
        if let Some(sender) = held.as_ref()
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        *held = None;
        let _pending = match pending {
            Some(place) => place,
            None => self.pending.enter(target.service, target.limits)?,
        };
        let sender = if target.cluster != self.own_cluster {
            self.connect_tunnel(target).await?
        } else if target.endpoint.plaintext {
            self.connect_plaintext(target.endpoint.address).await?
        } else {
            self.connect_direct(target.endpoint).await?
        };
        *held = Some(sender.clone());
        Ok(sender)
    }

    /// How many requests of `service` are waiting for a connection now.
    pub fn pending(&self, service: &ServiceKey) -> u32 {
        self.pending.get(service)
    }

    /// Drops the pooled connection to `key` (it failed); the next request dials anew.
    pub fn evict(&self, key: &PoolKey) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        if let Some(slot) = slot
            && let Ok(mut held) = slot.try_lock()
        {
            *held = None;
        }
    }

    /// Keeps only connections whose key `keep` accepts (endpoints still in some route).
    pub fn retain(&self, keep: impl Fn(&PoolKey) -> bool) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| keep(k));
    }

    async fn connect_direct(
        &self,
        endpoint: &RouteEndpoint,
    ) -> Result<SendRequest<BoxBody>, ConnectError> {
        let addr = endpoint.address;
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|source| ConnectError::Tcp { addr, source })?;
            let _ = tcp.set_nodelay(true);
            self.tls_h2(tcp, addr, &endpoint.identity).await
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| ConnectError::Timeout {
                addr,
                after: self.connect_timeout,
            })?
    }

    /// Plain TCP then HTTP/2 prior knowledge, for endpoints listed as plaintext.
    async fn connect_plaintext(
        &self,
        addr: SocketAddr,
    ) -> Result<SendRequest<BoxBody>, ConnectError> {
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|source| ConnectError::Tcp { addr, source })?;
            let _ = tcp.set_nodelay(true);
            h2_handshake(tcp, addr).await
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| ConnectError::Timeout {
                addr,
                after: self.connect_timeout,
            })?
    }

    /// TLS (checking the peer's SPIFFE ID) then an HTTP/2 client connection over `io`.
    async fn tls_h2<IO>(
        &self,
        io: IO,
        addr: SocketAddr,
        expected_id: &str,
    ) -> Result<SendRequest<BoxBody>, ConnectError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Peers are verified by SPIFFE ID, not by name: no SNI is needed.
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = self
            .tls
            .connect(name, io)
            .await
            .map_err(|source| ConnectError::Tls { addr, source })?;
        let presented = peer_spiffe_id(tls.get_ref().1.peer_certificates());
        let presented_text = presented.as_ref().map(ToString::to_string);
        if presented_text.as_deref() != Some(expected_id) {
            let presented = presented_text.unwrap_or_else(|| "no SPIFFE ID".into());
            tracing::warn!(%addr, expected = expected_id, %presented, "peer identity mismatch");
            return Err(ConnectError::IdentityMismatch {
                addr,
                expected: expected_id.to_string(),
                presented,
            });
        }
        h2_handshake(tls, addr).await
    }

    /// The pooled connection to the own gateway.
    async fn gateway(&self, gateway: SocketAddr) -> Result<SendRequest<BoxBody>, ConnectError> {
        let slot = self.slot(&PoolKey::Gateway(gateway));
        let mut held = slot.lock().await;
        if let Some(sender) = held.as_ref()
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        *held = None;
        let gateway_id = self.gateway_id.to_string();
        let endpoint = RouteEndpoint {
            address: gateway,
            identity: gateway_id,
            healthy: true,
            plaintext: false,
        };
        let sender = self
            .connect_direct(&endpoint)
            .await
            .map_err(|e| ConnectError::Gateway {
                gateway,
                source: Box::new(e),
            })?;
        *held = Some(sender.clone());
        Ok(sender)
    }

    async fn connect_tunnel(
        &self,
        target: Target<'_>,
    ) -> Result<SendRequest<BoxBody>, ConnectError> {
        let endpoint = target.endpoint.address;
        let gateway = target.gateway.ok_or_else(|| ConnectError::NoGateway {
            cluster: target.cluster.to_string(),
        })?;
        let mut to_gateway = self.gateway(gateway).await?;
        let tunnel_error = |reason: String| ConnectError::Tunnel {
            gateway,
            endpoint,
            reason,
        };
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .uri(endpoint.to_string())
            .header(HEADER_TARGET_CLUSTER, target.cluster)
            .header(HEADER_TARGET_SERVICE, target.service.to_string());
        if let Some(tp) = target.traceparent {
            req = req.header("traceparent", tp.clone());
        }
        let req = req.body(empty()).map_err(|e| tunnel_error(e.to_string()))?;
        let open = async {
            let rsp = to_gateway.send_request(req).await.map_err(|e| {
                self.evict(&PoolKey::Gateway(gateway));
                tunnel_error(e.to_string())
            })?;
            if rsp.status() != StatusCode::OK {
                let status = rsp.status();
                let reason = refusal_reason(rsp).await;
                return Err(ConnectError::TunnelRefused {
                    gateway,
                    endpoint,
                    cluster: target.cluster.to_string(),
                    status,
                    reason,
                });
            }
            let upgraded = hyper::upgrade::on(rsp)
                .await
                .map_err(|e| tunnel_error(e.to_string()))?;
            self.tls_h2(TokioIo::new(upgraded), endpoint, &target.endpoint.identity)
                .await
        };
        // The gateway dials the peer cluster for us: bound the whole opening by the connect
        // timeout, like a direct connect.
        tokio::time::timeout(self.connect_timeout, open)
            .await
            .map_err(|_| ConnectError::Timeout {
                addr: endpoint,
                after: self.connect_timeout,
            })?
    }
}

/// An HTTP/2 client connection over `io` (TLS or plain TCP), driven by its own task.
async fn h2_handshake<IO>(io: IO, addr: SocketAddr) -> Result<SendRequest<BoxBody>, ConnectError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .adaptive_window(true)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%addr, error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// The gateway's `x-mesh-error` and the start of its body, as one line.
async fn refusal_reason(rsp: http::Response<hyper::body::Incoming>) -> String {
    let label = rsp
        .headers()
        .get(HEADER_MESH_ERROR)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = mesh_core::http::read_body(rsp.into_body(), MAX_REFUSAL_BODY)
        .await
        .unwrap_or_else(|_| Bytes::new());
    let text = String::from_utf8_lossy(&body).trim().to_string();
    match (label, text.is_empty()) {
        (Some(label), true) => label,
        (Some(label), false) => format!("{label}: {text}"),
        (None, false) => text,
        (None, true) => "no reason given".into(),
    }
}
