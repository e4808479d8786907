//! Forwarding names outside `clusterset.local` to the upstream resolvers of `--dns-upstream`,
//! so the controller can be a pod's only resolver. Nothing is cached: every forwarded query is
//! asked upstream (a caching resolver in front, such as the cluster's CoreDNS, caches).
//!
//! Bounds: at most [`ForwardSettings::max_inflight`] queries are being forwarded at once (more
//! are answered SERVFAIL at once and counted as `overloaded`); each query gets
//! [`ForwardSettings::timeout`] in all, split evenly over `max(2, upstreams)` tries, so every
//! upstream is tried once and a single one twice; then SERVFAIL. A try goes to the next
//! upstream, starting with the one that answered last.
//!
//! Each try sends the client's packet under a fresh random id from a fresh socket (a random
//! source port), over UDP when the client came over UDP (asking the same upstream again over
//! TCP when it answers TC), over TCP when the client came over TCP. Responses that do not
//! answer the try (another id or question) are ignored.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use mesh_core::host_port::HostPorts;

use super::answer::Transport;
use super::relay::{ForwardQuery, UpstreamAnswer};
use crate::config::ControllerArgs;
use crate::error::FederationError;
use crate::metrics::Metrics;

/// The largest UDP datagram an upstream may answer with (the client's EDNS size travels as
/// received, so a response can be larger than what the client is then given).
const MAX_UDP_DATAGRAM: usize = 65_535;

/// How forwarding is configured (`--dns-upstream`, `--dns-forward-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSettings {
    /// The upstream resolvers, in order of preference.
    pub upstreams: Vec<SocketAddr>,
    /// How long one query may take in all, every try included.
    pub timeout: Duration,
    /// At most this many queries forwarded at once.
    pub max_inflight: usize,
}

impl ForwardSettings {
    /// The checked `--dns-upstream` and `--dns-forward-*` flags.
    pub(crate) fn from_args(args: &ControllerArgs) -> Result<ForwardSettings, FederationError> {
        let config = |flag, reason: String| FederationError::Config { flag, reason };
        let mut upstreams = Vec::new();
        for entry in args.dns_upstream.iter().flat_map(HostPorts::iter) {
            let Some(ip) = entry.ip() else {
                return Err(config(
                    "dns-upstream",
                    format!(
                        "{entry} names its host; an upstream resolver must be an IP address \
                         (resolving its name would need a resolver)"
                    ),
                ));
            };
            let addr = SocketAddr::new(ip, entry.port());
            if addr.port() == 0 || ip.is_unspecified() {
                return Err(config(
                    "dns-upstream",
                    format!("{addr} is not an address a resolver can be asked at"),
                ));
            }
            if addr == args.dns {
                return Err(config(
                    "dns-upstream",
                    format!("{addr} is this server's own --dns address: every query would loop"),
                ));
            }
            if upstreams.contains(&addr) {
                return Err(config("dns-upstream", format!("{addr} is listed twice")));
            }
            upstreams.push(addr);
        }
        if args.dns_forward_timeout < Duration::from_millis(100)
            || args.dns_forward_timeout > Duration::from_secs(30)
        {
            return Err(config(
                "dns-forward-timeout",
                "must be 100ms to 30s (2s is the default)".into(),
            ));
        }
        if args.dns_forward_max_inflight == 0 {
            return Err(config(
                "dns-forward-max-inflight",
                "must be above 0 (512 is the default)".into(),
            ));
        }
        Ok(ForwardSettings {
            upstreams,
            timeout: args.dns_forward_timeout,
            max_inflight: args.dns_forward_max_inflight,
        })
    }
}

/// Why one try got no usable answer.
#[derive(Debug, thiserror::Error)]
enum TryError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the TCP response does not answer the query")]
    Mismatch,
}

impl TryError {
    fn label(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Io(_) => "error",
            Self::Mismatch => "mismatch",
        }
    }
}

/// Forwards queries to the upstreams, bounded.
#[derive(Debug)]
pub(crate) struct Forwarder {
    upstreams: Vec<SocketAddr>,
    tries: usize,
    per_try: Duration,
    slots: Arc<Semaphore>,
    /// Index of the upstream that answered last: the next query starts there.
    preferred: AtomicUsize,
}

