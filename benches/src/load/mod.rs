//! The benchmark's precision wrapper over the workspace's one open-loop schedule
//! (`mesh_chaos::load::schedule`): each request has an intended send time on that schedule,
//! handed out by a spinning dispatcher thread, and its latency is measured from that time into an
//! HdrHistogram, so a stalled server is charged for the requests it delayed (coordinated omission
//! is corrected). What is kept here is what only a benchmark needs: connections opened before
//! the clock starts, one worker per connection, warm-up excluded from the numbers, and a closed
//! loop for maximum throughput. HTTP/1.1 (one request at a time per connection) or HTTP/2
//! (multiplexed).

mod conn;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use mesh_chaos::load::schedule::{Due, Schedule, dispatch};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

pub use conn::{Conn, connect, exchange, request};

use crate::error::BenchError;
use crate::latency::{new_histogram, record};

/// Bound on one request: a request slower than this counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP version spoken to the path under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1, one request at a time per connection, keep-alive.
    Http1,
    /// HTTP/2 with prior knowledge (h2c), requests multiplexed on each connection.
    Http2,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
        })
    }
}

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Target {
    /// Address to connect to (the proxy, or the server itself).
    pub addr: SocketAddr,
    /// Authority of the requests: a mesh name through a sidecar, else the server's address.
    pub authority: String,
    /// Path of the requests.
    pub path: String,
    /// Send HTTP/1.1 requests in absolute form, as to an HTTP proxy (the sidecar's outbound).
    pub absolute_form: bool,
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Open loop: this many requests per second on a fixed schedule, whatever the answers do.
    Rate(f64),
    /// Closed loop: each connection keeps this many requests in flight (1 for HTTP/1.1).
    ClosedLoop {
        /// Requests in flight per connection.
        in_flight: usize,
    },
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Where requests go.
    pub target: Target,
    /// HTTP version.
    pub protocol: Protocol,
    /// Pacing.
    pub pace: Pace,
    /// Connections opened to the target.
    pub connections: usize,
    /// Time at the start whose requests are sent but not measured.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Request body size (0 sends GET, more sends POST; the upstream echoes bodies).
    pub body_bytes: usize,
    /// The dispatcher sleeps until this long before a send time, then spins: OS sleeps overshoot
    /// by tens of microseconds, which would otherwise be charged to every request.
    pub spin: Duration,
}

/// What a load run measured.
#[derive(Debug)]
pub struct LoadResult {
    /// Latencies of successful measured requests, µs.
    pub histogram: Histogram<u64>,
    /// Successful measured requests (2xx).
    pub ok: u64,
    /// Failed measured requests (transport errors, non-2xx, timeouts, never sent).
    pub errors: u64,
    /// The first error seen, to say why.
    pub first_error: Option<String>,
    /// From the start of measurement to the last measured answer.
    pub elapsed: Duration,
}

impl LoadResult {
    /// Successful requests per second over the measured time.
    pub fn achieved_rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }
}

/// Shared tally of one run.
#[derive(Debug)]
struct Recorder {
    measure_from: Instant,
    histogram: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    last_done: Option<Instant>,
}

impl Recorder {
    fn new(measure_from: Instant) -> Self {
        Self {
            measure_from,
            histogram: new_histogram(),
            ok: 0,
            errors: 0,
            first_error: None,
            last_done: None,
        }
    }

    /// Records a request meant to start at `start` that ended at `done`.
    fn record(&mut self, start: Instant, done: Instant, outcome: Result<(), String>) {
        if start < self.measure_from {
            return;
        }
        self.last_done = Some(self.last_done.map_or(done, |t| t.max(done)));
        match outcome {
            Ok(()) => {
                self.ok += 1;
                let us = u64::try_from(done.duration_since(start).as_micros()).unwrap_or(u64::MAX);
                record(&mut self.histogram, us);
            }
            Err(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                }
            }
        }
    }
}

type SharedRecorder = Arc<Mutex<Recorder>>;

fn lock(r: &SharedRecorder) -> std::sync::MutexGuard<'_, Recorder> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs one load run to completion.
pub async fn run_load(spec: &LoadSpec) -> Result<LoadResult, BenchError> {
    if spec.connections == 0 {
        return Err(BenchError::InvalidArgs(
            "connections must be at least 1".into(),
        ));
    }
    let body = Bytes::from(vec![b'x'; spec.body_bytes]);
    // Connect first, so connection set-up is not charged to the first requests.
    let mut conns = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        let c = connect(spec.target.addr, spec.protocol)
            .await
            .map_err(|e| BenchError::measure(format!("connecting to {}", spec.target.addr), e))?;
        conns.push(c);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let recorder: SharedRecorder = Arc::new(Mutex::new(Recorder::new(measure_from)));
    let scheduled = match spec.pace {
        Pace::Rate(rate) => {
            run_open_loop(spec, conns, body, rate, start, end, recorder.clone()).await?
        }
        Pace::ClosedLoop { in_flight } => {
            run_closed_loop(spec, conns, body, in_flight.max(1), end, recorder.clone()).await;
            None
        }
    };
    let r = lock(&recorder);
    let mut errors = r.errors;
    let mut first_error = r.first_error.clone();
    if let Some(scheduled) = scheduled {
        let unanswered = scheduled.saturating_sub(r.ok + r.errors);
        if unanswered > 0 {
            errors += unanswered;
            first_error.get_or_insert_with(|| {
                format!("{unanswered} requests were not answered before the drain deadline")
            });
        }
    }
    let elapsed = match (spec.pace, r.last_done) {
        // An open loop measures over its schedule unless answers came late.
        (Pace::Rate(_), Some(last)) => last.duration_since(measure_from).max(spec.duration),
        (Pace::Rate(_), None) => spec.duration,
        (Pace::ClosedLoop { .. }, _) => spec.duration,
    };
    Ok(LoadResult {
        histogram: r.histogram.clone(),
        ok: r.ok,
        errors,
        first_error,
        elapsed,
    })
}

