//! The controller's DNS server, authoritative for `clusterset.local` (see ARCHITECTURE.md,
//! "DNS"): the zone is computed from every linked cluster's catalog and this controller's VIP
//! allocations and served over UDP and TCP on `--dns`.
//!
//! - `vip.rs`: VIP allocation (pure): hash of the name into the range, linear probing;
//! - `vip_store.rs`: where allocations are recorded (state directory or `ServiceImport`s);
//! - `zone.rs`: the zone's records and lookups (pure);
//! - `answer.rs`: one packet in, one response out (or a query to forward), with every rcode
//!   rule and bound (pure);
//! - `relay.rs`: a forwarded query's ids, which upstream responses answer it, what the client
//!   gets back (pure);
//! - `forward.rs`: asking the upstream resolvers (`--dns-upstream`), bounded in time and
//!   number;
//! - `rate.rs`: the per-client token buckets (pure, clock injected);
//! - `feed.rs`: rebuilding the zone as the controller's view changes;
//! - `listener.rs`: the UDP and TCP sockets.
//!
//! Names outside the zone are forwarded when upstreams are configured, refused otherwise.

mod answer;
mod feed;
mod forward;
mod listener;
mod rate;
mod relay;
pub(crate) mod vip;
pub(crate) mod vip_store;
mod zone;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::controller::Controller;
use feed::ZoneFeed;
pub use forward::ForwardSettings;
use forward::Forwarder;
use listener::Responder;
use rate::ClientRateLimit;
pub(crate) use vip::VipTable;
pub(crate) use vip_store::VipStore;

/// At most this many clients have a rate-limit bucket at once.
const MAX_CLIENTS: usize = 10_000;

/// How the DNS server is configured (`--dns*` and `--vip-range*` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The UDP and TCP address.
    pub addr: SocketAddr,
    /// TTL of every record and of negative answers.
    pub ttl: Duration,
    /// Queries per second each client may send on average (0: unlimited); bursts of twice as
    /// many pass.
    pub client_qps: u32,
    /// The VIP range.
    pub(crate) range: vip::VipRange,
    /// The IPv6 mirror of the range, for AAAA records.
    pub(crate) v6: Option<vip::Vip6Range>,
    /// Where names outside the zone are forwarded (no upstreams: they are refused).
    pub forward: ForwardSettings,
}

impl DnsSettings {
    /// An empty VIP table over the configured ranges.
    pub(crate) fn vip_table(&self) -> VipTable {
        VipTable::new(self.range, self.v6)
    }
}

/// A started DNS server.
#[derive(Debug)]
pub(crate) struct RunningDns {
    /// The bound address (UDP and TCP).
    pub addr: SocketAddr,
    /// Its tasks (they end at the controller's shutdown).
    pub tasks: Vec<JoinHandle<()>>,
}

/// Binds and starts serving the zone of `controller`, allocating in `vips`, recording in
/// `store`.
pub(crate) async fn start(
    settings: &DnsSettings,
    controller: Arc<Controller>,
    vips: Arc<Mutex<VipTable>>,
    store: VipStore,
) -> std::io::Result<RunningDns> {
    let ttl = u32::try_from(settings.ttl.as_secs()).unwrap_or(u32::MAX);
    let mut feed = ZoneFeed::new(controller.clone(), vips, store, ttl);
    let (zones, zone_rx) = watch::channel(Arc::new(feed.build()));
    let (udp, tcp) = listener::bind(settings.addr).await?;
    let addr = udp.local_addr()?;
    let limit = ClientRateLimit::new(
        settings.client_qps,
        settings.client_qps.saturating_mul(2),
        MAX_CLIENTS,
    );
    let responder = Responder::new(
        zone_rx,
        limit,
        controller.clone(),
        Forwarder::new(&settings.forward),
    );
    let shutdown = controller.shutdown_signal();
    let tasks = vec![
        tokio::spawn(feed.run(zones)),
        tokio::spawn(listener::serve_udp(
            Arc::new(udp),
            responder.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(listener::serve_tcp(tcp, responder, shutdown)),
    ];
    Ok(RunningDns { addr, tasks })
}
