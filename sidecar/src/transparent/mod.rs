//! Transparent capture, the sidecar's side: connections that `mesh init`'s rules redirected to
//! its listeners, recognised by their original destination (`SO_ORIGINAL_DST`), and what
//! becomes of each. Outbound (the app calling out):
//!
//! - not redirected: the app uses the listener as its HTTP proxy, as without capture;
//! - to a VIP of the mesh's range: the controller says which service it stands for
//!   ([`vips`]); the first bytes ([`sniff`]) say whether it is HTTP, served by the outbound
//!   stack with the VIP's service as the destination when the authority is an address, or
//!   anything else, carried opaque: a CONNECT through the same stack (balancing, failover,
//!   breakers, retries of the opening) to a sidecar of the service, which joins it to its app;
//! - elsewhere: passed through unchanged (`--outbound-policy allow-any`) or refused
//!   (`registry-only`, HTTP clients get a 502 saying why);
//! - to the sidecar's own ports, or the sidecar's own passthrough dial captured again (it does
//!   not run as the uid `mesh init` excludes): refused, never looped.
//!
//! Inbound: a connection redirected from one of the app's ports comes from outside the mesh
//! (a sidecar dials the inbound port itself, with mTLS); it reaches the app under
//! `--inbound-policy permissive` and is refused under `strict`. Each refusal is logged once
//! with its reason and counted in `mesh_sidecar_captured_connections_total`.

pub mod original_dst;
pub mod policy;
pub mod replayed;
pub mod sniff;
pub mod splice;
pub mod vips;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mesh_core::api::{HEADER_MESH_ERROR, VipTarget};
use mesh_core::serve::{ServeLimits, serve_connection_with};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tower::{ServiceBuilder, ServiceExt};

use crate::facts::CapturedVip;
use crate::metrics::Metrics;
use crate::stack::{HttpStack, Stack};
pub use policy::{CaptureSettings, InboundPolicy, Outbound, OutboundPolicy};
use replayed::Replayed;
use sniff::{Sniffed, sniff};
use splice::splice;
pub use vips::VipLookup;

/// The outbound stack over requests the sidecar makes up itself (an opaque stream's CONNECT,
/// which has no body).
pub trait OpaqueStack: Stack<Empty<Bytes>> {}

impl<T: Stack<Empty<Bytes>>> OpaqueStack for T {}

/// What captured connections need: the settings, the VIP lookups, the counters.
#[derive(Debug)]
pub struct Capture {
    settings: CaptureSettings,
    vips: VipLookup,
    metrics: Metrics,
    connect_timeout: Duration,
    /// Local ports of the sidecar's own passthrough dials in progress: one of them arriving
    /// at the outbound listener means the sidecar's traffic is captured too.
    own_dials: Mutex<HashSet<u16>>,
    /// What a client may make an HTTP connection hold (the outbound listener's limits).
    limits: ServeLimits,
}

