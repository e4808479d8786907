//! The controller's locality order for one service: which clusters serve it, in which priority,
//! and how healthy each is. The own cluster comes first, then the others by region preference,
//! RTT and name; unreachable or empty localities are dropped, and a quorum of sidecars reporting
//! the breaker open marks a locality unhealthy. It owns that decision only: gathering the
//! inputs (peer links, catalogs, breaker reports) and publishing the result are the
//! controller's job, and splitting traffic along the order is `spill`'s.

use std::cmp::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the controller knows about one cluster that serves the service.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalityCandidate {
    /// Cluster name.
    pub cluster: String,
    /// Region the cluster runs in.
    pub region: String,
    /// Whether the link to the cluster is up (ignored for the own cluster).
    pub reachable: bool,
    /// Last measured round-trip time to the cluster, if any.
    pub rtt: Option<Duration>,
    /// Endpoints of the service there that are healthy.
    pub healthy_endpoints: u32,
    /// All endpoints of the service there.
    pub total_endpoints: u32,
    /// Own workload identities whose vote on this service's breaker for this locality is
    /// open.
    pub breaker_open_reports: u32,
    /// Own workload identities reporting breaker state for this service at all.
    pub reporting_sidecars: u32,
}

/// One locality in the published order.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LocalityEntry {
    /// Cluster name.
    pub cluster: String,
    /// Health in [0, 1], the input of priority spill.
    pub health: f64,
    /// Short human-readable reason for the position and health, e.g. "rtt 12.3ms".
    pub reason: String,
}

/// How the controller orders localities.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalityPolicy {
    /// Regions in order of preference for failover. Default empty: no preference, remote
    /// clusters are ordered by RTT.
    pub region_priority: Vec<String>,
    /// Share of reporting workload identities (one vote each, however many sidecars share
    /// it) that must see the breaker open (strictly more than it) to mark the locality
    /// unhealthy. Default 0.5: a majority, so one sidecar's bad luck does not fail a whole
    /// cluster over.
    pub breaker_quorum: f64,
}

impl Default for LocalityPolicy {
    fn default() -> Self {
        Self {
            region_priority: Vec::new(),
            breaker_quorum: 0.5,
        }
    }
}

/// Orders the localities of one service: own cluster first, then by region priority (listed
/// regions before others), RTT (unknown last) and name; drops unreachable and empty ones.
pub fn locality_order(
    own_cluster: &str,
    policy: &LocalityPolicy,
    candidates: &[LocalityCandidate],
) -> Vec<LocalityEntry> {
    let region_rank = |candidate: &LocalityCandidate| {
        policy
            .region_priority
            .iter()
            .position(|region| *region == candidate.region)
    };
    let mut kept: Vec<&LocalityCandidate> = candidates
        .iter()
        .filter(|c| (c.cluster == own_cluster || c.reachable) && c.total_endpoints > 0)
        .collect();
    kept.sort_by(|a, b| {
        (a.cluster != own_cluster)
            .cmp(&(b.cluster != own_cluster))
            .then_with(|| rank_order(region_rank(a), region_rank(b)))
            .then_with(|| rank_order(a.rtt, b.rtt))
            .then_with(|| a.cluster.cmp(&b.cluster))
    });
    kept.into_iter()
        .map(|candidate| {
            let position = if candidate.cluster == own_cluster {
                "local".to_owned()
            } else {
                remote_position(region_rank(candidate), candidate.rtt)
            };
            entry(candidate, position, policy.breaker_quorum)
        })
        .collect()
}

