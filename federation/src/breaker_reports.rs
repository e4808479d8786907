//! Circuit-breaker reports of the cluster's own sidecars: each sidecar `PUT`s its full breaker
//! state every few seconds; a report replaces the sidecar's previous one and expires when not
//! renewed, so a sidecar that died stops voting.
//!
//! Votes are per reporting identity (the SPIFFE ID of the caller's certificate), not per
//! report: one workload reporting under many workload ids still has one vote, so a single
//! compromised workload cannot fake a quorum. Replicas sharing an identity (a ServiceAccount)
//! vote together: the identity sees a breaker open when most of its live reports do. The
//! quorum's denominator is the identities reporting on the (service, cluster) too.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mesh_core::api::{BreakerReport, ReportedBreakerState};
use mesh_core::names::{ServiceKey, check_label};

/// A report not renewed for this long no longer counts: sidecars re-send every few seconds.
pub(crate) const BREAKER_REPORT_TTL: Duration = Duration::from_secs(10);
/// Most breakers one report may carry: a sidecar holds one per (service, cluster) it calls.
const MAX_BREAKERS_PER_REPORT: usize = 10_000;
/// Longest reporter id.
const MAX_REPORTER_LEN: usize = 253;
/// Most live reporter ids of one identity: replicas sharing a ServiceAccount each report, but
/// more than this is one workload inventing ids (its vote is one anyway; this bounds memory).
pub(crate) const MAX_REPORTERS_PER_IDENTITY: usize = 1_024;

/// How the own sidecars see one (service, cluster).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BreakerCount {
    /// Identities whose vote is open (most of their reports say open).
    pub open: u32,
    /// Identities reporting on it at all.
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

/// Why a report was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BreakerRefusal {
    /// The report itself is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The identity already has the most reporter ids it may have.
    #[error(
        "{identity} already reports under {MAX_REPORTERS_PER_IDENTITY} workload ids; a report \
         under another id is ignored (an identity has one vote whatever the number of ids)"
    )]
    TooManyReporters {
        /// The reporting identity.
        identity: String,
    },
}

/// One identity's live reports, by reporter id.
type IdentityReports = HashMap<String, (BreakerReport, Instant)>;

/// The live reports, by reporting identity, then reporter id: a workload can only replace the
/// reports sent under its own certificate.
#[derive(Debug)]
pub(crate) struct BreakerReports {
    ttl: Duration,
    reports: HashMap<String, IdentityReports>,
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
    ) -> Result<(), BreakerRefusal> {
        let invalid = |m: String| BreakerRefusal::Invalid(m);
        let id = &report.reporter;
        if id.is_empty() || id.len() > MAX_REPORTER_LEN || id.chars().any(char::is_control) {
            return Err(invalid(format!(
                "reporter must be 1 to {MAX_REPORTER_LEN} printable characters"
            )));
        }
        if report.breakers.len() > MAX_BREAKERS_PER_REPORT {
            return Err(invalid(format!(
                "a report carries at most {MAX_BREAKERS_PER_REPORT} breakers, this one {}",
                report.breakers.len()
            )));
        }
        for b in &report.breakers {
            check_label(&b.cluster)
                .map_err(|e| invalid(format!("breaker of {}: cluster: {e}", b.service)))?;
        }
        let ttl = self.ttl;
        let own = self.reports.entry(identity.to_string()).or_default();
        if !own.contains_key(&report.reporter) && own.len() >= MAX_REPORTERS_PER_IDENTITY {
            own.retain(|_, (_, at)| now.duration_since(*at) < ttl);
            if own.len() >= MAX_REPORTERS_PER_IDENTITY {
                return Err(BreakerRefusal::TooManyReporters {
                    identity: identity.to_string(),
                });
            }
        }
        own.insert(report.reporter.clone(), (report, now));
        Ok(())
    }

    /// Drops reports not renewed within the TTL; returns how many were dropped.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let ttl = self.ttl;
        let mut dropped = 0;
        self.reports.retain(|_, own| {
            let before = own.len();
            own.retain(|_, (_, at)| now.duration_since(*at) < ttl);
            dropped += before - own.len();
            !own.is_empty()
        });
        dropped
    }

    /// Counts the live reports at `now`: one vote per identity and (service, cluster).
    pub(crate) fn tally(&self, now: Instant) -> BreakerTally {
        let mut tally = BreakerTally::new();
        for own in self.reports.values() {
            for (key, (open, reports)) in identity_view(own, now, self.ttl) {
                let count = tally.entry(key).or_default();
                count.reporters += 1;
                // The identity's vote: open when strictly most of its reports say open.
                count.open += u32::from(2 * open > reports);
            }
        }
        tally
    }
}