impl Capture {
    /// Capture handling with `settings`, asking `vips` which service a VIP is.
    pub fn new(
        settings: CaptureSettings,
        vips: VipLookup,
        metrics: Metrics,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            settings,
            vips,
            metrics,
            connect_timeout,
            own_dials: Mutex::default(),
            limits: ServeLimits::default(),
        }
    }

    /// The same, serving HTTP connections within `limits` (the outbound listener's).
    pub fn serving_within(self, limits: ServeLimits) -> Self {
        Self { limits, ..self }
    }

    /// Handles one connection accepted by the outbound listener: the app's proxy requests, or
    /// a captured connection (see the module's documentation).
    pub async fn outbound(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        http: impl HttpStack,
        opaque: impl OpaqueStack,
    ) {
        let original = original_dst::redirected_from(&stream);
        if original.is_some() && self.is_own_dial(peer) {
            let dest = original.map(|d| d.to_string()).unwrap_or_default();
            return self.refuse_outbound(
                stream,
                peer,
                &format!(
                    "the sidecar's own connection to {dest} was captured again: run the sidecar \
                     as the uid given to `mesh init --proxy-uid`"
                ),
            );
        }
        match self.settings.outbound(original, peer) {
            Outbound::Proxy => {
                serve_connection_with(stream, peer, "outbound", self.limits, http).await
            }
            Outbound::Refused(why) => self.refuse_outbound(stream, peer, &why),
            Outbound::Passthrough(dest) => self.passthrough(stream, peer, dest).await,
            Outbound::Vip(dest) => match self.vips.lookup(dest.ip()).await {
                Ok(Some(target)) => {
                    self.to_service(stream, peer, dest, target, http, opaque)
                        .await
                }
                Ok(None) => self.refuse_outbound(
                    stream,
                    peer,
                    &format!(
                        "{dest} is in the mesh's VIP range but no service has it (a stale DNS \
                         answer, or the app used an address it made up)"
                    ),
                ),
                Err(e) => self.refuse_outbound(
                    stream,
                    peer,
                    &format!("cannot tell which mesh service {dest} is: {e}"),
                ),
            },
        }
    }

    /// Handles a connection that reached the inbound listener redirected from the app's port
    /// `original`: plaintext from outside the mesh.
    pub async fn inbound_plaintext(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        original: SocketAddr,
    ) {
        match self.settings.inbound(original) {
            Ok(app) => match self.dial(app).await {
                Ok(upstream) => {
                    self.metrics.count_captured("inbound", "passthrough");
                    tracing::debug!(%peer, %app, "plaintext from outside the mesh passed to the app");
                    splice(stream, upstream, "inbound plaintext").await;
                }
                Err(e) => {
                    self.metrics.count_captured("inbound", "refused");
                    tracing::warn!(%peer, %app, error = %e, "the app refused a plaintext connection");
                }
            },
            Err(why) => {
                self.metrics.count_captured("inbound", "refused");
                tracing::warn!(%peer, "captured inbound connection refused: {why}");
            }
        }
    }

    /// A captured connection to the VIP `dest` of `target`: HTTP through the stack, anything
    /// else as an opaque stream.
    async fn to_service(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        dest: SocketAddr,
        target: VipTarget,
        http: impl HttpStack,
        opaque: impl OpaqueStack,
    ) {
        let (prefix, sniffed) = match sniff(&mut stream).await {
            Ok(sniffed) => sniffed,
            Err(e) => {
                tracing::debug!(%peer, %dest, error = %e, "captured connection broke before a byte");
                return;
            }
        };
        let client = Replayed::new(prefix, stream);
        if sniffed == Sniffed::Http {
            self.metrics.count_captured("outbound", "http");
            let fact = CapturedVip(target);
            let stack = ServiceBuilder::new()
                .map_request(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(fact.clone());
                    req
                })
                .service(http);
            return serve_connection_with(client, peer, "outbound", self.limits, stack).await;
        }
        self.metrics.count_captured("outbound", "opaque");
        let authority = format!("{}:{}", target.host(), dest.port());
        let connect = Request::builder()
            .method(Method::CONNECT)
            .uri(authority.as_str())
            .extension(CapturedVip(target))
            .body(Empty::new());
        let Ok(connect) = connect else {
            tracing::warn!(%peer, %dest, authority, "cannot open an opaque stream to this name");
            return;
        };
        let Ok(mut rsp) = opaque.oneshot(connect).await;
        if rsp.status() != StatusCode::OK {
            let why = rsp
                .headers()
                .get(HEADER_MESH_ERROR)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string();
            tracing::warn!(%peer, %dest, authority, status = %rsp.status(), error = why,
                "the mesh could not open the opaque stream");
            return;
        }
        match hyper::upgrade::on(&mut rsp).await {
            Ok(upgraded) => splice(client, TokioIo::new(upgraded), "opaque").await,
            Err(e) => tracing::warn!(%peer, %dest, error = %e, "the opaque stream did not open"),
        }
    }

    /// Passes a captured connection through to where it was going.
    async fn passthrough(&self, stream: TcpStream, peer: SocketAddr, dest: SocketAddr) {
        match self.dial(dest).await {
            Ok(upstream) => {
                self.metrics.count_captured("outbound", "passthrough");
                let port = upstream.local_addr().map(|a| a.port()).ok();
                splice(stream, upstream, "passthrough").await;
                if let Some(port) = port {
                    self.own_dials_lock().remove(&port);
                }
            }
            Err(e) => {
                self.metrics.count_captured("outbound", "refused");
                tracing::warn!(%peer, %dest, error = %e, "passthrough destination unreachable");
            }
        }
    }

    /// Connects to `dest` from a socket whose port is known before the SYN leaves, so that a
    /// dial captured again is recognised.
    async fn dial(&self, dest: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = match dest {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        let any = match dest {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        };
        socket.bind(any)?;
        let port = socket.local_addr()?.port();
        self.own_dials_lock().insert(port);
        let connected = tokio::time::timeout(self.connect_timeout, socket.connect(dest)).await;
        let result = match connected {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {:?}", self.connect_timeout),
            )),
        };
        if result.is_err() {
            self.own_dials_lock().remove(&port);
        }
        let stream = result?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    fn is_own_dial(&self, peer: SocketAddr) -> bool {
        self.own_dials_lock().contains(&peer.port())
    }

    fn own_dials_lock(&self) -> std::sync::MutexGuard<'_, HashSet<u16>> {
        self.own_dials.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses a captured outbound connection: logged once with `why`, counted; an HTTP/1
    /// client that has sent its request line gets a 502 saying why.
    fn refuse_outbound(&self, stream: TcpStream, peer: SocketAddr, why: &str) {
        self.metrics.count_captured("outbound", "refused");
        tracing::warn!(%peer, "captured connection refused: {why}");
        let answer = format!(
            "HTTP/1.1 502 Bad Gateway\r\n{HEADER_MESH_ERROR}: refused\r\ncontent-type: text/plain\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{why}\n",
            why.len() + 1
        );
        tokio::spawn(async move {
            let mut stream = stream;
            if let Ok((prefix, Sniffed::Http)) = sniff(&mut stream).await
                && !prefix.starts_with(b"PRI")
            {
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
                // Read what the client still sends, so closing does not reset the answer away.
                let mut sink = tokio::io::sink();
                let drain = tokio::io::copy(&mut stream, &mut sink);
                let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
            }
        });
    }
}
