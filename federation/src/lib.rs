//! The federation controller of one cluster (`mesh controller`): its registry of local
//! services (registration API and static file, behind one trait), its certificate authority
//! (CSRs authenticated by the join token), its links with peer clusters (persisted in the state
//! directory), the peers' catalogs held under lease, the failover decision per service, and
//! the discovery streams that publish that decision to the cluster's sidecars and gateway. In
//! Kubernetes mode it may also serve the sidecar injection webhook (`injection`).
//!
//! It does not carry traffic or talk to other clusters itself: the gateway moves catalog
//! messages between clusters and reports link health, and sidecars route by the snapshots.
//! The decision (failover order, export health, leases, expiry) is pure code over injected
//! instants; the listeners around it only parse, authenticate and call into the shared state
//! behind one lock, which recomputes and publishes the view on every change.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin_api;
mod breaker_reports;
mod ca_rotation;
mod ca_service;
mod caller_rate;
mod config;
mod control_api;
mod control_listener;
mod controller;
mod discovery;
mod dns;
mod error;
mod export_cache;
mod failover;
#[doc(hidden)]
pub mod fuzz_entry;
mod injection;
mod kubernetes;
mod links;
mod metrics;
mod own_cert;
mod peering;
mod policy_board;
pub mod policy_files;
mod registry;
mod state;
mod stream_holders;
mod view;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::admin::{AdminServer, Readiness};
use mesh_core::api::ReadyFile;
use mesh_core::locality::LocalityPolicy;
use mesh_core::renewal::RenewalStatus;
use mesh_core::serve::{DEFAULT_MAX_ADMIN_CONNECTIONS, Listening, RefusedConnections, ServeLimits};
use mesh_core::telemetry::{bind_error, bind_tcp, shutdown_signal};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{ControllerArgs, ControllerConfig, KubernetesConfig, StateStore};
pub use dns::{DnsSettings, ForwardSettings};
pub use error::{ApiError, FederationError};
pub use injection::WebhookConfig;
pub use registry::StaticFileError;

use crate::admin_api::AdminApi;
use crate::ca_service::CaService;
use crate::control_api::ControlApi;
use crate::control_listener::{ServingTls, serve_control};
use crate::controller::Controller;
use crate::dns::VipStore;
use crate::export_cache::ExportCache;
use crate::links::LinkStore;
use crate::metrics::Metrics;
use crate::policy_board::PolicyBoard;
use crate::registry::StaticServices;
use crate::state::{FederationState, StateConfig};

/// How often leases, registrations and reports are expired and the view recomputed: well
/// inside the one-second convergence the design promises.
const TICK: Duration = Duration::from_millis(500);
/// Breaker quorum: a majority of reporting sidecars (see `LocalityPolicy`).
const BREAKER_QUORUM: f64 = 0.5;

/// A controller started by [`start`]: its bound addresses and the handle to stop it.
#[derive(Debug)]
pub struct RunningController {
    /// The bound control (TLS) address.
    pub control_addr: SocketAddr,
    /// The bound admin (plain HTTP) address.
    pub admin_addr: SocketAddr,
    /// The bound DNS address (UDP and TCP).
    pub dns_addr: SocketAddr,
    /// The bound injection webhook address (HTTPS), when on.
    pub webhook_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    admin: JoinHandle<()>,
}

impl RunningController {
    /// Stops accepting, ends the streams, drains open requests and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.admin.abort();
        let _ = self.admin.await;
        tracing::info!("controller stopped");
    }
}

