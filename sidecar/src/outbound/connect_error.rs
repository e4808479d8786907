//! Why a connection to an endpoint could not be had: each cause names the hop (TCP, TLS,
//! identity, HTTP/2, gateway, tunnel) and the peer, so the answer's text says where it broke;
//! and [`GetError`], which adds the service's refusal to let a request wait for one.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use mesh_core::policy::backend_policy::LimitExceeded;

/// Why the pool gave a request no connection: the endpoint could not be reached, or the
/// service's own limit refused to let the request wait (which says nothing of the endpoint).
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// No usable connection to the endpoint could be had.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The request would have waited while `limits.maxPendingRequests` of its service do.
    #[error(transparent)]
    LimitExceeded(#[from] LimitExceeded),
}

/// Why no usable connection to an endpoint could be had. Every variant is a connect failure:
/// the request was not sent, so it may go to another endpoint whatever its method.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed.
    #[error("TCP connect to {addr} failed: {source}")]
    Tcp {
        /// The address dialled.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (the message of the verifier says why, e.g. an unlinked domain).
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// The peer.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The peer presented another identity than the snapshot lists for it.
    #[error("{addr} presented {presented} but the controller lists {expected} for it")]
    IdentityMismatch {
        /// The peer.
        addr: SocketAddr,
        /// What the snapshot lists.
        expected: String,
        /// What the peer's certificate says.
        presented: String,
    },
    /// The HTTP/2 handshake failed.
    #[error("HTTP/2 handshake with {addr} failed: {source}")]
    Handshake {
        /// The peer.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// Connecting took longer than the connect timeout.
    #[error("connecting to {addr} timed out after {after:?}")]
    Timeout {
        /// The address.
        addr: SocketAddr,
        /// The connect timeout.
        after: Duration,
    },
    /// The endpoint is in another cluster and the snapshot names no gateway yet.
    #[error(
        "no gateway is known for traffic to cluster {cluster} (the controller has not published one)"
    )]
    NoGateway {
        /// The endpoint's cluster.
        cluster: String,
    },
    /// The connection to the own gateway failed.
    #[error("gateway {gateway}: {source}")]
    Gateway {
        /// The gateway's tunnel address.
        gateway: SocketAddr,
        /// The cause.
        #[source]
        source: Box<ConnectError>,
    },
    /// The gateway refused the tunnel.
    #[error(
        "gateway {gateway} refused the tunnel to {endpoint} in {cluster} with {status}: {reason}"
    )]
    TunnelRefused {
        /// The gateway.
        gateway: SocketAddr,
        /// The endpoint asked for.
        endpoint: SocketAddr,
        /// Its cluster.
        cluster: String,
        /// The gateway's status.
        status: StatusCode,
        /// The gateway's `x-mesh-error` and body.
        reason: String,
    },
    /// The tunnel request failed on the gateway connection.
    #[error("tunnel through gateway {gateway} to {endpoint} failed: {reason}")]
    Tunnel {
        /// The gateway.
        gateway: SocketAddr,
        /// The endpoint.
        endpoint: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A pooled connection failed before the request was sent on it.
    #[error("connection to {addr} closed before the request was sent: {source}")]
    NotSent {
        /// The endpoint.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
}
