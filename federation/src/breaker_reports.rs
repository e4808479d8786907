//! Circuit-breaker reports of the cluster's own sidecars: each sidecar `PUT`s its full breaker
//! state every few seconds; a report replaces the sidecar's previous one and expires when not
//! renewed, so a sidecar that died stops voting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use mesh_core::api::{BreakerReport, ReportedBreakerState};
use mesh_core::names::{ServiceKey, check_label};

/// A report not renewed for this long no longer counts: sidecars re-send every few seconds.
pub(crate) const BREAKER_REPORT_TTL: Duration = Duration::from_secs(10);
/// Most breakers one report may carry: a sidecar holds one per (service, cluster) it calls.
const MAX_BREAKERS_PER_REPORT: usize = 10_000;
/// Longest reporter id.
const MAX_REPORTER_LEN: usize = 253;

/// How the own sidecars see one (service, cluster).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BreakerCount {
    /// Sidecars reporting the breaker open or half-open.
    pub open: u32,
    /// Sidecars reporting on it at all.
    pub reporters: u32,
}

impl BreakerCount {
    /// Whether strictly more than `quorum` of the reporters see the breaker open (the rule of
    /// `locality::locality_order`).
    pub(crate) fn quorum_open(&self, quorum: f64) -> bool {
        self.reporters > 0 && f64::from(self.open) > quorum * f64::from(self.reporters)
    }
}

/// Breaker counts by (service, cluster).
pub(crate) type BreakerTally = BTreeMap<(ServiceKey, String), BreakerCount>;

/// The live reports, by (reporting identity, reporter id): a workload can only replace the
/// reports sent under its own certificate.
#[derive(Debug)]
pub(crate) struct BreakerReports {
    ttl: Duration,
    reports: HashMap<(String, String), (BreakerReport, Instant)>,
}

impl BreakerReports {
    /// An empty store whose reports expire `ttl` after their last renewal.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            reports: HashMap::new(),
        }
    }

    /// Replaces the previous report of `report.reporter` sent by `identity`.
    pub(crate) fn put(
        &mut self,
        identity: &str,
        report: BreakerReport,
        now: Instant,
    ) -> Result<(), String> {
        let id = &report.reporter;
        if id.is_empty() || id.len() > MAX_REPORTER_LEN || id.chars().any(char::is_control) {
            return Err(format!(
                "reporter must be 1 to {MAX_REPORTER_LEN} printable characters"
            ));
        }
        if report.breakers.len() > MAX_BREAKERS_PER_REPORT {
            return Err(format!(
                "a report carries at most {MAX_BREAKERS_PER_REPORT} breakers, this one {}",
                report.breakers.len()
            ));
        }
        for b in &report.breakers {
            check_label(&b.cluster)
                .map_err(|e| format!("breaker of {}: cluster: {e}", b.service))?;
        }
        let key = (identity.to_string(), report.reporter.clone());
        self.reports.insert(key, (report, now));
        Ok(())
    }

    /// Drops reports not renewed within the TTL; returns how many were dropped.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let before = self.reports.len();
        let ttl = self.ttl;
        self.reports
            .retain(|_, (_, at)| now.duration_since(*at) < ttl);
        before - self.reports.len()
    }

    /// Counts the live reports at `now`; a reporter counts once per (service, cluster).
    pub(crate) fn tally(&self, now: Instant) -> BreakerTally {
        let mut tally = BreakerTally::new();
        for (report, at) in self.reports.values() {
            if now.duration_since(*at) >= self.ttl {
                continue;
            }
            let mut seen = BTreeSet::new();
            for b in &report.breakers {
                let key = (b.service.clone(), b.cluster.clone());
                // Half-open means the sidecar is probing the locality: counting it as open would
                // publish health 0, starve the probes and keep the breaker from ever closing. A
                // state of a later release is not open either (see `ReportedBreakerState`).
                let open = b.state == ReportedBreakerState::Open;
                if !seen.insert(key.clone()) {
                    continue;
                }
                let count = tally.entry(key).or_default();
                count.reporters += 1;
                count.open += u32::from(open);
            }
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::api::BreakerObservation;
    use mesh_core::breaker::BreakerState;

    use super::*;

    fn report(reporter: &str, states: &[(&str, BreakerState)]) -> BreakerReport {
        BreakerReport {
            reporter: reporter.into(),
            breakers: states
                .iter()
                .map(|(cluster, state)| BreakerObservation {
                    service: "echo.demo".parse().unwrap(),
                    cluster: (*cluster).into(),
                    state: (*state).into(),
                })
                .collect(),
        }
    }

    const ID: &str = "spiffe://us-east.mesh/ns/demo/sa/client";

    fn key(cluster: &str) -> (ServiceKey, String) {
        ("echo.demo".parse().unwrap(), cluster.into())
    }

    #[test]
    fn reports_replace_each_other_and_expire() {
        let t0 = Instant::now();
        let mut store = BreakerReports::new(BREAKER_REPORT_TTL);
        store
            .put(ID, report("a", &[("us-east", BreakerState::Open)]), t0)
            .unwrap();
        store
            .put(
                ID,
                report(
                    "b",
                    &[
                        ("us-east", BreakerState::HalfOpen),
                        ("eu", BreakerState::Closed),
                    ],
                ),
                t0,
            )
            .unwrap();
        let tally = store.tally(t0);
        assert_eq!(
            tally[&key("us-east")],
            BreakerCount {
                open: 1,
                reporters: 2
            }
        );
        assert_eq!(
            tally[&key("eu")],
            BreakerCount {
                open: 0,
                reporters: 1
            }
        );
        // "a" recovers: its new report replaces the old one ("b" is half-open: probing).
        let t5 = t0 + Duration::from_secs(5);
        store
            .put(ID, report("a", &[("us-east", BreakerState::Closed)]), t5)
            .unwrap();
        assert_eq!(
            store.tally(t5)[&key("us-east")],
            BreakerCount {
                open: 0,
                reporters: 2
            }
        );
        // "b" stops reporting: after the TTL only "a" counts.
        let t10 = t0 + BREAKER_REPORT_TTL;
        assert_eq!(
            store.tally(t10)[&key("us-east")],
            BreakerCount {
                open: 0,
                reporters: 1
            }
        );
        assert_eq!(store.expire(t10), 1);
    }

    #[test]
    fn quorum_needs_strictly_more_than_the_share() {
        assert!(
            !BreakerCount {
                open: 1,
                reporters: 2
            }
            .quorum_open(0.5)
        );
        assert!(
            BreakerCount {
                open: 2,
                reporters: 3
            }
            .quorum_open(0.5)
        );
        assert!(
            !BreakerCount {
                open: 0,
                reporters: 0
            }
            .quorum_open(0.5)
        );
    }

    #[test]
    fn malformed_reports_are_refused() {
        let mut store = BreakerReports::new(BREAKER_REPORT_TTL);
        let now = Instant::now();
        assert!(store.put(ID, report("", &[]), now).is_err());
        assert!(
            store
                .put(ID, report("a", &[("Not A Label", BreakerState::Open)]), now)
                .is_err()
        );
        assert!(store.tally(now).is_empty());
    }
}