/// How one identity's live reports see each (service, cluster): (open, reporting) counts,
/// each report counting once per (service, cluster).
fn identity_view(
    own: &IdentityReports,
    now: Instant,
    ttl: Duration,
) -> BTreeMap<(ServiceKey, String), (u32, u32)> {
    let mut view = BTreeMap::<(ServiceKey, String), (u32, u32)>::new();
    for (report, at) in own.values() {
        if now.duration_since(*at) >= ttl {
            continue;
        }
        let mut seen = std::collections::BTreeSet::new();
        for b in &report.breakers {
            let key = (b.service.clone(), b.cluster.clone());
            if !seen.insert(key.clone()) {
                continue;
            }
            // Half-open means the sidecar is probing the locality: counting it as open would
            // publish health 0, starve the probes and keep the breaker from ever closing. A
            // state of a later release is not open either (see `ReportedBreakerState`).
            let open = b.state == ReportedBreakerState::Open;
            let entry = view.entry(key).or_default();
            entry.0 += u32::from(open);
            entry.1 += 1;
        }
    }
    view
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
    const OTHER: &str = "spiffe://us-east.mesh/ns/demo/sa/web";

    fn key(cluster: &str) -> (ServiceKey, String) {
        ("echo.demo".parse().unwrap(), cluster.into())
    }

    fn count(open: u32, reporters: u32) -> BreakerCount {
        BreakerCount { open, reporters }
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
                OTHER,
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
        assert_eq!(tally[&key("us-east")], count(1, 2));
        assert_eq!(tally[&key("eu")], count(0, 1));
        // "a" recovers: its new report replaces the old one ("b" is half-open: probing).
        let t5 = t0 + Duration::from_secs(5);
        store
            .put(ID, report("a", &[("us-east", BreakerState::Closed)]), t5)
            .unwrap();
        assert_eq!(store.tally(t5)[&key("us-east")], count(0, 2));
        // "b" stops reporting: after the TTL only "a" counts.
        let t10 = t0 + BREAKER_REPORT_TTL;
        assert_eq!(store.tally(t10)[&key("us-east")], count(0, 1));
        assert_eq!(store.expire(t10), 1);
    }

    #[test]
    fn one_identity_is_one_vote_whatever_the_number_of_ids() {
        let now = Instant::now();
        let mut store = BreakerReports::new(BREAKER_REPORT_TTL);
        store
            .put(
                OTHER,
                report("honest", &[("us-east", BreakerState::Closed)]),
                now,
            )
            .unwrap();
        for i in 0..50 {
            store
                .put(
                    ID,
                    report(&format!("forged-{i}"), &[("us-east", BreakerState::Open)]),
                    now,
                )
                .unwrap();
        }
        let c = store.tally(now)[&key("us-east")];
        assert_eq!(c, count(1, 2));
        assert!(!c.quorum_open(0.5), "50 forged ids are one vote of two");
    }

    #[test]
    fn replicas_of_one_identity_vote_by_their_majority() {
        let now = Instant::now();
        let mut store = BreakerReports::new(BREAKER_REPORT_TTL);
        let put = |store: &mut BreakerReports, id: &str, state| {
            store
                .put(ID, report(id, &[("us-east", state)]), now)
                .unwrap();
        };
        put(&mut store, "r1", BreakerState::Open);
        put(&mut store, "r2", BreakerState::Closed);
        assert_eq!(
            store.tally(now)[&key("us-east")],
            count(0, 1),
            "a tie is not open"
        );
        put(&mut store, "r3", BreakerState::Open);
        assert_eq!(store.tally(now)[&key("us-east")], count(1, 1));
    }

    #[test]
    fn an_identity_has_a_bounded_number_of_reporter_ids() {
        let t0 = Instant::now();
        let mut store = BreakerReports::new(BREAKER_REPORT_TTL);
        for i in 0..MAX_REPORTERS_PER_IDENTITY {
            store
                .put(
                    ID,
                    report(&format!("r{i}"), &[("eu", BreakerState::Open)]),
                    t0,
                )
                .unwrap();
        }
        let err = store
            .put(ID, report("one-more", &[("eu", BreakerState::Open)]), t0)
            .unwrap_err();
        assert!(
            matches!(err, BreakerRefusal::TooManyReporters { .. }),
            "{err}"
        );
        // An id it already has is still renewed, and another identity is not affected.
        store
            .put(ID, report("r0", &[("eu", BreakerState::Closed)]), t0)
            .unwrap();
        store
            .put(OTHER, report("x", &[("eu", BreakerState::Closed)]), t0)
            .unwrap();
        // Once the old ids expire there is room again.
        let later = t0 + BREAKER_REPORT_TTL;
        store
            .put(ID, report("one-more", &[("eu", BreakerState::Open)]), later)
            .unwrap();
        assert_eq!(store.tally(later)[&key("eu")], count(1, 1));
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
