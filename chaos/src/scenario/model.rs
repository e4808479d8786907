//! The validated form of a scenario: what the runner executes and what the SLOs are checked
//! against. Nothing here parses strings; every value has its unit in its type.

use std::path::PathBuf;
use std::time::Duration;

use mesh_core::config::Topology;

/// A validated chaos scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Short name (a DNS label), unique in a suite.
    pub name: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// One line saying what it proves, for `mesh chaos list`.
    pub summary: String,
    /// Whether it belongs to the fast subset run inside `cargo test`.
    pub fast: bool,
    /// The cluster-set it runs on.
    pub topology: Topology,
    /// Lifetime of the certificates its controllers sign, when not the default (24 h):
    /// certificate-expiry scenarios make it short.
    pub cert_ttl: Option<Duration>,
    /// The steady load driven through it.
    pub load: LoadSpec,
    /// How long the load runs, from its first request.
    pub duration: Duration,
    /// Fault and heal actions, sorted by time.
    pub timeline: Vec<TimelineEvent>,
    /// What must hold.
    pub slos: Vec<SloSpec>,
}

impl Scenario {
    /// Whether any action needs network namespaces (partitions, WAN loss).
    pub fn needs_namespaces(&self) -> bool {
        self.load.capture || self.faults().any(|(_, f)| f.needs_namespaces())
    }

    /// Every fault with its id.
    pub fn faults(&self) -> impl Iterator<Item = (&str, &Fault)> {
        self.timeline.iter().filter_map(|e| match &e.action {
            Action::Fault { id, fault } => Some((id.as_str(), fault)),
            Action::Heal { .. } => None,
        })
    }

    /// When the fault `id` starts, from the load's start.
    pub fn fault_at(&self, id: &str) -> Option<Duration> {
        self.timeline.iter().find_map(|e| match &e.action {
            Action::Fault { id: f, .. } if f == id => Some(e.at),
            _ => None,
        })
    }

    /// When the fault `id` is healed, if it is.
    pub fn heal_at(&self, id: &str) -> Option<Duration> {
        self.timeline.iter().find_map(|e| match &e.action {
            Action::Heal { fault } if fault == id => Some(e.at),
            _ => None,
        })
    }

    /// Cluster pairs whose QUIC path must run through an impairment relay.
    pub fn relayed_pairs(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = self
            .faults()
            .filter_map(|(_, f)| match f {
                Fault::Impair { a, b, .. } => Some(ordered(a, b)),
                _ => None,
            })
            .collect();
        pairs.sort();
        pairs.dedup();
        pairs
    }
}

/// The pair in name order.
pub fn ordered(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// HTTP version the load driver speaks to the client sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive connections.
    Http1,
    /// HTTP/2 with prior knowledge, requests multiplexed on one connection.
    Http2,
    /// Alternating: even request ids HTTP/1.1, odd ones HTTP/2.
    Mixed,
}

/// The load of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    /// Cluster whose client sidecar the requests enter.
    pub client: String,
    /// Requests per second, sent on schedule whatever the system does (open loop).
    pub rate: u32,
    /// HTTP version(s).
    pub protocol: Protocol,
    /// Request method (`PUT` by default: idempotent, and it carries a body).
    pub method: http::Method,
    /// Host the requests name (a mesh service name).
    pub host: String,
    /// Request body size; the body's SHA-256 is checked against the echo.
    pub body_bytes: usize,
    /// Bound on one request, after which it counts as failed (`timeout`).
    pub timeout: Duration,
    /// The requests enter through transparent capture (`capture: true`): connections to the
    /// service's VIP from inside the client cluster's network namespace, with no proxy, which
    /// `mesh init`'s rules send to the client sidecar. Needs network namespaces.
    pub capture: bool,
}

/// One action on the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEvent {
    /// When, from the load's start.
    pub at: Duration,
    /// Line in the scenario file (for messages).
    pub line: u64,
    /// What happens.
    pub action: Action,
}

