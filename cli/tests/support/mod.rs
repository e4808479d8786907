//! Shared support for end-to-end tests: start a real cluster-set from the built `mesh` binary,
//! send requests through a client sidecar's proxy, and drive open-loop load (with the chaos
//! suite's driver).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_chaos::load::{LoadDriver, Outcome};
use mesh_chaos::scenario::{LoadSpec, Protocol};
use mesh_core::config::Topology;
use mesh_launcher::cluster_set::ClusterSet;
use sha2::{Digest, Sha256};

/// A unique scratch directory, removed on drop.
pub(crate) struct Scratch(pub PathBuf);

impl Scratch {
    pub(crate) fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("mesh-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub(crate) fn mesh_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mesh"))
}

/// The policy file's name in a [`Running::with_policy`] scratch directory.
const POLICY_FILE: &str = "policy.yaml";

/// A running cluster-set that is stopped (every process) when dropped or stopped.
pub(crate) struct Running {
    pub set: ClusterSet,
    pub scratch: Scratch,
}

impl Running {
    pub(crate) async fn start(tag: &str, topology: Topology) -> Self {
        let scratch = Scratch::new(tag);
        let topology = topology.with_ephemeral_ports();
        let set = match ClusterSet::start(&topology, &scratch.0, &mesh_bin()).await {
            Ok(s) => s,
            Err(e) => panic!("cluster-set did not start: {e}"),
        };
        Self { set, scratch }
    }

    /// A cluster-set of `topology` (on ephemeral ports) whose controllers read the policy file
    /// `policy` (its text; the file is [`Running::policy_file`]), with `extend` applied to
    /// the plan before it starts (extra services, for example).
    pub(crate) async fn with_policy(
        tag: &str,
        topology: Topology,
        policy: &str,
        extend: impl FnOnce(&mut ClusterSet),
    ) -> Self {
        let scratch = Scratch::new(tag);
        let file = scratch.0.join(POLICY_FILE);
        std::fs::write(&file, policy).unwrap();
        let topology = topology.with_ephemeral_ports();
        let mut plan = ClusterSet::plan(&topology, &scratch.0.join("state"), &mesh_bin());
        extend(&mut plan);
        plan.set_policy_files(std::slice::from_ref(&file));
        let set = match plan.launch().await {
            Ok(set) => set,
            Err(e) => panic!("cluster-set did not start: {e}"),
        };
        Self { set, scratch }
    }

    /// The policy file of a cluster-set started [`Running::with_policy`].
    pub(crate) fn policy_file(&self) -> PathBuf {
        self.scratch.0.join(POLICY_FILE)
    }

    pub(crate) async fn default_set(tag: &str) -> Self {
        Self::start(tag, Topology::default_set()).await
    }

    pub(crate) fn proxy(&self, cluster: &str) -> SocketAddr {
        self.set
            .cluster(cluster)
            .and_then(|c| c.client_proxy())
            .expect("client proxy")
    }

    pub(crate) fn admin(&self, cluster: &str) -> SocketAddr {
        self.set
            .cluster(cluster)
            .and_then(|c| c.controller_admin())
            .expect("controller admin")
    }

    pub(crate) async fn status(&self, cluster: &str) -> mesh_core::api::ControllerStatus {
        mesh_launcher::admin_client::get_json(self.admin(cluster), mesh_core::api::PATH_STATUS)
            .await
            .expect("status")
    }

    /// Dumps the tail of every log (for failing tests).
    pub(crate) fn logs(&self) -> String {
        let mut out = String::new();
        for c in &self.set.clusters {
            for (name, p) in &c.processes {
                out.push_str(&format!(
                    "--- {}/{name}\n{}\n",
                    c.spec.name,
                    mesh_launcher::cluster_set::log_tail(&p.log, 15)
                ));
            }
        }
        out
    }

    pub(crate) async fn stop(&mut self) {
        self.set.stop().await;
    }
}

/// One answer through the proxy.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub served_by: Option<String>,
    pub mesh_error: Option<String>,
    pub body: Bytes,
}

impl Answer {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// HTTP version used towards the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Http1,
    Http2,
}

/// An HTTP/2 (h2c, prior knowledge) connection to the sidecar proxy at `proxy`: its sender;
/// the connection is driven by a task of its own.
pub(crate) async fn h2c(proxy: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// A gRPC call's request: `POST` to `url` with `body` (length-prefixed messages).
pub(crate) fn grpc_request(url: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method("POST")
        .uri(url)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(body))
        .unwrap()
}