/// Loads the state directory, binds the listeners and starts serving; returns once ready
/// (and, with `--ready-file`, after writing it).
pub async fn start(args: ControllerArgs) -> Result<RunningController, FederationError> {
    let config = ControllerConfig::from_args(args)?;
    let (ca, links, export_cache, kubernetes) = match &config.store {
        StateStore::Directory(dir) => {
            let ca = CaService::load(dir, &config.cluster, config.cert_ttl)?;
            let links = LinkStore::load(dir, &config.cluster, ca.trust_domain())?;
            (ca, links, ExportCache::in_dir(dir), None)
        }
        StateStore::Kubernetes(k) => {
            let kubernetes::Prepared {
                ca,
                cached_exports,
                runner,
            } = kubernetes::prepare(
                k.settings.clone(),
                &config.cluster,
                config.cert_ttl,
                config.lease_grace,
            )
            .await?;
            let links = LinkStore::ephemeral(&config.cluster, ca.trust_domain());
            let cache = ExportCache::preloaded(cached_exports);
            (ca, links, cache, Some(runner))
        }
    };
    // After the state directory proved usable (a missing one says to run `mesh ca`).
    let admin_auth = config.admin_token.load()?;
    let trust_domain = ca.trust_domain().to_string();
    let rotation = Arc::new(ca_rotation::CaRotation::load(
        &config.cluster,
        match &config.store {
            StateStore::Directory(dir) => Some(dir.as_path()),
            StateStore::Kubernetes(_) => None,
        },
    )?);
    let static_services = match &config.services_file {
        Some(path) => {
            let s = StaticServices::load(path, &trust_domain)?;
            tracing::info!(file = %path.display(), endpoints = s.len(), "static services loaded");
            Some(s)
        }
        None => None,
    };
    let own_identity = own_cert::issue(&ca)?;
    ca.signer().renew_on_switch(own_identity.clone());
    let tls = ServingTls::new(own_cert::serving_config(&ca, &own_identity)?);

    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let refused = RefusedConnections::register(&mut registry, "mesh_controller");
    let readiness = Readiness::default();
    let own_status = RenewalStatus::register(&mut registry, &own_identity, Some(readiness.clone()));
    let extra_backends: Vec<Arc<dyn registry::ServiceRegistry>> = kubernetes
        .iter()
        .map(|k| k.registry.clone() as Arc<dyn registry::ServiceRegistry>)
        .collect();
    let state = FederationState::new(
        StateConfig {
            cluster: config.cluster.clone(),
            region: config.region.clone(),
            own_bundle: ca.bundle(),
            policy: LocalityPolicy {
                region_priority: config.region_priority.clone(),
                breaker_quorum: BREAKER_QUORUM,
            },
            lease_grace: config.lease_grace,
            registration_ttl: config.registration_ttl,
            initial_version: unix_millis(),
        },
        links,
        static_services,
        extra_backends,
        export_cache,
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let controller = Controller::new(state, ca, metrics, shutdown_rx.clone());
    let vips = Arc::new(Mutex::new(config.dns.vip_table()));
    let kube_client = kubernetes.as_ref().map(|runner| runner.client());
    let policy_board = Arc::new(PolicyBoard::default());
    let mut kubernetes_tasks = match kubernetes {
        Some(runner) => {
            runner
                .start(
                    controller.clone(),
                    readiness.clone(),
                    vips.clone(),
                    policy_board.clone(),
                )
                .await?
        }
        None => Vec::new(),
    };
    let webhook = match (&config.webhook, &config.store, kube_client) {
        (Some(webhook), StateStore::Kubernetes(k), Some(client)) => {
            let started = injection::start(
                injection::WebhookStart {
                    config: webhook.clone(),
                    cluster: &config.cluster,
                    namespace: &k.settings.namespace,
                    controller: controller.clone(),
                    cert_ttl: config.cert_ttl,
                    client,
                },
                shutdown_rx.clone(),
            )
            .await;
            match started {
                Ok(w) => {
                    kubernetes_tasks.extend(w.tasks);
                    Some(w.addr)
                }
                Err(e) => {
                    let _ = shutdown_tx.send(true);
                    return Err(e);
                }
            }
        }
        _ => None,
    };

    let control = bind_tcp("controller", "control", config.control).await?;
    let admin = bind_tcp("controller", "admin", config.admin).await?;
    let bound = |l: &tokio::net::TcpListener, addr| l.local_addr().unwrap_or(addr);
    let control_addr = bound(&control, config.control);
    let admin_addr = bound(&admin, config.admin);

    let admin_server = AdminServer::guarded(
        Arc::new(registry),
        readiness.clone(),
        Some(Arc::new(AdminApi::new(
            controller.clone(),
            policy_board.clone(),
            rotation,
        ))),
        admin_auth,
    );
    let admin_task = tokio::spawn(admin_server.serve_within(
        admin,
        Listening {
            limits: ServeLimits::default(),
            cap: refused.cap("admin", DEFAULT_MAX_ADMIN_CONNECTIONS),
        },
    ));
    let mut tasks = kubernetes_tasks;
    let vip_store = match &config.store {
        StateStore::Directory(dir) => VipStore::in_dir(dir),
        StateStore::Kubernetes(_) => VipStore::ServiceImports,
    };
    vips.lock()
        .unwrap_or_else(|p| p.into_inner())
        .restore(vip_store.load());
    let dns = match dns::start(&config.dns, controller.clone(), vips.clone(), vip_store).await {
        Ok(dns) => dns,
        Err(e) => {
            let _ = shutdown_tx.send(true);
            return Err(bind_error("controller", "dns", config.dns.addr, &e).into());
        }
    };
    tasks.extend(dns.tasks);
    let dns_addr = dns.addr;
    tasks.extend([
        tokio::spawn(serve_control(
            control,
            tls,
            ControlApi::new(controller.clone(), vips),
            refused.cap("control", control_listener::MAX_CONTROL_CONNECTIONS),
            shutdown_rx.clone(),
        )),
        tokio::spawn(tick_loop(controller.clone(), shutdown_rx.clone())),
        tokio::spawn(own_cert::renew(
            controller.clone(),
            own_identity,
            own_status,
            shutdown_rx.clone(),
        )),
    ]);
    // In Kubernetes mode the policy objects are watched instead (`kubernetes::policy`): one
    // source puts the policy in force, never two.
    if matches!(config.store, StateStore::Directory(_)) {
        tasks.push(tokio::spawn(policy_files::watch_files(
            controller.clone(),
            policy_board,
            config.policy_files.clone(),
            shutdown_rx,
        )));
    }
    readiness.set(true);
    let links = controller.read(|s, _| s.links().len());
    tracing::info!(
        cluster = %config.cluster,
        region = %config.region,
        control = %control_addr,
        admin = %admin_addr,
        dns = %dns_addr,
        links,
        "controller ready"
    );
    let running = RunningController {
        control_addr,
        admin_addr,
        dns_addr,
        webhook_addr: webhook,
        shutdown: shutdown_tx,
        tasks,
        admin: admin_task,
    };
    if let Some(path) = &config.ready_file {
        let ready = ReadyFile {
            component: "controller".into(),
            cluster: config.cluster.clone(),
            addrs: BTreeMap::from([
                ("control".to_string(), control_addr),
                ("admin".to_string(), admin_addr),
                ("dns".to_string(), dns_addr),
            ])
            .into_iter()
            .chain(webhook.map(|addr| ("webhook".to_string(), addr)))
            .collect(),
            pid: std::process::id(),
        };
        if let Err(source) = ready.write(path) {
            running.shutdown().await;
            return Err(FederationError::ReadyFile {
                path: path.clone(),
                source,
            });
        }
    }
    Ok(running)
}

/// Runs the controller until SIGINT or SIGTERM, then shuts it down cleanly.
pub async fn run(args: ControllerArgs) -> Result<(), FederationError> {
    let running = start(args).await?;
    shutdown_signal().await;
    tracing::info!("shutdown signal received");
    running.shutdown().await;
    Ok(())
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

async fn tick_loop(controller: Arc<Controller>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => controller.tick(),
            _ = shutdown.changed() => return,
        }
    }
}
