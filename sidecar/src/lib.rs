//! The sidecar proxy (`mesh sidecar`), one per workload. It owns both directions of the
//! workload's traffic: *outbound*, a plain HTTP proxy for the app that resolves mesh names,
//! balances over localities (priority spill, outlier detection, circuit breakers, P2C) and
//! forwards over pooled mTLS HTTP/2, directly in the own cluster or through the gateway's
//! tunnel to other clusters, retrying within a budget; *inbound*, an mTLS listener that
//! verifies peers against the linked trust bundles and forwards to the app. With `mesh init`'s
//! capture rules in the workload's network namespace, both listeners also take the app's
//! connections that were never addressed to the sidecar ([`transparent`]: HTTP and opaque TCP
//! to mesh VIPs, passthrough elsewhere, plaintext from outside the mesh). Around them it
//! bootstraps its identity, follows the controller's discovery snapshots on demand, registers
//! and heartbeats its workload, and reports its breakers.
//!
//! It does not decide the locality order (the controller does), carry traffic between clusters
//! (the gateway does), or implement the pure traffic logic (`mesh-core` does). The core of the
//! sidecar, [`state::SidecarState`], runs without a controller: tests push snapshots into it;
//! [`discovery`], [`registration`] and [`breaker_reports`] connect it to the controller through
//! [`mesh_core::control_client::ControlClient`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
pub mod breaker_reports;
pub mod capture;
pub mod discovery;
pub mod error;
pub mod facts;
pub mod headers;
pub mod identity;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod registration;
pub mod request_metrics;
pub mod snapshot_merge;
pub mod stack;
pub mod state;
#[cfg(test)]
mod test_state;
pub mod timeout;
pub mod transparent;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_core::admin::{AdminServer, Readiness};
use mesh_core::api::{ReadyFile, WorkloadRegistration};
use mesh_core::latency_weight::LatencyWeightConfig;
use mesh_core::serve::{Listening, RefusedConnections};
use mesh_core::telemetry::{bind_tcp, shutdown_signal};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use args::{SidecarArgs, SidecarConfig};
pub use error::SidecarError;
pub use state::{SidecarState, StateOptions};

use crate::outbound::balancer::ResilienceConfig;

/// Component name in logs, bind errors and the ready file.
const COMPONENT: &str = "sidecar";

/// Runs a sidecar until SIGINT or SIGTERM, then deregisters and stops.
pub async fn run(args: SidecarArgs) -> Result<(), SidecarError> {
    run_until(args, shutdown_signal()).await
}