/// A fault or the heal of one.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Inject a fault, named `id` for its heal and the SLOs.
    Fault {
        /// The fault's name.
        id: String,
        /// What it does.
        fault: Fault,
    },
    /// Undo the fault named `fault`.
    Heal {
        /// The fault's name.
        fault: String,
    },
}

/// One process of the cluster-set, as the launcher names it (`us-east`, `sidecar-echo-0`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct ProcessRef {
    /// Its cluster.
    pub cluster: String,
    /// Its name in the cluster (`controller`, `gateway`, `echo-0`, `sidecar-echo-0`, `client`).
    pub process: String,
}

impl std::fmt::Display for ProcessRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.cluster, self.process)
    }
}

/// Which packets a partition drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways.
    Both,
    /// Only packets from the first cluster to the second.
    OneWay,
}

/// How the QUIC path between two gateways is impaired (per direction, each with its own
/// seeded random stream).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    /// Added one-way delay.
    pub delay: Duration,
    /// Uniform jitter around the delay (never below zero).
    pub jitter: Duration,
    /// Share of datagrams dropped.
    pub loss: f64,
    /// Share of datagrams held back an extra delay so that later ones overtake them.
    pub reorder: f64,
    /// Share of datagrams sent twice.
    pub duplicate: f64,
    /// Seed of the random schedule: the same seed gives the same decisions.
    pub seed: u64,
}

/// What an endpoint fault makes the demo app do.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EndpointBehaviour {
    /// Share of requests answered with 500.
    pub error_share: f64,
    /// Latency added to a share of requests.
    pub latency: Duration,
    /// Share of requests that get the latency.
    pub latency_share: f64,
}

/// A fault action.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// SIGKILL the processes; heal restarts them on the same addresses.
    Kill {
        /// Processes, restarted in this order.
        targets: Vec<ProcessRef>,
    },
    /// SIGSTOP the processes; heal sends SIGCONT.
    Freeze {
        /// Processes.
        targets: Vec<ProcessRef>,
    },
    /// Stop (SIGTERM) and start each process in turn, waiting for it to be ready and then
    /// `pause` before the next. Needs no heal.
    RollingRestart {
        /// Processes, in restart order.
        targets: Vec<ProcessRef>,
        /// Pause between two restarts.
        pause: Duration,
    },
    /// Drop packets between two clusters (iptables in their namespaces).
    Partition {
        /// First cluster.
        a: String,
        /// Second cluster.
        b: String,
        /// Both ways or only from `a` to `b`.
        direction: Direction,
    },
    /// Drop a share of a cluster's packets to and from other clusters (iptables `statistic`).
    WanLoss {
        /// The cluster.
        cluster: String,
        /// Share dropped, each way.
        share: f64,
    },
    /// Delay, jitter, drop, reorder and duplicate datagrams on the QUIC path between two
    /// gateways (userspace relay).
    Impair {
        /// One cluster.
        a: String,
        /// The other.
        b: String,
        /// How.
        impairment: Impairment,
    },
    /// Make demo-app replicas fail or slow down; heal clears it.
    Endpoint {
        /// Demo-app processes (`echo-N`).
        targets: Vec<ProcessRef>,
        /// What they do.
        behaviour: EndpointBehaviour,
    },
    /// Make demo-app replicas fail for `down`, then serve for `up`, repeatedly until healed.
    Flap {
        /// Demo-app processes.
        targets: Vec<ProcessRef>,
        /// Failing phase.
        down: Duration,
        /// Healthy phase.
        up: Duration,
    },
    /// Remove the link between two clusters (`mesh unlink`); heal links them again.
    Unlink {
        /// One cluster.
        a: String,
        /// The other.
        b: String,
    },
    /// Rotate a cluster's root CA with `mesh ca rotate` (add, switch, retire, each waited
    /// for). Needs no heal: it ends when the rotation is complete.
    RotateRoot {
        /// The cluster whose root is rotated.
        cluster: String,
    },
}

