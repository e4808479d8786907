//! Peer catalogs under lease and the gateway's view of the links: what each linked cluster
//! exports, whether its link is up, and how far away it is.
//!
//! The gateway is the only witness of the links. It reports every second; if it falls silent
//! for [`GATEWAY_REPORT_TIMEOUT`] it is considered gone and every link down, so the peers'
//! catalogs start their lease grace instead of attracting traffic nobody can carry.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mesh_core::api::{GatewayReport, PeerLinkStatus};
use mesh_core::catalog::{CatalogError, CatalogMessage};
use mesh_core::peer_catalogs::{PeerCatalog, PeerCatalogs};

/// Three missed one-second reports: the gateway is gone.
pub(crate) const GATEWAY_REPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// RTT changes smaller than this are not published (loopback and LAN jitter).
const RTT_FLOOR: Duration = Duration::from_millis(1);
/// RTT changes smaller than this share of the published value are not published.
const RTT_SHARE: f64 = 0.2;

/// A link's state as `mesh status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Connected.
    Up,
    /// Not connected; the catalog, if any, is kept under lease.
    Down,
    /// The lease ran out and the catalog was withdrawn.
    Withdrawn,
}

impl LinkState {
    /// The word used in [`mesh_core::api::LinkStatusView`].
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Down => "down",
            LinkState::Withdrawn => "withdrawn",
        }
    }
}

#[derive(Debug, Clone)]
struct LastReport {
    report: GatewayReport,
    at: Instant,
}

/// Peer catalogs, link states and the gateway's reports.
#[derive(Debug)]
pub(crate) struct Peering {
    catalogs: PeerCatalogs,
    withdrawn: BTreeSet<String>,
    last_report: Option<LastReport>,
    /// The RTT published per peer: it only follows the measurement when it moves by more than
    /// the jitter band, so a one-second report does not republish every sidecar's routes.
    published_rtt: HashMap<String, Duration>,
}

impl Peering {
    /// Empty, with catalogs leased for `grace` after their link drops.
    pub(crate) fn new(grace: Duration) -> Self {
        Self {
            catalogs: PeerCatalogs::new(grace),
            withdrawn: BTreeSet::new(),
            last_report: None,
            published_rtt: HashMap::new(),
        }
    }

    /// Applies a catalog message from linked `peer`.
    pub(crate) fn apply(&mut self, peer: &str, msg: &CatalogMessage) -> Result<(), CatalogError> {
        self.catalogs.apply(peer, msg)?;
        self.withdrawn.remove(peer);
        Ok(())
    }

    /// Records a gateway report: addresses, and the link state of every linked peer (a linked
    /// peer the report does not mention is down: the gateway does not know of it yet).
    pub(crate) fn gateway_report<'a>(
        &mut self,
        report: GatewayReport,
        linked: impl Iterator<Item = &'a str>,
        now: Instant,
    ) {
        for peer in linked {
            let up = report.peers.iter().any(|p| p.cluster == peer && p.up);
            self.catalogs.set_link(peer, up, now);
        }
        // RTTs of peers not linked yet are kept too, so a new link starts with one.
        for status in &report.peers {
            let measured = status.rtt_seconds.map(Duration::from_secs_f64);
            let published = self.published_rtt.get(&status.cluster).copied();
            if let Some(rtt) = stable_rtt(published, measured) {
                self.published_rtt.insert(status.cluster.clone(), rtt);
            }
        }
        self.last_report = Some(LastReport { report, at: now });
    }

    /// Marks every link down if the gateway fell silent, then withdraws the catalogs whose
    /// lease ran out; returns the withdrawn peers.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<String> {
        if !self.gateway_alive(now) {
            let peers: Vec<String> = self.catalogs.iter().map(|(p, _)| p.clone()).collect();
            for peer in peers {
                self.catalogs.set_link(&peer, false, now);
            }
        }
        let expired = self.catalogs.expire(now);
        self.withdrawn.extend(expired.iter().cloned());
        expired
    }

    /// Forgets everything about `peer` (unlink).
    pub(crate) fn forget(&mut self, peer: &str) {
        self.catalogs.remove(peer);
        self.withdrawn.remove(peer);
        self.published_rtt.remove(peer);
    }

    /// Whether the gateway reported within [`GATEWAY_REPORT_TIMEOUT`].
    pub(crate) fn gateway_alive(&self, now: Instant) -> bool {
        self.last_report
            .as_ref()
            .is_some_and(|r| now.duration_since(r.at) < GATEWAY_REPORT_TIMEOUT)
    }

    /// The gateway's QUIC address from its last report, however old.
    pub(crate) fn gateway_quic_addr(&self) -> Option<SocketAddr> {
        self.last_report.as_ref().map(|r| r.report.quic_addr)
    }

    /// The gateway's tunnel address from its last report, however old.
    pub(crate) fn gateway_tunnel_addr(&self) -> Option<SocketAddr> {
        self.last_report.as_ref().map(|r| r.report.tunnel_addr)
    }

    /// The gateway's last word on `peer`, and how long ago it was said.
    pub(crate) fn reported(&self, peer: &str, now: Instant) -> Option<(&PeerLinkStatus, Duration)> {
        let last = self.last_report.as_ref()?;
        let status = last.report.peers.iter().find(|p| p.cluster == peer)?;
        Some((status, now.duration_since(last.at)))
    }

    /// The held catalog of `peer`.
    pub(crate) fn catalog(&self, peer: &str) -> Option<&PeerCatalog> {
        self.catalogs.get(peer)
    }

    /// The RTT to publish for `peer`.
    pub(crate) fn rtt(&self, peer: &str) -> Option<Duration> {
        self.published_rtt.get(peer).copied()
    }

    /// The state of the link to `peer`.
    pub(crate) fn link_state(&self, peer: &str, now: Instant) -> LinkState {
        if let Some(held) = self.catalogs.get(peer) {
            return if held.link_up {
                LinkState::Up
            } else {
                LinkState::Down
            };
        }
        let reported_up =
            self.gateway_alive(now) && self.reported(peer, now).is_some_and(|(s, _)| s.up);
        if reported_up {
            LinkState::Up
        } else if self.withdrawn.contains(peer) {
            LinkState::Withdrawn
        } else {
            LinkState::Down
        }
    }
}

