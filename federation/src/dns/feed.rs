//! Keeps the served zone in step with the controller: rebuilt from every cluster's exports
//! on each published view (a peer's catalog arriving or withdrawn changes the view) and every
//! [`REFRESH`] (a peer may change only its ports, which the view does not carry), with new
//! VIP allocations recorded before they are served.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::vip::VipTable;
use super::vip_store::VipStore;
use super::zone::Zone;
use crate::controller::Controller;

/// How often the zone is rebuilt even when no view was published.
const REFRESH: Duration = Duration::from_secs(2);

/// Builds zones for the server.
#[derive(Debug)]
pub(crate) struct ZoneFeed {
    controller: Arc<Controller>,
    vips: Arc<Mutex<VipTable>>,
    store: VipStore,
    ttl: u32,
    saved: BTreeMap<String, Ipv4Addr>,
}

impl ZoneFeed {
    /// A feed over `controller`'s state, allocating in `vips` and recording in `store`.
    pub(crate) fn new(
        controller: Arc<Controller>,
        vips: Arc<Mutex<VipTable>>,
        store: VipStore,
        ttl: u32,
    ) -> Self {
        let saved = vips
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .records()
            .clone();
        Self {
            controller,
            vips,
            store,
            ttl,
            saved,
        }
    }

    /// The zone of the current state.
    pub(crate) fn build(&mut self) -> Zone {
        let exporters = self.controller.read(|s, _| s.exporters());
        let version = self.controller.subscribe().borrow().version;
        let serial = u32::try_from(version % (1 << 32)).unwrap_or(1);
        let (zone, records) = {
            let mut vips = self.vips.lock().unwrap_or_else(|p| p.into_inner());
            let zone = Zone::build(&exporters, &mut vips, self.ttl, serial);
            (zone, vips.records().clone())
        };
        if records != self.saved {
            match self.store.save(&records) {
                Ok(()) => self.saved = records,
                Err(error) => tracing::warn!(%error, "VIP allocations not recorded; retrying"),
            }
        }
        zone
    }

    /// Publishes a new zone on `zones` whenever it changes, until shutdown.
    pub(crate) async fn run(mut self, zones: watch::Sender<Arc<Zone>>) {
        let mut views = self.controller.subscribe();
        let mut shutdown = self.controller.shutdown_signal();
        loop {
            tokio::select! {
                changed = views.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(REFRESH) => {}
                _ = shutdown.changed() => return,
            }
            let zone = self.build();
            zones.send_if_modified(|current| {
                if **current == zone {
                    return false;
                }
                *current = Arc::new(zone);
                true
            });
        }
    }
}