impl Fault {
    /// The action's name in scenario files.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Freeze { .. } => "freeze",
            Fault::RollingRestart { .. } => "rolling_restart",
            Fault::Partition { .. } => "partition",
            Fault::WanLoss { .. } => "wan_loss",
            Fault::Impair { .. } => "impair",
            Fault::Endpoint { .. } => "endpoint",
            Fault::Flap { .. } => "flap",
            Fault::Unlink { .. } => "unlink",
            Fault::RotateRoot { .. } => "rotate_root",
        }
    }

    /// Whether it can only be made with network namespaces.
    pub fn needs_namespaces(&self) -> bool {
        matches!(self, Fault::Partition { .. } | Fault::WanLoss { .. })
    }

    /// Whether it must not be healed (it ends by itself).
    pub fn self_healing(&self) -> bool {
        matches!(
            self,
            Fault::RollingRestart { .. } | Fault::RotateRoot { .. }
        )
    }
}

/// The part of the run an SLO looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// The whole load.
    Whole,
    /// From the load's start to the first fault.
    Before,
    /// From the fault's start to its heal (or the end).
    During(String),
    /// From the fault's heal plus `settle` to the end.
    After {
        /// The fault.
        fault: String,
        /// Time allowed to recover before the phase starts.
        settle: Duration,
    },
}

/// What an SLO bounds.
#[derive(Debug, Clone, PartialEq)]
pub enum SloKind {
    /// Failed requests (non-2xx, errors, timeouts): at most `max_count` and/or `max_share`.
    FailedRequests {
        /// Where.
        phase: Phase,
        /// Most failures.
        max_count: Option<u64>,
        /// Largest failed share.
        max_share: Option<f64>,
    },
    /// Time from the fault until a one-second window is at least 99% served by `cluster`.
    FailoverTime {
        /// The fault.
        fault: String,
        /// Where traffic must go.
        cluster: String,
        /// Bound.
        max: Duration,
    },
    /// Time from the fault's heal until a one-second window is at least 99% served by
    /// `cluster` again.
    FailbackTime {
        /// The fault.
        fault: String,
        /// Where traffic must return.
        cluster: String,
        /// Bound.
        max: Duration,
    },
    /// 99th percentile latency in a phase.
    P99Latency {
        /// Where.
        phase: Phase,
        /// Bound.
        max: Duration,
    },
    /// How much the p99 of a phase may exceed the p99 before any fault.
    P99Increase {
        /// Where.
        phase: Phase,
        /// Bound on the difference.
        max: Duration,
    },
    /// Echoed bodies whose digest differs from the sent one.
    DigestMismatches {
        /// Bound.
        max_count: u64,
    },
    /// Requests sent without an outcome recorded.
    LostRequests {
        /// Bound.
        max_count: u64,
    },
    /// Share of requests of a phase answered successfully by `cluster`.
    ServedShare {
        /// Where.
        phase: Phase,
        /// The cluster.
        cluster: String,
        /// Only this demo replica of the cluster (`echo-1`), if set.
        replica: Option<String>,
        /// Lower bound.
        min_share: f64,
    },
    /// Changes of the majority serving cluster between consecutive one-second windows.
    LocalitySwitches {
        /// Where.
        phase: Phase,
        /// Bound.
        max_count: u64,
    },
    /// Processes, namespaces and links of the run still present after teardown.
    Leftovers {
        /// Bound.
        max_count: u64,
    },
}

/// One SLO with its place in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct SloSpec {
    /// Line in the scenario file.
    pub line: u64,
    /// What it bounds.
    pub kind: SloKind,
}

impl SloKind {
    /// The kind's name in scenario files.
    pub fn name(&self) -> &'static str {
        match self {
            SloKind::FailedRequests { .. } => "failed_requests",
            SloKind::FailoverTime { .. } => "failover_time",
            SloKind::FailbackTime { .. } => "failback_time",
            SloKind::P99Latency { .. } => "p99_latency",
            SloKind::P99Increase { .. } => "p99_increase",
            SloKind::DigestMismatches { .. } => "digest_mismatches",
            SloKind::LostRequests { .. } => "lost_requests",
            SloKind::ServedShare { .. } => "served_share",
            SloKind::LocalitySwitches { .. } => "locality_switches",
            SloKind::Leftovers { .. } => "leftovers",
        }
    }
}