/// Runs a sidecar until `shutdown` resolves, then deregisters and stops (tests and embedders
/// choose their own stop condition).
pub async fn run_until(
    args: SidecarArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SidecarError> {
    tokio::pin!(shutdown);
    let config = SidecarConfig::from_args(args)?;
    let member = &config.member;
    let (client, identity) = identity::bootstrap(&config).await?;

    let mut registry = Registry::default();
    let metrics = metrics::Metrics::new(&mut registry);
    let refused = RefusedConnections::register(&mut registry, "mesh_sidecar");
    let caps = config.max_connections;
    let listening = |listener: &str, max| Listening {
        limits: config.serve_limits,
        cap: refused.cap(listener, max),
    };
    let state = SidecarState::new(
        StateOptions {
            cluster: member.cluster.clone(),
            identity,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            resilience: ResilienceConfig {
                latency: LatencyWeightConfig {
                    enabled: config.latency_weighting,
                    ..LatencyWeightConfig::default()
                },
                ..ResilienceConfig::default()
            },
            discovery_source: format!("controller at {}", member.controller),
            cache_max_bytes: config.cache_max_bytes,
        },
        metrics,
    );

    let admin = bind_tcp(COMPONENT, "admin", member.admin).await?;
    let outbound = bind_tcp(COMPONENT, "outbound", config.outbound).await?;
    let inbound = match &config.served {
        Some(_) => Some(bind_tcp(COMPONENT, "inbound", config.inbound).await?),
        None => None,
    };
    let mut addrs = BTreeMap::from([
        ("admin".to_string(), local_addr(&admin, "admin")?),
        ("outbound".to_string(), local_addr(&outbound, "outbound")?),
    ]);
    if let Some(listener) = &inbound {
        addrs.insert("inbound".to_string(), local_addr(listener, "inbound")?);
    }

    let readiness = Readiness::default();
    let renewal_status = mesh_core::renewal::RenewalStatus::register(
        &mut registry,
        &state.identity().identity,
        Some(readiness.clone()),
    );
    let mut tasks = JoinSet::new();
    tasks.spawn(identity::renewal(&config, client.clone(), state.identity(), renewal_status).run());
    tasks.spawn(
        AdminServer::new(Arc::new(registry), readiness.clone(), None)
            .serve_within(admin, listening("admin", caps.admin)),
    );
    let own_ports = addrs.values().map(SocketAddr::port).collect();
    let capture = Arc::new(
        transparent::Capture::new(
            transparent::CaptureSettings {
                vip_range: config.vip_range,
                outbound: config.outbound_policy,
                inbound: config.inbound_policy,
                own_ports,
            },
            transparent::VipLookup::from_controller(client.clone()),
            state.metrics().clone(),
            config.connect_timeout,
        )
        .serving_within(config.serve_limits),
    );
    tasks.spawn(outbound::serve_within(
        outbound,
        state.clone(),
        capture.clone(),
        refused.cap("outbound", caps.outbound),
    ));
    tasks.spawn(discovery::run(state.clone(), client.clone()));
    tasks.spawn(breaker_reports::run(
        state.clone(),
        client.clone(),
        config.id.clone(),
    ));

    let mut heartbeat = None;
    if let (Some(served), Some(listener)) = (&config.served, inbound) {
        let bound = local_addr(&listener, "inbound")?;
        let advertised = config.advertise.unwrap_or(bound);
        tasks.spawn(inbound::server::serve_within(
            listener,
            state.clone(),
            served.service.clone(),
            served.app,
            advertised,
            capture,
            listening("inbound", caps.inbound),
        ));
        let (health_tx, mut health_rx) = tokio::sync::watch::channel(false);
        tasks.spawn(registration::check_app(
            served.app,
            health_tx,
            readiness.clone(),
        ));
        let registration = WorkloadRegistration {
            id: config.id.clone(),
            service: served.service.clone(),
            cluster: member.cluster.clone(),
            address: advertised,
            identity: state.identity().id().to_string(),
            healthy: false,
        };
        if config.register {
            heartbeat = Some(tasks.spawn(registration::heartbeat(
                client.clone(),
                registration,
                health_rx.clone(),
            )));
        }
        // Ready once the app answers; a stop signal while waiting is a clean stop.
        tracing::info!(app = %served.app, "waiting for the app to answer");
        tokio::select! {
            // The guard `wait_for` returns is not Send: drop it inside the branch.
            _ = async { health_rx.wait_for(|healthy| *healthy).await.is_ok() } => {}
            _ = &mut shutdown => {
                stop(tasks, heartbeat, &client, &config).await;
                return Ok(());
            }
        }
    } else {
        readiness.set(true);
    }

    if let Some(path) = &member.ready_file {
        let ready = ReadyFile {
            component: COMPONENT.to_string(),
            cluster: member.cluster.clone(),
            addrs: addrs.clone(),
            pid: std::process::id(),
        };
        ready
            .write(path)
            .map_err(|source| SidecarError::ReadyFile {
                path: path.clone(),
                source,
            })?;
    }
    tracing::info!(
        id = %config.id,
        identity = %state.identity().id(),
        addrs = ?addrs,
        "sidecar ready"
    );
    shutdown.await;
    tracing::info!("stopping");
    stop(tasks, heartbeat, &client, &config).await;
    Ok(())
}

/// Deregisters the workload (heartbeat first, so it cannot re-register), then stops every
/// task: listeners close and their connections end.
async fn stop(
    mut tasks: JoinSet<()>,
    heartbeat: Option<tokio::task::AbortHandle>,
    client: &mesh_core::control_client::ControlClient,
    config: &SidecarConfig,
) {
    if let Some(heartbeat) = heartbeat {
        heartbeat.abort();
        registration::deregister(client, &config.id).await;
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

fn local_addr(listener: &TcpListener, role: &'static str) -> Result<SocketAddr, SidecarError> {
    listener
        .local_addr()
        .map_err(|source| SidecarError::LocalAddr { role, source })
}