/// Open loop; returns the number of measured requests scheduled.
async fn run_open_loop(
    spec: &LoadSpec,
    conns: Vec<Conn>,
    body: Bytes,
    rate: f64,
    start: Instant,
    end: Instant,
    recorder: SharedRecorder,
) -> Result<Option<u64>, BenchError> {
    if !(rate.is_finite() && rate > 0.0) {
        return Err(BenchError::InvalidArgs(format!(
            "rate {rate} must be above 0"
        )));
    }
    let mut senders = Vec::new();
    let mut workers = JoinSet::new();
    for conn in conns {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Due>();
        senders.push(tx);
        workers.spawn(open_loop_worker(
            conn,
            rx,
            spec.clone(),
            body.clone(),
            recorder.clone(),
        ));
    }
    let schedule = Schedule {
        start,
        interval: Duration::from_secs_f64(1.0 / rate),
        end: Some(end),
        spin: spec.spin,
    };
    let measure_from = lock(&recorder).measure_from;
    let dispatcher = std::thread::Builder::new()
        .name("load-dispatch".into())
        .spawn(move || {
            dispatch(
                &schedule,
                senders,
                &std::sync::atomic::AtomicBool::new(false),
            )
        })
        .map_err(|e| BenchError::measure("starting the dispatcher", e))?;
    // Wait for the schedule to end, then give late answers as long again to drain.
    let drain_until =
        tokio::time::Instant::from_std(end + spec.duration.max(Duration::from_secs(2)));
    loop {
        tokio::select! {
            next = workers.join_next() => if next.is_none() { break },
            _ = tokio::time::sleep_until(drain_until) => {
                workers.abort_all();
                while workers.join_next().await.is_some() {}
                break;
            }
        }
    }
    let sent = dispatcher
        .join()
        .map_err(|_| BenchError::measure("load dispatcher", "panicked"))?;
    Ok(Some(
        sent.iter().filter(|t| **t >= measure_from).count() as u64
    ))
}

async fn open_loop_worker(
    conn: Conn,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Due>,
    spec: LoadSpec,
    body: Bytes,
    recorder: SharedRecorder,
) {
    let mut conn = Some(conn);
    let mut in_flight = JoinSet::new();
    while let Some(Due { at: intended, .. }) = rx.recv().await {
        if conn.as_ref().is_none_or(Conn::is_closed) {
            conn = connect(spec.target.addr, spec.protocol).await.ok();
        }
        let Some(c) = conn.as_mut() else {
            lock(&recorder).record(intended, Instant::now(), Err("connect failed".into()));
            continue;
        };
        let req = request(&spec.target, spec.protocol, body.clone());
        match c.share() {
            // HTTP/2: multiplexed, each request on its own task.
            Some(mut shared) => {
                let recorder = recorder.clone();
                in_flight.spawn(async move {
                    let outcome = timed_exchange(&mut shared, req).await;
                    lock(&recorder).record(intended, Instant::now(), outcome);
                });
                while in_flight.try_join_next().is_some() {}
            }
            // HTTP/1.1: one at a time on this connection; later requests wait in the channel
            // and are charged for the wait.
            None => {
                let outcome = timed_exchange(c, req).await;
                if outcome.is_err() {
                    conn = None;
                }
                lock(&recorder).record(intended, Instant::now(), outcome);
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
}

async fn timed_exchange(
    conn: &mut Conn,
    req: http::Request<http_body_util::Full<Bytes>>,
) -> Result<(), String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange(conn, req)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
    }
}

async fn run_closed_loop(
    spec: &LoadSpec,
    conns: Vec<Conn>,
    body: Bytes,
    in_flight: usize,
    end: Instant,
    recorder: SharedRecorder,
) {
    let mut tasks = JoinSet::new();
    let mut lanes = Vec::new();
    for conn in conns {
        if let Conn::H2(_) = conn {
            lanes.extend((1..in_flight).filter_map(|_| conn.share()));
        }
        lanes.push(conn);
    }
    for conn in lanes {
        {
            let (spec, body, recorder) = (spec.clone(), body.clone(), recorder.clone());
            tasks.spawn(async move {
                let mut conn = Some(conn);
                while Instant::now() < end {
                    if conn.as_ref().is_none_or(Conn::is_closed) {
                        conn = connect(spec.target.addr, spec.protocol).await.ok();
                    }
                    let sent = Instant::now();
                    let Some(c) = conn.as_mut() else {
                        lock(&recorder).record(sent, Instant::now(), Err("connect failed".into()));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let req = request(&spec.target, spec.protocol, body.clone());
                    let outcome = timed_exchange(c, req).await;
                    if outcome.is_err() {
                        conn = None;
                    }
                    let done = Instant::now();
                    if done <= end {
                        lock(&recorder).record(sent, done, outcome);
                    }
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
}
