//! `run_until` against a stand-in controller: bootstrap with the join token, ready file,
//! registration heartbeats, on-demand discovery (the stream re-opened with the new interest
//! set), static stability while the controller's stream is gone, breaker reports, and
//! deregistration on shutdown.

mod common;

use mesh_sidecar::transparent::{InboundPolicy, OutboundPolicy};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use mesh_core::api::{
    BreakerReport, CsrRequest, CsrResponse, ReadyFile, RouteEndpoint, ServiceRoute,
    SidecarSnapshot, WorkloadRegistration,
};
use mesh_core::http::{BoxBody, json, read_json, text};
use mesh_core::identity::SpiffeId;
use mesh_core::member_args::ClusterMemberArgs;
use mesh_core::names::ServiceKey;
use mesh_core::serve;
use mesh_sidecar::SidecarArgs;

const TOKEN: &str = "join-secret";

/// What the stand-in controller saw, and the discovery streams it holds open.
#[derive(Default)]
struct Seen {
    queries: Vec<String>,
    registrations: Vec<WorkloadRegistration>,
    deletes: Vec<String>,
    reports: Vec<BreakerReport>,
    streams: Vec<tokio::sync::mpsc::Sender<Bytes>>,
    /// Endpoints of echo.demo handed out in snapshots.
    echo: Vec<RouteEndpoint>,
    version: u64,
    /// While set, discovery streams are refused (the controller is "down").
    refuse_discovery: bool,
}

struct FakeController {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    _task: Task,
}

impl FakeController {
    async fn start(cluster: Arc<Cluster>) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let id = SpiffeId::controller(&cluster.bundle.trust_domain);
        let (addr, task) = serve_mtls_h2(&cluster.clone(), &id, true, move |req| {
            let (seen, cluster) = (shared.clone(), cluster.clone());
            async move { controller(req, &seen, &cluster).await }
        })
        .await;
        Self {
            addr,
            seen,
            _task: task,
        }
    }

    fn seen<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.seen.lock().unwrap())
    }

    /// Sets echo's endpoints and streams the new snapshot on the latest discovery stream, as
    /// the real controller does when its view changes.
    fn set_echo(&self, cluster: &Cluster, endpoints: Vec<RouteEndpoint>) {
        let mut seen = self.seen.lock().unwrap();
        seen.echo = endpoints;
        let services: Vec<ServiceKey> = seen
            .queries
            .last()
            .and_then(|q| q.strip_prefix("services="))
            .unwrap_or_default()
            .split(',')
            .filter_map(|s| s.parse().ok())
            .collect();
        let snap = snapshot_for(&mut seen, cluster, &services);
        let mut line = serde_json::to_vec(&snap).unwrap();
        line.push(b'\n');
        if let Some(stream) = seen.streams.last() {
            let _ = stream.try_send(Bytes::from(line));
        }
    }
}

fn snapshot_for(seen: &mut Seen, cluster: &Cluster, services: &[ServiceKey]) -> SidecarSnapshot {
    seen.version += 1;
    let mut snap = SidecarSnapshot {
        version: seen.version,
        cluster: cluster.name.clone(),
        trust_bundles: vec![cluster.bundle.clone()],
        gateway: None,
        services: BTreeMap::new(),
        unknown: vec![],
        policies: Default::default(),
        epoch: 0,
        warming: false,
    };
    for s in services {
        if *s == echo() {
            snap.services.insert(
                s.clone(),
                ServiceRoute {
                    localities: vec![locality(&cluster.name, seen.echo.clone())],
                },
            );
        } else {
            snap.unknown.push(s.clone());
        }
    }
    snap
}