/// The RTT to publish: the measurement when it moved out of the jitter band around the
/// published value, else the published value.
fn stable_rtt(published: Option<Duration>, measured: Option<Duration>) -> Option<Duration> {
    match (published, measured) {
        (None, m) => m,
        (p, None) => p,
        (Some(p), Some(m)) => {
            let band = RTT_FLOOR.max(p.mul_f64(RTT_SHARE));
            let moved = m.abs_diff(p);
            Some(if moved > band { m } else { p })
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::catalog::ExportCatalog;

    use super::*;

    fn report(peers: &[(&str, bool, Option<f64>)]) -> GatewayReport {
        GatewayReport {
            quic_addr: "127.0.0.1:7000".parse().unwrap(),
            tunnel_addr: "127.0.0.1:7001".parse().unwrap(),
            peers: peers
                .iter()
                .map(|(c, up, rtt)| PeerLinkStatus {
                    cluster: (*c).into(),
                    up: *up,
                    rtt_seconds: *rtt,
                    loss: 0.0,
                    last_error: None,
                })
                .collect(),
        }
    }

    fn snapshot(cluster: &str) -> CatalogMessage {
        CatalogMessage::Snapshot {
            catalog: ExportCatalog::new(cluster),
        }
    }

    #[test]
    fn a_silent_gateway_takes_every_link_down_then_the_lease_withdraws() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(30);
        let mut p = Peering::new(grace);
        p.apply("eu", &snapshot("eu")).unwrap();
        p.gateway_report(report(&[("eu", true, Some(0.01))]), ["eu"].into_iter(), t0);
        assert!(p.tick(t0 + Duration::from_secs(2)).is_empty());
        assert_eq!(p.link_state("eu", t0), LinkState::Up);
        let silent = t0 + GATEWAY_REPORT_TIMEOUT;
        assert!(p.tick(silent).is_empty());
        assert_eq!(p.link_state("eu", silent), LinkState::Down);
        assert!(p.tick(silent + grace - Duration::from_millis(1)).is_empty());
        assert_eq!(p.tick(silent + grace), vec!["eu".to_string()]);
        assert_eq!(p.link_state("eu", silent + grace), LinkState::Withdrawn);
        // A new snapshot after reconnecting brings it back.
        p.apply("eu", &snapshot("eu")).unwrap();
        assert_eq!(p.link_state("eu", silent + grace), LinkState::Up);
    }

    #[test]
    fn linked_peers_missing_from_a_report_are_down() {
        let t0 = Instant::now();
        let mut p = Peering::new(Duration::from_secs(30));
        p.apply("eu", &snapshot("eu")).unwrap();
        p.gateway_report(report(&[]), ["eu"].into_iter(), t0);
        assert_eq!(p.link_state("eu", t0), LinkState::Down);
        assert_eq!(
            p.gateway_tunnel_addr(),
            Some("127.0.0.1:7001".parse().unwrap())
        );
    }

    #[test]
    fn rtt_ignores_jitter_but_follows_real_moves() {
        let ms = Duration::from_millis;
        assert_eq!(stable_rtt(None, Some(ms(10))), Some(ms(10)));
        assert_eq!(stable_rtt(Some(ms(10)), Some(ms(11))), Some(ms(10)));
        assert_eq!(stable_rtt(Some(ms(10)), Some(ms(13))), Some(ms(13)));
        assert_eq!(stable_rtt(Some(ms(10)), None), Some(ms(10)));
        let us = Duration::from_micros;
        assert_eq!(
            stable_rtt(Some(us(100)), Some(us(900))),
            Some(us(100)),
            "loopback jitter"
        );
    }
}
