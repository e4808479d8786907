//! `mesh gateway`: bind, bootstrap, start the core, serve admin, follow the controller's
//! replicas, and shut down cleanly on SIGINT or SIGTERM.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use mesh_core::admin::{AdminRoutes, AdminServer, Readiness, ResponseFuture};
use mesh_core::api::{PATH_STATUS, ReadyFile};
use mesh_core::renewal::{ControllerIssuer, RenewalStatus, Renewer, TokenFallback};
use mesh_core::serve::{DEFAULT_MAX_ADMIN_CONNECTIONS, Listening, ServeLimits};
use mesh_core::telemetry::{bind_tcp, shutdown_signal};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::args::{GatewayArgs, GatewayConfig};
use crate::controller_session::{FederationSink, bootstrap, follow_snapshots, report_loops};
use crate::controller_set::{ControllerSet, ResolveControllers, SystemResolver};
use crate::error::GatewayError;
use crate::gateway_core::{GatewayCore, LinkBoard};
use crate::metrics::ControllerMetrics;

/// Runs the gateway until SIGINT or SIGTERM.
pub async fn run(args: GatewayArgs) -> Result<(), GatewayError> {
    run_with_resolver(args, Arc::new(SystemResolver)).await
}

/// [`run`], with the controller's replicas found by `resolver` instead of the system's resolver
/// (a test naming replicas on several loopback addresses, or an embedder with its own
/// discovery).
pub async fn run_with_resolver(
    args: GatewayArgs,
    resolver: Arc<dyn ResolveControllers>,
) -> Result<(), GatewayError> {
    let GatewayConfig {
        member,
        settings,
        renew_at,
    } = GatewayConfig::from_args(args)?;
    let credentials = member.credentials()?;
    let admin_listener = bind_tcp("gateway", "admin", member.admin).await?;
    let admin_addr = admin_listener.local_addr().map_err(|e| {
        GatewayError::Bind(mesh_core::telemetry::bind_error(
            "gateway",
            "admin",
            member.admin,
            &e,
        ))
    })?;

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let (client, identity, own_bundle) = tokio::select! {
        r = bootstrap(&member.controller, &*resolver, &member.cluster, &credentials) => r?,
        _ = &mut shutdown => {
            tracing::info!("shutdown requested before the gateway was ready");
            return Ok(());
        }
    };

    let mut registry = Registry::default();
    // Renewals go to whichever replica answers (the replicas share the CA).
    let renew_client = client.with_replicas(&member.controller);
    let set = ControllerSet::new(
        member.controller.clone(),
        resolver,
        client,
        ControllerMetrics::new(&mut registry),
    );
    set.refresh().await;
    let (snapshots_tx, snapshots_rx) = watch::channel(None);
    let sink = Arc::new(FederationSink { set: set.clone() });
    let core = GatewayCore::start(
        settings,
        identity.clone(),
        own_bundle,
        snapshots_rx,
        sink,
        &mut registry,
    )
    .await?;
    let board = core.board();

    let readiness = Readiness::default();
    let renewal_status = RenewalStatus::register(&mut registry, &identity, Some(readiness.clone()));
    core.follow_renewal(renewal_status.clone());
    let renewer = Renewer::new(
        identity,
        Arc::new(ControllerIssuer::new(
            renew_client,
            Some(TokenFallback {
                cluster: member.cluster.clone(),
                ca_file: member.ca_file.clone(),
                token_file: member.token_file.clone(),
            }),
        )),
        renew_at,
        renewal_status,
    );
    let admin_listening = Listening {
        limits: ServeLimits::default(),
        cap: core
            .refused_connections()
            .cap("admin", DEFAULT_MAX_ADMIN_CONNECTIONS),
    };
    let admin = AdminServer::new(
        Arc::new(registry),
        readiness.clone(),
        Some(Arc::new(StatusRoute {
            board: board.clone(),
        })),
    );
    let tasks = [
        tokio::spawn(admin.serve_within(admin_listener, admin_listening)),
        tokio::spawn(set.clone().follow_resolution()),
        tokio::spawn(follow_snapshots(
            set.clone(),
            member.cluster.clone(),
            snapshots_tx,
        )),
        tokio::spawn(report_loops(set, board.clone())),
        tokio::spawn(renewer.run()),
    ];
    readiness.set(true);
    if let Some(path) = &member.ready_file {
        let ready = ReadyFile {
            component: "gateway".into(),
            cluster: member.cluster.clone(),
            addrs: BTreeMap::from([
                ("admin".to_string(), admin_addr),
                ("quic".to_string(), board.quic_addr()),
                ("tunnel".to_string(), board.tunnel_addr()),
            ]),
            pid: std::process::id(),
        };
        ready
            .write(path)
            .map_err(|source| GatewayError::ReadyFile {
                path: path.clone(),
                source,
            })?;
    }
    tracing::info!(cluster = %member.cluster, admin = %admin_addr, quic = %board.quic_addr(), tunnel = %board.tunnel_addr(), "gateway ready");

    shutdown.await;
    tracing::info!("shutting down: closing links");
    readiness.set(false);
    for task in &tasks {
        task.abort();
    }
    core.shutdown().await;
    Ok(())
}

/// `GET /v1/status` on the admin port: the report the controller receives.
struct StatusRoute {
    board: LinkBoard,
}

impl AdminRoutes for StatusRoute {
    fn route(&self, req: Request<Incoming>) -> Option<ResponseFuture> {
        if req.method() != Method::GET || req.uri().path() != PATH_STATUS {
            return None;
        }
        let report = self.board.report();
        Some(Box::pin(async move {
            mesh_core::http::json(StatusCode::OK, &report)
        }))
    }
}