/// Sends one request to `url` through the sidecar proxy at `proxy`.
pub(crate) async fn send(
    proxy: SocketAddr,
    proto: Proto,
    method: &str,
    url: &str,
    body: Bytes,
) -> Result<Answer, String> {
    let tcp = tokio::net::TcpStream::connect(proxy)
        .await
        .map_err(|e| e.to_string())?;
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let rsp = match proto {
        Proto::Http1 => {
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            s.send_request(req).await.map_err(|e| e.to_string())?
        }
        Proto::Http2 => {
            let (mut s, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            s.send_request(req).await.map_err(|e| e.to_string())?
        }
    };
    let status = rsp.status();
    let header = |name: &str| {
        rsp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let served_by = header(mesh_core::api::HEADER_SERVED_BY_CLUSTER);
    let mesh_error = header(mesh_core::api::HEADER_MESH_ERROR);
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer {
        status,
        served_by,
        mesh_error,
        body,
    })
}

/// A GET through the proxy at `proxy` with `headers`: the status, the answer's headers and its
/// body as text.
pub(crate) async fn request(
    proxy: SocketAddr,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let rsp = s
        .send_request(req.body(http_body_util::Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

impl Running {
    /// The admin address of the process `process` of `cluster`.
    pub(crate) fn admin_of(&self, cluster: &str, process: &str) -> SocketAddr {
        self.set
            .process(cluster, process)
            .and_then(|p| p.ready.as_ref())
            .and_then(|r| r.addr("admin"))
            .unwrap_or_else(|| panic!("{cluster}/{process} admin address"))
    }

    /// Sets the injected faults of the demo app `app` of `cluster` (`{}` clears them).
    pub(crate) async fn set_faults(&self, cluster: &str, app: &str, faults: serde_json::Value) {
        mesh_launcher::admin_client::send_json(
            self.admin_of(cluster, app),
            http::Method::POST,
            "/v1/faults",
            &faults,
        )
        .await
        .expect("faults set");
    }

    /// Requests the demo apps named in `apps` answered, in each of `clusters` that runs them.
    pub(crate) async fn answered(&self, clusters: &[&str], apps: &[&str]) -> u64 {
        let mut total = 0.0;
        for c in self
            .set
            .clusters
            .iter()
            .filter(|c| clusters.contains(&c.spec.name.as_str()))
        {
            for app in apps {
                if self.set.process(&c.spec.name, app).is_some() {
                    let admin = self.admin_of(&c.spec.name, app);
                    total += metric(admin, "mesh_demo_app_requests_total", "").await;
                }
            }
        }
        total as u64
    }
}

/// The sum of the samples of `name` whose line contains `label` on an admin `/metrics`.
pub(crate) async fn metric(admin: SocketAddr, name: &str, label: &str) -> f64 {
    let text = mesh_launcher::admin_client::call(admin, http::Method::GET, "/metrics", None)
        .await
        .expect("metrics");
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(crate) async fn get(proxy: SocketAddr, url: &str) -> Answer {
    send(proxy, Proto::Http1, "GET", url, Bytes::new())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

pub(crate) fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Waits until `check` holds, polling; panics with `what` after `timeout`.
pub(crate) async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    mesh_test_support::eventually(what, timeout, async || check().await).await;
}

/// Open-loop GETs of `host` through the proxy at `proxy`, `rate` a second: the chaos suite's
/// driver, the workspace's one load generator (every request recorded, latency from its due
/// time).
pub(crate) fn start_load(proxy: SocketAddr, host: &str, rate: u32) -> LoadDriver {
    let spec = LoadSpec {
        client: String::new(),
        rate,
        protocol: Protocol::Http1,
        method: http::Method::GET,
        host: host.to_string(),
        body_bytes: 0,
        timeout: Duration::from_secs(10),
        capture: false,
    };
    LoadDriver::start(proxy, spec)
}

/// When an outcome of a load that started at `started` was due (sent, in an open loop).
pub(crate) fn due_at(started: tokio::time::Instant, outcome: &Outcome) -> Instant {
    started.into_std() + outcome.scheduled
}

/// Share of outcomes of a load started at `started`, due at or after `from` (and before `to`),
/// served by `cluster`.
pub(crate) fn share_served_by(
    outcomes: &[Outcome],
    started: tokio::time::Instant,
    from: Instant,
    to: Instant,
    cluster: &str,
) -> (f64, usize) {
    let window: Vec<_> = outcomes
        .iter()
        .filter(|o| (from..to).contains(&due_at(started, o)))
        .collect();
    if window.is_empty() {
        return (0.0, 0);
    }
    let n = window
        .iter()
        .filter(|o| o.ok() && o.served_by.as_deref() == Some(cluster))
        .count();
    (n as f64 / window.len() as f64, window.len())
}

/// Waits (at most `within`) until at least `share` of the requests due in the last `window` of
/// `load` were answered by `cluster`; returns how long that took.
pub(crate) async fn wait_served_by(
    load: &LoadDriver,
    cluster: &str,
    share: f64,
    window: Duration,
    within: Duration,
) -> Duration {
    let started = load.started();
    let what = format!("{share} of the requests of the last {window:?} served by {cluster}");
    mesh_test_support::eventually(&what, within, async || {
        let now = Instant::now();
        let (served, n) = share_served_by(&load.snapshot(), started, now - window, now, cluster);
        n > 0 && served >= share
    })
    .await
}

/// Fails the test when more than `max_share` of `result`'s requests failed or any was lost,
/// naming `what` was going on, the first failure and `logs`.
pub(crate) fn assert_failures_at_most(
    result: &mesh_chaos::load::LoadResult,
    max_share: f64,
    what: &str,
    logs: &str,
) {
    let failed: Vec<&Outcome> = result.outcomes.iter().filter(|o| !o.ok()).collect();
    let allowed = (result.outcomes.len() as f64 * max_share).floor() as usize;
    assert!(
        failed.len() <= allowed && result.lost() == 0,
        "{} of {} requests failed ({} lost, {allowed} allowed) {what}: first {:?}\n{logs}",
        failed.len(),
        result.outcomes.len(),
        result.lost(),
        failed.first()
    );
}

/// `dig @server -p port [+tcp] <name> [type]`: its status and its answers' last fields.
pub(crate) fn dig(server: SocketAddr, args: &[&str]) -> (String, Vec<String>) {
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=2", "+tries=1"])
        .args(["+noall", "+comments", "+answer"])
        .args(args)
        .output()
        .expect("dig runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("no answer")
        .to_string();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    (status, answers)
}