async fn controller(
    req: Request<Incoming>,
    seen: &Mutex<Seen>,
    cluster: &Cluster,
) -> Response<BoxBody> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/v1/certificates") => {
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if auth != format!("Bearer {TOKEN}") {
                return text(StatusCode::UNAUTHORIZED, "bad join token");
            }
            let csr: CsrRequest = match read_json(req.into_body(), 1 << 20).await {
                Ok(c) => c,
                Err(e) => return e.response(),
            };
            match cluster.ca.sign_csr(&csr.csr_pem, DAY, |_| Ok(())) {
                Ok((_, pem)) => json(
                    StatusCode::OK,
                    &CsrResponse {
                        cert_chain_pem: pem,
                        trust_bundle: cluster.bundle.clone(),
                    },
                ),
                Err(e) => text(StatusCode::FORBIDDEN, e.to_string()),
            }
        }
        (Method::GET, "/v1/discovery") if seen.lock().unwrap().refuse_discovery => {
            text(StatusCode::SERVICE_UNAVAILABLE, "controller is restarting")
        }
        (Method::GET, "/v1/discovery") => {
            let query = req.uri().query().unwrap_or_default().to_string();
            let services: Vec<ServiceKey> = query
                .strip_prefix("services=")
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.is_empty())
                .filter_map(|s| s.parse().ok())
                .collect();
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let mut seen = seen.lock().unwrap();
            let snap = snapshot_for(&mut seen, cluster, &services);
            let mut line = serde_json::to_vec(&snap).unwrap();
            line.push(b'\n');
            let _ = tx.try_send(Bytes::from(line));
            seen.queries.push(query);
            seen.streams.push(tx);
            Response::new(http_body_util::BodyExt::boxed(ChannelBody(rx)))
        }
        (Method::PUT, "/v1/breaker-reports") => {
            match read_json::<BreakerReport, _>(req.into_body(), 1 << 20).await {
                Ok(r) => {
                    seen.lock().unwrap().reports.push(r);
                    text(StatusCode::OK, "ok")
                }
                Err(e) => e.response(),
            }
        }
        (Method::PUT, p) if p.starts_with("/v1/workloads/") => {
            match read_json::<WorkloadRegistration, _>(req.into_body(), 1 << 20).await {
                Ok(r) => {
                    seen.lock().unwrap().registrations.push(r);
                    text(StatusCode::OK, "ok")
                }
                Err(e) => e.response(),
            }
        }
        (Method::DELETE, p) if p.starts_with("/v1/workloads/") => {
            seen.lock()
                .unwrap()
                .deletes
                .push(p.trim_start_matches("/v1/workloads/").to_string());
            text(StatusCode::OK, "ok")
        }
        _ => text(StatusCode::NOT_FOUND, format!("no route {path}")),
    }
}

async fn metrics(admin: SocketAddr) -> anyhow::Result<String> {
    let rsp = h1(admin, Method::GET, "/metrics", Some("admin"), vec![]).await?;
    Ok(rsp.text())
}

