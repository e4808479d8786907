//! The open-loop load driver: request `i` is due at `i / rate` after the start (the shared
//! [`schedule`](super::schedule)) and is sent then whatever the system does, so a stalled mesh
//! shows up as latency and failures instead of as a quietly lower rate. Every request carries an id and a seeded body whose SHA-256 the demo app
//! echoes; every outcome is recorded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::client::{Entry, ProxyClient};
use super::outcome::{DigestCheck, Outcome, Wire};
use super::schedule::{Due, Schedule, dispatch};
use crate::scenario::{LoadSpec, Protocol};

/// Request header carrying the request id.
pub const HEADER_REQUEST_ID: &str = "x-request-id";
/// Request header asking the demo app for the digest of the body it received.
pub const HEADER_ECHO_DIGEST: &str = "x-echo-digest";
/// Response header of the demo app with that digest (hex SHA-256).
pub const HEADER_ECHO_BODY_SHA256: &str = "x-echo-body-sha256";
/// Response header of the demo app naming the cluster of the replica that answered.
pub const HEADER_ECHO_CLUSTER: &str = "x-echo-cluster";
/// Response header of the demo app naming the replica that answered.
pub const HEADER_ECHO_REPLICA: &str = "x-echo-replica";
/// A send later than this after its due time counts as late (the driver fell behind).
const LATE: Duration = Duration::from_millis(20);

/// Everything the load produced.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Every outcome, by id.
    pub outcomes: Vec<Outcome>,
    /// Requests the schedule sent.
    pub sent: u64,
    /// Requests sent more than 20 ms after their due time.
    pub late_sends: u64,
}

impl LoadResult {
    /// Requests sent that have no outcome.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.outcomes.len() as u64)
    }
}

struct Shared {
    outcomes: Mutex<Vec<Outcome>>,
    sent: AtomicU64,
    late: AtomicU64,
    stop: AtomicBool,
}

/// A running load.
pub struct LoadDriver {
    started: Instant,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// The body of request `id` (seeded: the same id always has the same bytes) and its digest.
pub fn body_for(id: u64, len: usize) -> (Bytes, String) {
    let mut bytes = vec![0u8; len];
    StdRng::seed_from_u64(id ^ 0x6d65_7368_6368_616f).fill_bytes(&mut bytes);
    let digest = hex::encode(Sha256::digest(&bytes));
    (Bytes::from(bytes), digest)
}

impl LoadDriver {
    /// Starts sending `spec`'s load to the proxy at `proxy`.
    pub fn start(proxy: SocketAddr, spec: LoadSpec) -> Self {
        Self::start_at(Entry::Proxy(proxy), spec)
    }

