//! The DNS server's sockets: UDP and TCP on one address, each query rate-limited per client,
//! answered by [`answer::handle`](super::answer::handle) from the current zone, or forwarded
//! to the upstreams (`forward.rs`) off the receive loop, and counted.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};

use super::answer::{self, Decision, MAX_REQUEST, OutsideZone, Transport};
use super::forward::{Forwarder, Slot};
use super::rate::ClientRateLimit;
use super::relay::ForwardQuery;
use super::zone::Zone;
use crate::controller::Controller;

/// At most this many TCP connections at once; more wait in the accept queue.
const MAX_TCP_CONNECTIONS: usize = 128;
/// A TCP connection idle (or trickling a message) this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What every query is answered with.
#[derive(Debug)]
pub(crate) struct Responder {
    zones: watch::Receiver<Arc<Zone>>,
    limit: Mutex<ClientRateLimit>,
    controller: Arc<Controller>,
    forwarder: Option<Arc<Forwarder>>,
}

/// What to do about one packet.
enum Reply {
    /// Send this now (`None`: stay silent).
    Now(Option<Vec<u8>>),
    /// Ask the upstreams first ([`Responder::forward`]).
    Forward(Forwarding),
}

/// A query admitted for forwarding.
pub(crate) struct Forwarding {
    query: ForwardQuery,
    slot: Slot,
    started: Instant,
}

impl Responder {
    /// Answers from `zones`, limiting each client with `limit`, forwarding names outside the
    /// zone with `forwarder` (refusing them without), counting in `controller`'s metrics.
    pub(crate) fn new(
        zones: watch::Receiver<Arc<Zone>>,
        limit: ClientRateLimit,
        controller: Arc<Controller>,
        forwarder: Option<Arc<Forwarder>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            zones,
            limit: Mutex::new(limit),
            controller,
            forwarder,
        })
    }

    /// What to do about `packet` from `client`.
    fn respond(&self, packet: &[u8], client: IpAddr, transport: Transport) -> Reply {
        let started = Instant::now();
        let metrics = self.controller.metrics();
        let allowed = self
            .limit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow(client, started);
        if !allowed {
            metrics.dns_query("unknown", "ratelimited");
            return Reply::Now(None);
        }
        let zone = self.zones.borrow().clone();
        let outside = match self.forwarder {
            Some(_) => OutsideZone::Forward,
            None => OutsideZone::Refuse,
        };
        let handled = match answer::handle(packet, &zone, transport, outside) {
            Decision::Answer(handled) => handled,
            Decision::Forward(query) => {
                match self.forwarder.as_ref().and_then(|f| f.admit(metrics)) {
                    Some(slot) => {
                        return Reply::Forward(Forwarding {
                            query,
                            slot,
                            started,
                        });
                    }
                    None => query.servfail(),
                }
            }
        };
        metrics.dns_query(handled.qtype, handled.rcode);
        metrics.dns_latency.observe(started.elapsed().as_secs_f64());
        Reply::Now(handled.response)
    }

    /// The response to a forwarded query: the upstreams' answer, or SERVFAIL.
    async fn forward(&self, forwarding: Forwarding, transport: Transport) -> Option<Vec<u8>> {
        let Forwarding {
            query,
            slot,
            started,
        } = forwarding;
        let metrics = self.controller.metrics();
        let answer = match &self.forwarder {
            Some(forwarder) => forwarder.forward(&query, transport, metrics).await,
            None => None,
        };
        drop(slot);
        let handled = match answer {
            Some(response) => query.relay(response, transport),
            None => query.servfail(),
        };
        metrics.dns_query(handled.qtype, handled.rcode);
        metrics.dns_latency.observe(started.elapsed().as_secs_f64());
        handled.response
    }
}

/// Binds UDP at `addr`, then TCP on the same address and port (with port 0, the one UDP got;
/// retried when that port is taken for TCP).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port free for both UDP and TCP")))
}

/// Serves UDP until shutdown.
pub(crate) async fn serve_udp(
    socket: Arc<UdpSocket>,
    responder: Arc<Responder>,
    mut shutdown: watch::Receiver<bool>,
) {
    // One byte more than accepted, so an oversize datagram is seen as such (and refused).
    let mut buf = vec![0u8; MAX_REQUEST + 1];
    loop {
        let (len, from) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(error) => {
                    // ICMP errors of earlier sends surface here on some systems; keep serving.
                    tracing::debug!(%error, "DNS UDP receive failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        match responder.respond(&buf[..len], from.ip(), Transport::Udp) {
            Reply::Now(Some(response)) => send(&socket, &response, from).await,
            Reply::Now(None) => {}
            Reply::Forward(forwarding) => {
                // Off the receive loop: a slow upstream must not hold up the zone's answers.
                // Bounded by the forwarder's slots and its timeout.
                let (socket, responder) = (socket.clone(), responder.clone());
                tokio::spawn(async move {
                    if let Some(response) = responder.forward(forwarding, Transport::Udp).await {
                        send(&socket, &response, from).await;
                    }
                });
            }
        }
    }
}

async fn send(socket: &UdpSocket, response: &[u8], to: SocketAddr) {
    if let Err(error) = socket.send_to(response, to).await {
        tracing::debug!(%error, client = %to, "DNS UDP send failed");
    }
}

/// Serves TCP (RFC 1035 two-byte length framing, several queries per connection) until
/// shutdown.
pub(crate) async fn serve_tcp(
    listener: TcpListener,
    responder: Arc<Responder>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, from) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::debug!(%error, "DNS TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let responder = responder.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = serve_connection(stream, from, &responder) => {}
                _ = stop.changed() => {}
            }
            drop(permit);
        });
    }
}

async fn serve_connection(mut stream: TcpStream, from: SocketAddr, responder: &Responder) {
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return;
        };
        let len = usize::from(len);
        if len > MAX_REQUEST {
            // Reading it to answer would be the unbounded work the limit is there to avoid.
            responder
                .controller
                .metrics()
                .dns_query("malformed", "dropped");
            return;
        }
        let Ok(Ok(_)) = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf[..len])).await
        else {
            return;
        };
        let response = match responder.respond(&buf[..len], from.ip(), Transport::Tcp) {
            Reply::Now(response) => response,
            Reply::Forward(forwarding) => responder.forward(forwarding, Transport::Tcp).await,
        };
        let Some(response) = response else {
            return;
        };
        let Ok(size) = u16::try_from(response.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(response.len() + 2);
        framed.extend_from_slice(&size.to_be_bytes());
        framed.extend_from_slice(&response);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