/// A place among the queries being forwarded; freed when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Forwarder {
    /// A forwarder to `settings`' upstreams, `None` when there are none.
    pub(crate) fn new(settings: &ForwardSettings) -> Option<Arc<Self>> {
        if settings.upstreams.is_empty() {
            return None;
        }
        let tries = settings.upstreams.len().max(2);
        let per_try = settings.timeout / u32::try_from(tries).unwrap_or(u32::MAX);
        Some(Arc::new(Self {
            upstreams: settings.upstreams.clone(),
            tries,
            per_try,
            slots: Arc::new(Semaphore::new(settings.max_inflight)),
            preferred: AtomicUsize::new(0),
        }))
    }

    /// A place for one more forwarded query, `None` (counted) when all are taken.
    pub(crate) fn admit(&self, metrics: &Metrics) -> Option<Slot> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Some(Slot { _permit: permit }),
            Err(_) => {
                metrics.dns_forward("overloaded");
                None
            }
        }
    }

    /// The first upstream response that answers `query` (still under the try's id), or `None`
    /// when every try failed. The caller holds the query's [`Slot`] meanwhile.
    pub(crate) async fn forward(
        &self,
        query: &ForwardQuery,
        transport: Transport,
        metrics: &Metrics,
    ) -> Option<Vec<u8>> {
        let first = self.preferred.load(Ordering::Relaxed);
        for n in 0..self.tries {
            let index = (first + n) % self.upstreams.len();
            let upstream = self.upstreams[index];
            let attempt =
                tokio::time::timeout(self.per_try, Self::ask(upstream, query, transport, metrics));
            let error = match attempt.await {
                Ok(Ok(response)) => {
                    metrics.dns_upstream_try(upstream, "answered");
                    metrics.dns_forward("answered");
                    self.preferred.store(index, Ordering::Relaxed);
                    return Some(response);
                }
                Ok(Err(error)) => error,
                Err(_) => TryError::Timeout(self.per_try),
            };
            metrics.dns_upstream_try(upstream, error.label());
            tracing::debug!(%upstream, %error, try_number = n + 1, "DNS upstream try failed");
        }
        metrics.dns_forward("failed");
        None
    }

    /// One try at `upstream`.
    async fn ask(
        upstream: SocketAddr,
        query: &ForwardQuery,
        transport: Transport,
        metrics: &Metrics,
    ) -> Result<Vec<u8>, TryError> {
        if transport == Transport::Udp {
            let id = rand::random();
            let response = ask_udp(upstream, &query.upstream_packet(id), query, id).await?;
            if query.accept(&response, id) != Some(UpstreamAnswer::Truncated) {
                return Ok(response);
            }
            metrics.dns_upstream_try(upstream, "truncated");
        }
        let id = rand::random();
        ask_tcp(upstream, &query.upstream_packet(id), query, id).await
    }
}

/// Sends `packet` from a fresh socket and waits for the datagram that answers it.
async fn ask_udp(
    upstream: SocketAddr,
    packet: &[u8],
    query: &ForwardQuery,
    id: u16,
) -> Result<Vec<u8>, TryError> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: only the upstream's datagrams arrive, and a closed port is an error at once.
    socket.connect(upstream).await?;
    socket.send(packet).await?;
    let mut buf = vec![0u8; MAX_UDP_DATAGRAM];
    loop {
        let len = socket.recv(&mut buf).await?;
        if query.accept(&buf[..len], id).is_some() {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

/// Sends `packet` over a new TCP connection (RFC 1035 framing) and reads the response.
async fn ask_tcp(
    upstream: SocketAddr,
    packet: &[u8],
    query: &ForwardQuery,
    id: u16,
) -> Result<Vec<u8>, TryError> {
    let mut stream = TcpStream::connect(upstream).await?;
    // Queries are at most `answer::MAX_REQUEST` bytes, far below what the framing holds.
    let len = u16::try_from(packet.len())
        .map_err(|_| std::io::Error::other("query longer than TCP framing allows"))?;
    let mut framed = Vec::with_capacity(packet.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await?;
    let len = usize::from(stream.read_u16().await?);
    let mut response = vec![0u8; len];
    stream.read_exact(&mut response).await?;
    match query.accept(&response, id) {
        Some(UpstreamAnswer::Complete) => Ok(response),
        // TC over TCP: a response the framing could not hold; the client gets it truncated.
        Some(UpstreamAnswer::Truncated) => Ok(response),
        None => Err(TryError::Mismatch),
    }
}