    /// Like [`start`](Self::start), the connections entering the mesh at `entry`.
    pub fn start_at(entry: Entry, spec: LoadSpec) -> Self {
        let shared = Arc::new(Shared {
            outcomes: Mutex::new(Vec::new()),
            sent: AtomicU64::new(0),
            late: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let schedule = Schedule::at_rate(std::time::Instant::now(), f64::from(spec.rate.max(1)));
        let started = Instant::from_std(schedule.start);
        let (due_tx, due_rx) = tokio::sync::mpsc::unbounded_channel();
        let dispatcher = shared.clone();
        // The dispatcher ends when asked to stop, dropping `due_tx`, which ends `send_due`.
        std::thread::spawn(move || dispatch(&schedule, vec![due_tx], &dispatcher.stop));
        let task = tokio::spawn(send_due(
            started,
            due_rx,
            ProxyClient::entering(entry),
            spec,
            shared.clone(),
        ));
        Self {
            started,
            shared,
            task,
        }
    }

    /// When the first request was due.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Outcomes recorded so far (unordered).
    pub fn snapshot(&self) -> Vec<Outcome> {
        self.shared
            .outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops sending, waits for the requests in flight (each bounded by the request timeout)
    /// and returns everything, sorted by id.
    pub async fn finish(self) -> LoadResult {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "load driver task failed");
        }
        let mut outcomes = std::mem::take(
            &mut *self
                .shared
                .outcomes
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        outcomes.sort_by_key(|o| o.id);
        LoadResult {
            outcomes,
            sent: self.shared.sent.load(Ordering::SeqCst),
            late_sends: self.shared.late.load(Ordering::SeqCst),
        }
    }
}

async fn send_due(
    started: Instant,
    mut due: tokio::sync::mpsc::UnboundedReceiver<Due>,
    client: ProxyClient,
    spec: LoadSpec,
    shared: Arc<Shared>,
) {
    let client = Arc::new(client);
    let spec = Arc::new(spec);
    let mut inflight = JoinSet::new();
    while let Some(Due { id, at }) = due.recv().await {
        let at = Instant::from_std(at);
        if Instant::now() > at + LATE {
            shared.late.fetch_add(1, Ordering::Relaxed);
        }
        shared.sent.fetch_add(1, Ordering::SeqCst);
        let (client, spec, shared) = (client.clone(), spec.clone(), shared.clone());
        inflight.spawn(async move {
            let outcome = one_request(&client, &spec, id, at - started, at).await;
            shared
                .outcomes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(outcome);
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
}

fn wire_of(protocol: Protocol, id: u64) -> Wire {
    match protocol {
        Protocol::Http1 => Wire::Http1,
        Protocol::Http2 => Wire::Http2,
        Protocol::Mixed if id.is_multiple_of(2) => Wire::Http1,
        Protocol::Mixed => Wire::Http2,
    }
}

async fn one_request(
    client: &ProxyClient,
    spec: &LoadSpec,
    id: u64,
    scheduled: Duration,
    due: Instant,
) -> Outcome {
    let wire = wire_of(spec.protocol, id);
    let (body, digest) = body_for(id, spec.body_bytes);
    let checks_body = spec.body_bytes > 0;
    let mut outcome = Outcome {
        id,
        scheduled,
        latency: Duration::ZERO,
        wire,
        status: None,
        served_by: None,
        replica: None,
        error: None,
        digest: DigestCheck::NotChecked,
    };
    let mut builder = Request::builder()
        .method(spec.method.clone())
        .uri(format!("http://{}/chaos/{id}", spec.host))
        .header(HEADER_REQUEST_ID, id.to_string());
    if checks_body {
        builder = builder.header(HEADER_ECHO_DIGEST, "sha256");
    }
    let req = match builder.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => {
            outcome.error = Some(format!("building the request: {e}"));
            return outcome;
        }
    };
    let limit = spec.body_bytes + 64 * 1024;
    let result = tokio::time::timeout(spec.timeout, client.send(wire, req, limit)).await;
    outcome.latency = due.elapsed();
    let answer = match result {
        Err(_) => {
            outcome.error = Some(format!("timeout after {} ms", spec.timeout.as_millis()));
            return outcome;
        }
        Ok(Err(e)) => {
            outcome.error = Some(e);
            return outcome;
        }
        Ok(Ok(a)) => a,
    };
    let header = |name: &str| {
        answer
            .head
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let status = answer.head.status;
    outcome.status = Some(status.as_u16());
    outcome.served_by = header(mesh_core::api::HEADER_SERVED_BY_CLUSTER);
    outcome.replica = header(HEADER_ECHO_REPLICA);
    if !status.is_success() {
        let why = header(mesh_core::api::HEADER_MESH_ERROR).unwrap_or_else(|| {
            String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)])
                .trim()
                .to_string()
        });
        outcome.error = Some(format!("{status}: {why}"));
        return outcome;
    }
    if checks_body {
        let echoed = hex::encode(Sha256::digest(&answer.body));
        let seen_by_app = header(HEADER_ECHO_BODY_SHA256);
        let intact = echoed == digest && seen_by_app.as_deref().is_none_or(|d| d == digest);
        outcome.digest = if intact {
            DigestCheck::Match
        } else {
            DigestCheck::Mismatch
        };
    }
    outcome
}