/// Orders `Some` values ascending, `None` after all of them.
fn rank_order<T: Ord>(a: Option<T>, b: Option<T>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

fn remote_position(region_rank: Option<usize>, rtt: Option<Duration>) -> String {
    let rtt = match rtt {
        Some(rtt) => format!("rtt {:.1}ms", rtt.as_secs_f64() * 1000.0),
        None => "rtt unknown".to_owned(),
    };
    match region_rank {
        // Shown 1-based: "region priority 1" is the first listed region.
        Some(rank) => format!("region priority {}, {rtt}", rank + 1),
        None => rtt,
    }
}

fn entry(candidate: &LocalityCandidate, position: String, quorum: f64) -> LocalityEntry {
    let breaker_open = candidate.reporting_sidecars > 0
        && f64::from(candidate.breaker_open_reports)
            > quorum * f64::from(candidate.reporting_sidecars);
    let (health, reason) = if breaker_open {
        let reports = format!(
            "{}/{}",
            candidate.breaker_open_reports, candidate.reporting_sidecars
        );
        (
            0.0,
            format!("{position}, breaker open ({reports} identities)"),
        )
    } else if candidate.healthy_endpoints == 0 {
        (0.0, format!("{position}, no healthy endpoints"))
    } else {
        let health = f64::from(candidate.healthy_endpoints) / f64::from(candidate.total_endpoints);
        (health.min(1.0), position)
    };
    LocalityEntry {
        cluster: candidate.cluster.clone(),
        health,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(cluster: &str, region: &str, rtt_ms: Option<u64>) -> LocalityCandidate {
        LocalityCandidate {
            cluster: cluster.to_owned(),
            region: region.to_owned(),
            reachable: true,
            rtt: rtt_ms.map(Duration::from_millis),
            healthy_endpoints: 2,
            total_endpoints: 2,
            breaker_open_reports: 0,
            reporting_sidecars: 0,
        }
    }

    fn clusters(order: &[LocalityEntry]) -> Vec<&str> {
        order.iter().map(|entry| entry.cluster.as_str()).collect()
    }

    fn policy(regions: &[&str]) -> LocalityPolicy {
        LocalityPolicy {
            region_priority: regions.iter().map(|r| (*r).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn own_cluster_first_then_region_priority_then_rtt_then_name() {
        let candidates = [
            candidate("far-b", "ap", None),
            candidate("far-a", "ap", None),
            candidate("near", "us", Some(40)),
            candidate("eu-slow", "eu", Some(30)),
            candidate("eu-fast", "eu", Some(10)),
            candidate("eu-unknown", "eu", None),
            candidate("home", "us", Some(1)),
        ];
        let order = locality_order("home", &policy(&["eu"]), &candidates);
        assert_eq!(
            clusters(&order),
            [
                "home",
                "eu-fast",
                "eu-slow",
                "eu-unknown",
                "near",
                "far-a",
                "far-b"
            ]
        );
        assert_eq!(order[0].reason, "local");
        assert_eq!(order[1].reason, "region priority 1, rtt 10.0ms");
        assert_eq!(order[4].reason, "rtt 40.0ms");
        assert_eq!(order[5].reason, "rtt unknown");
    }

    #[test]
    fn unreachable_and_empty_localities_are_dropped() {
        let mut down = candidate("down", "eu", Some(5));
        down.reachable = false;
        let mut empty = candidate("empty", "eu", Some(5));
        empty.total_endpoints = 0;
        empty.healthy_endpoints = 0;
        let mut home = candidate("home", "us", None);
        home.reachable = false;
        let order = locality_order("home", &LocalityPolicy::default(), &[down, empty, home]);
        assert_eq!(
            clusters(&order),
            ["home"],
            "own cluster is kept even if marked unreachable"
        );
    }

    #[test]
    fn health_is_the_healthy_share() {
        let mut home = candidate("home", "us", None);
        home.healthy_endpoints = 1;
        home.total_endpoints = 4;
        let mut dark = candidate("dark", "eu", Some(5));
        dark.healthy_endpoints = 0;
        let order = locality_order("home", &LocalityPolicy::default(), &[home, dark]);
        assert_eq!(order[0].health, 0.25);
        assert_eq!(order[1].health, 0.0);
        assert_eq!(order[1].reason, "rtt 5.0ms, no healthy endpoints");
    }

    #[test]
    fn a_quorum_of_breaker_reports_zeroes_health() {
        let mut home = candidate("home", "us", None);
        home.reporting_sidecars = 4;
        home.breaker_open_reports = 2;
        let order = locality_order(
            "home",
            &LocalityPolicy::default(),
            std::slice::from_ref(&home),
        );
        assert_eq!(order[0].health, 1.0, "2 of 4 is not more than half");
        home.breaker_open_reports = 3;
        let order = locality_order("home", &LocalityPolicy::default(), &[home]);
        assert_eq!(order[0].health, 0.0);
        assert_eq!(order[0].reason, "local, breaker open (3/4 identities)");
    }

    #[test]
    fn policy_reads_with_defaults_and_rejects_unknown_fields() {
        let policy: LocalityPolicy =
            serde_json::from_str(r#"{"region_priority": ["eu"]}"#).unwrap();
        assert_eq!(policy.region_priority, ["eu"]);
        assert_eq!(policy.breaker_quorum, 0.5);
        assert!(serde_json::from_str::<LocalityPolicy>(r#"{"quorum": 0.5}"#).is_err());
    }
}