async fn wait_async(what: &str, deadline: Duration, cond: impl AsyncFnMut() -> bool) {
    mesh_test_support::eventually(what, deadline, cond).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_bootstraps_registers_discovers_on_demand_and_deregisters() -> anyhow::Result<()>
{
    let east = Arc::new(Cluster::new("us-east"));
    let ctl = FakeController::start(east.clone()).await;
    let app = TestApp::start("echo-0").await;
    let dir = std::env::temp_dir().join(format!("mesh-sidecar-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("ca.crt"), east.ca.cert_pem())?;
    std::fs::write(dir.join("join-token"), format!("{TOKEN}\n"))?;
    let ready_path = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready_path);

    let args = sidecar_args(
        member(ctl.addr, &dir, Some(ready_path.clone())),
        "echo-0",
        Some((echo(), app.addr)),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sidecar = tokio::spawn(mesh_sidecar::run_until(args, async {
        let _ = stop_rx.await;
    }));

    // Ready file with the bound addresses, once the app answered.
    eventually("the ready file", Duration::from_secs(10), || {
        ready_path.exists()
    })
    .await;
    let ready = ReadyFile::read(&ready_path)?;
    assert_eq!(
        (ready.component.as_str(), ready.cluster.as_str()),
        ("sidecar", "us-east")
    );
    let (inbound, outbound, admin) = (
        ready.addr("inbound").expect("inbound"),
        ready.addr("outbound").expect("outbound"),
        ready.addr("admin").expect("admin"),
    );
    assert_eq!(
        h1(admin, Method::GET, "/readyz", Some("admin"), vec![])
            .await?
            .status,
        StatusCode::OK
    );

    // Registration heartbeat: the inbound address, the issued identity, healthy.
    eventually("a healthy registration", Duration::from_secs(5), || {
        ctl.seen(|s| s.registrations.iter().any(|r| r.healthy))
    })
    .await;
    let registration = ctl
        .seen(|s| s.registrations.iter().rev().find(|r| r.healthy).cloned())
        .expect("registered");
    assert_eq!(registration.address, inbound);
    assert_eq!(
        registration.identity,
        "spiffe://us-east.mesh/ns/demo/sa/echo"
    );
    assert_eq!(registration.service, echo());

    // The sidecar asks for its own service from the start (its inbound policy comes with
    // it). The controller will route echo.demo to this very sidecar's inbound.
    eventually("the own service asked for", Duration::from_secs(5), || {
        ctl.seen(|s| s.queries.iter().any(|q| q == "services=echo.demo"))
    })
    .await;
    ctl.set_echo(
        &east,
        vec![RouteEndpoint {
            address: inbound,
            identity: registration.identity.clone(),
            healthy: true,
            plaintext: false,
        }],
    );
    // The streamed snapshot is applied moments later: wait for the first answer from it.
    wait_async(
        "routed by the new snapshot",
        Duration::from_secs(5),
        async || {
            get(outbound, "/")
                .await
                .is_ok_and(|r| r.status == StatusCode::OK)
        },
    )
    .await;
    let rsp = get(outbound, "/").await?;
    assert_eq!(rsp.status, StatusCode::OK, "{}", rsp.text());
    assert_eq!(rsp.header("x-mesh-cluster"), Some("us-east"));
    let queries = ctl.seen(|s| s.queries.clone());
    assert_eq!(
        queries.last().map(String::as_str),
        Some("services=echo.demo"),
        "{queries:?}"
    );

    // A service nobody exports: 503 naming it and the controller asked.
    let rsp = h1(
        outbound,
        Method::GET,
        "http://nope.demo.svc.clusterset.local/",
        None,
        vec![],
    )
    .await?;
    assert_eq!(rsp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        rsp.text().contains(&format!(
            "service nope.demo is not exported by any linked cluster (asked controller at {})",
            ctl.addr
        )),
        "{}",
        rsp.text()
    );

    let text = metrics(admin).await?;
    assert!(
        text.contains("mesh_sidecar_discovery_connected 1"),
        "{text}"
    );
    assert!(text.contains("mesh_sidecar_snapshot_version"), "{text}");

    // The controller drops every stream and refuses new ones for a while: the sidecar keeps
    // serving from its last snapshot, then re-subscribes once the controller is back.
    let opened = ctl.seen(|s| {
        s.refuse_discovery = true;
        s.streams.clear();
        s.queries.len()
    });
    wait_async(
        "discovery disconnected",
        Duration::from_secs(5),
        async || {
            metrics(admin)
                .await
                .is_ok_and(|t| t.contains("mesh_sidecar_discovery_connected 0"))
        },
    )
    .await;
    for _ in 0..5 {
        assert_eq!(
            get(outbound, "/").await?.status,
            StatusCode::OK,
            "served from the last snapshot"
        );
    }
    ctl.seen(|s| s.refuse_discovery = false);
    eventually("a re-subscription", Duration::from_secs(5), || {
        ctl.seen(|s| s.queries.len() > opened)
    })
    .await;
    assert_eq!(
        ctl.seen(|s| s.queries.last().cloned()).as_deref(),
        Some("services=echo.demo,nope.demo")
    );
    wait_async(
        "discovery connected again",
        Duration::from_secs(5),
        async || {
            metrics(admin)
                .await
                .is_ok_and(|t| t.contains("mesh_sidecar_discovery_connected 1"))
        },
    )
    .await;

    // Breaker state is reported (every 5 s at the latest).
    eventually("a breaker report", Duration::from_secs(7), || {
        ctl.seen(|s| {
            s.reports
                .iter()
                .any(|r| r.reporter == "echo-0" && r.breakers.iter().any(|b| b.service == echo()))
        })
    })
    .await;

    // Shutdown: the workload is deregistered and run returns.
    stop_tx.send(()).ok();
    tokio::time::timeout(Duration::from_secs(5), sidecar).await???;
    assert_eq!(ctl.seen(|s| s.deletes.clone()), vec!["echo-0".to_string()]);
    assert!(
        tokio::net::TcpStream::connect(outbound).await.is_err(),
        "listeners closed"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_join_token_fails_bootstrap_with_the_controllers_reason() -> anyhow::Result<()> {
    let east = Arc::new(Cluster::new("us-east"));
    let ctl = FakeController::start(east.clone()).await;
    let dir = std::env::temp_dir().join(format!("mesh-sidecar-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("ca.crt"), east.ca.cert_pem())?;
    std::fs::write(dir.join("join-token"), "wrong")?;
    let args = sidecar_args(member(ctl.addr, &dir, None), "client-0", None);
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        mesh_sidecar::run_until(args, std::future::pending()),
    )
    .await?
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("bootstrapping the workload identity"), "{msg}");
    let chain = format!("{:?}", err);
    assert!(chain.contains("bad join token"), "{chain}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The shared flags of a sidecar of `us-east` whose credentials are in `dir`.
fn member(
    controller: SocketAddr,
    dir: &std::path::Path,
    ready_file: Option<std::path::PathBuf>,
) -> ClusterMemberArgs {
    ClusterMemberArgs {
        cluster: "us-east".into(),
        controller: controller.into(),
        ca_file: dir.join("ca.crt"),
        token_file: dir.join("join-token"),
        admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        ready_file,
    }
}

/// The flags of sidecar `id` in namespace `demo` with `member`, in front of `app` (a service
/// and its app's address) or of nothing, on ephemeral ports, every limit at its default.
fn sidecar_args(
    member: ClusterMemberArgs,
    id: &str,
    app: Option<(ServiceKey, SocketAddr)>,
) -> SidecarArgs {
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    SidecarArgs {
        member,
        id: id.into(),
        namespace: "demo".into(),
        service_account: None,
        service: app.as_ref().map(|(service, _)| service.clone()),
        app: app.map(|(_, addr)| addr),
        inbound: any_port,
        advertise: None,
        outbound: any_port,
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        no_latency_weighting: false,
        no_register: false,
        outbound_policy: OutboundPolicy::AllowAny,
        inbound_policy: InboundPolicy::Permissive,
        vip_range: "240.240.0.0/16".parse().expect("a valid range"),
        cache_max_bytes: mesh_core::policy::http_cache::DEFAULT_CAPACITY_BYTES,
        max_inbound_connections: serve::DEFAULT_MAX_CONNECTIONS,
        max_outbound_connections: serve::DEFAULT_MAX_CONNECTIONS,
        max_admin_connections: serve::DEFAULT_MAX_ADMIN_CONNECTIONS,
        max_header_bytes: serve::DEFAULT_MAX_HEADER_BYTES,
        header_read_timeout: serve::DEFAULT_HEADER_READ_TIMEOUT,
        idle_timeout: serve::DEFAULT_IDLE_TIMEOUT,
        renew_at: Default::default(),
    }
}
