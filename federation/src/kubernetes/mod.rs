//! Kubernetes mode (`mesh controller --kubernetes`): the controller's state lives in Kubernetes
//! objects instead of the state directory.
//!
//! | what | object | who writes |
//! |---|---|---|
//! | the cluster CA and join token | Secret (`--ca-secret`, `mesh-ca` by default) | the first replica, when the chart names none |
//! | the root certificate for workloads | ConfigMap `mesh-root-ca` | every replica (same content) |
//! | exported services | `ServiceExport` + Service + EndpointSlices + Pods | users; `status` by the leader |
//! | imported services | `ServiceImport` (one per service exported anywhere) | the leader |
//! | links | `Link` (cluster-scoped, one per peer) | `mesh link`; `status` by the leader |
//! | this cluster's link information | ConfigMap `mesh-link-info` | the leader |
//! | the export catalog cache | ConfigMap `mesh-export-cache` | the leader |
//! | leadership | Lease `mesh-controller` | the replicas |
//! | traffic policy | `HTTPRoute` (with a Service parent), `FaultPolicy`, `RateLimitPolicy`, `CachePolicy`, `BackendPolicy` | users; `status` by the leader ([`policy`]) |
//! | the injection webhook's `caBundle` | MutatingWebhookConfiguration `mesh-sidecar-injector` | every replica (same content; see `crate::injection`) |
//!
//! Every replica watches the same objects and computes the same state, so every replica serves
//! discovery and the CA; only writes to the API server are the leader's. Workloads authenticate
//! to the CA with ServiceAccount tokens ([`token_review`]).

pub(crate) mod ca_secret;
pub(crate) mod imports;
pub(crate) mod leader;
pub(crate) mod links;
pub(crate) mod policy;
pub(crate) mod registry;
pub(crate) mod token_review;
mod watch;
mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use mesh_core::admin::Readiness;
use mesh_core::catalog::ExportCatalog;
use mesh_k8s::client::ClusterSource;
use mesh_k8s::link::Link;
use mesh_k8s::mcs::{ServiceExport, ServiceImport};
use mesh_k8s::names::{
    EXPORT_CACHE_CONFIGMAP, EXPORT_CACHE_KEY, LEADER_LEASE, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    TOKEN_AUDIENCE,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use self::links::Acceptance;
use self::registry::{KubernetesRegistry, WatchedObjects};
use self::token_review::{ApiTokenReviewer, ServiceAccountRef};
use self::watch::{ApiHealth, reflect};
use crate::ca_service::{CaService, KubernetesAuth};
use crate::controller::Controller;
use crate::error::FederationError;
use crate::export_cache::ExportedServices;

/// Annotation on the export cache ConfigMap: when it was written (Unix milliseconds).
const SAVED_AT_ANNOTATION: &str = "mesh.dev/saved-at";
/// How long the first list of every watched kind may take before start-up fails.
const INITIAL_SYNC: Duration = Duration::from_secs(60);
/// Changes arriving together are applied together.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The Kubernetes settings of the controller (`--kubernetes` and the flags beside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KubernetesSettings {
    /// Kubeconfig file; `None`: in-cluster config.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace the chart is installed in.
    pub namespace: String,
    /// This replica's name (its pod), its identity in the leader election.
    pub pod_name: String,
    /// The CA Secret.
    pub ca_secret: String,
    /// Whether the controller may create the CA Secret when it does not exist.
    pub create_ca: bool,
    /// The gateway's ServiceAccount (in `namespace`).
    pub gateway_service_account: String,
    /// How long the leader Lease lasts without renewal.
    pub leader_lease: Duration,
}

/// What is read from the API server before the controller's state can be built.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The CA service (ServiceAccount tokens accepted).
    pub ca: CaService,
    /// The export catalog cached by the previous leader, when younger than the lease grace.
    pub cached_exports: Option<ExportedServices>,
    /// What starts the watches once the controller exists.
    pub runner: Runner,
}

/// Starts Kubernetes mode's tasks ([`Runner::start`]).
pub(crate) struct Runner {
    client: Client,
    settings: KubernetesSettings,
    /// The registry backend the watches fill.
    pub registry: Arc<KubernetesRegistry>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Connects to the API server and reads the CA and the export cache.
pub(crate) async fn prepare(
    settings: KubernetesSettings,
    cluster: &str,
    cert_ttl: Duration,
    lease_grace: Duration,
) -> Result<Prepared, FederationError> {
    let source = ClusterSource {
        kubeconfig: settings.kubeconfig.clone(),
        context: None,
    };
    let client = source
        .client()
        .await
        .map_err(|e| FederationError::Kubernetes {
            what: "the Kubernetes API server".into(),
            reason: e.to_string(),
        })?;
    let material = ca_secret::load_or_create(
        &client,
        &settings.namespace,
        &settings.ca_secret,
        cluster,
        settings.create_ca,
    )
    .await?;
    ca_secret::publish_root(&client, &settings.namespace, material.ca.cert_pem())
        .await
        .map_err(|e| FederationError::Kubernetes {
            what: format!(
                "ConfigMap {}/{}",
                settings.namespace,
                mesh_k8s::names::ROOT_CA_CONFIGMAP
            ),
            reason: e.to_string(),
        })?;
    let ca = CaService::new(material.ca, cluster, material.join_token, cert_ttl)
        .with_kubernetes_auth(KubernetesAuth {
            reviewer: Arc::new(ApiTokenReviewer::new(client.clone(), TOKEN_AUDIENCE)),
            gateway: ServiceAccountRef {
                namespace: settings.namespace.clone(),
                name: settings.gateway_service_account.clone(),
            },
        });
    let cached_exports = read_export_cache(&client, &settings.namespace, lease_grace).await;
    Ok(Prepared {
        ca,
        cached_exports,
        runner: Runner {
            client,
            settings,
            registry: Arc::new(KubernetesRegistry::default()),
        },
    })
}

/// The stores of every watched kind.
#[derive(Clone)]
pub(crate) struct Stores {
    exports: Store<ServiceExport>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    links: Store<Link>,
    imports: Store<ServiceImport>,
}

impl Stores {
    fn objects(&self) -> WatchedObjects {
        WatchedObjects {
            exports: self.exports.state(),
            services: self.services.state(),
            slices: self.slices.state(),
            pods: self.pods.state(),
        }
    }

    async fn ready(&self) -> bool {
        self.exports.wait_until_ready().await.is_ok()
            && self.services.wait_until_ready().await.is_ok()
            && self.slices.wait_until_ready().await.is_ok()
            && self.pods.wait_until_ready().await.is_ok()
            && self.links.wait_until_ready().await.is_ok()
            && self.imports.wait_until_ready().await.is_ok()
    }
}

impl Runner {
    /// The API client (shared by the injection webhook's caBundle upkeep).
    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    /// Starts the watches, the sync of the state and the leader's work; returns once the first
    /// complete view of the API server has been applied (so the first snapshot served is not
    /// empty), with the tasks to await at shutdown.
    pub(crate) async fn start(
        self,
        controller: Arc<Controller>,
        readiness: Readiness,
        vips: Arc<Mutex<crate::dns::VipTable>>,
        policy_board: Arc<crate::policy_board::PolicyBoard>,
    ) -> Result<Vec<JoinHandle<()>>, FederationError> {
        let shutdown = controller.shutdown_signal();
        let health = Arc::new(ApiHealth::default());
        let changed = Arc::new(Notify::new());
        let client = self.client.clone();
        let mut tasks = Vec::new();
        macro_rules! watch_all {
            ($kind:literal, $api:expr, $config:expr) => {{
                let (store, task) = reflect(
                    $kind,
                    $api,
                    $config,
                    health.clone(),
                    changed.clone(),
                    shutdown.clone(),
                );
                tasks.push(task);
                store
            }};
        }
        let any = watcher::Config::default;
        let stores = Stores {
            exports: watch_all!("ServiceExport", Api::all(client.clone()), any()),
            services: watch_all!("Service", Api::all(client.clone()), any()),
            slices: watch_all!("EndpointSlice", Api::all(client.clone()), any()),
            pods: watch_all!("Pod", Api::all(client.clone()), any()),
            links: watch_all!("Link", Api::all(client.clone()), any()),
            imports: watch_all!(
                "ServiceImport",
                Api::all(client.clone()),
                any().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"))
            ),
        };
        match tokio::time::timeout(INITIAL_SYNC, stores.ready()).await {
            Ok(true) => {}
            _ => {
                return Err(FederationError::Kubernetes {
                    what: "the first list of ServiceExports, Services, EndpointSlices, Pods, Links and ServiceImports".into(),
                    reason: health.problem(Instant::now()).unwrap_or_else(|| {
                        format!("not complete within {INITIAL_SYNC:?}; check the API server and the controller's RBAC")
                    }),
                });
            }
        }
        // VIPs recorded in ServiceImports before this start stay where they are.
        vips.lock()
            .unwrap_or_else(|p| p.into_inner())
            .restore(imports::recorded_vips(&stores.imports.state()));
        let acceptance = Arc::new(Mutex::new(Acceptance::new()));
        let trust_domain = controller.ca().trust_domain().to_string();
        let sync = Sync {
            stores: stores.clone(),
            registry: self.registry.clone(),
            controller: controller.clone(),
            acceptance: acceptance.clone(),
            trust_domain,
        };
        sync.apply();
        tasks.push(tokio::spawn(sync.run(changed.clone(), shutdown.clone())));
        tasks.push(tokio::spawn(report_health(
            health,
            controller.clone(),
            readiness,
            shutdown.clone(),
        )));

        let (leading_tx, leading) = tokio::sync::watch::channel(false);
        let election = leader::Election {
            api: Api::<Lease>::namespaced(client.clone(), &self.settings.namespace),
            name: LEADER_LEASE.into(),
            identity: self.settings.pod_name.clone(),
            lease_duration: self.settings.leader_lease,
        };
        tasks.push(tokio::spawn(election.run(leading_tx, shutdown.clone())));
        let policy = policy::PolicySource {
            client: client.clone(),
            controller: controller.clone(),
            board: policy_board,
        };
        tasks.extend(policy.start(leading.clone(), shutdown.clone()));
        let leader = writer::LeaderWriter {
            client,
            namespace: self.settings.namespace.clone(),
            stores,
            registry: self.registry,
            controller,
            acceptance,
            vips,
        };
        tasks.push(tokio::spawn(leader.run(leading, shutdown)));
        Ok(tasks)
    }
}

/// Applies the watched objects to the controller's state: the registry view and the links.
struct Sync {
    stores: Stores,
    registry: Arc<KubernetesRegistry>,
    controller: Arc<Controller>,
    acceptance: Arc<Mutex<Acceptance>>,
    trust_domain: String,
}

impl Sync {
    fn apply(&self) {
        let view = registry::compute(&self.stores.objects(), &self.trust_domain);
        if view.unidentified > 0 {
            tracing::debug!(
                endpoints = view.unidentified,
                "EndpointSlice endpoints without a known Pod left out (no identity)"
            );
        }
        self.registry.set(view);
        let links = self.stores.links.state();
        let acceptance = self
            .controller
            .update(|state, _| links::apply_links(state, &links));
        *self.acceptance.lock().unwrap_or_else(|p| p.into_inner()) = acceptance;
    }

    async fn run(self, changed: Arc<Notify>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = changed.notified() => {}
                _ = shutdown.changed() => return,
            }
            tokio::time::sleep(DEBOUNCE).await;
            self.apply();
        }
    }
}

/// Keeps `/readyz` detail and `mesh_controller_kubernetes_api_up` true to the watches.
async fn report_health(
    health: Arc<ApiHealth>,
    controller: Arc<Controller>,
    readiness: Readiness,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let problem = health.problem(Instant::now());
        controller
            .metrics()
            .kubernetes_api_up
            .set(i64::from(problem.is_none()));
        readiness.set_detail(problem);
    }
}

/// The export catalog the previous leader cached, when younger than `max_age`.
async fn read_export_cache(
    client: &Client,
    namespace: &str,
    max_age: Duration,
) -> Option<ExportedServices> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let map = match api.get_opt(EXPORT_CACHE_CONFIGMAP).await {
        Ok(map) => map?,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the export cache ConfigMap; starting without it");
            return None;
        }
    };
    let saved_at: u64 = map
        .metadata
        .annotations
        .as_ref()?
        .get(SAVED_AT_ANNOTATION)?
        .parse()
        .ok()?;
    let age = Duration::from_millis(unix_millis().saturating_sub(saved_at));
    if age >= max_age {
        tracing::info!(
            age_s = age.as_secs(),
            "cached export catalog too old to re-export; starting empty"
        );
        return None;
    }
    let json = map.data.as_ref()?.get(EXPORT_CACHE_KEY)?;
    match serde_json::from_str::<ExportCatalog>(json) {
        Ok(catalog) => Some(catalog.services),
        Err(e) => {
            tracing::warn!(error = %e, "cached export catalog unreadable; ignoring it");
            None
        }
    }
}

/// The export cache ConfigMap's content for `catalog`.
fn export_cache_object(namespace: &str, catalog: &ExportCatalog) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(EXPORT_CACHE_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(ca_secret::managed_labels()),
            annotations: Some(BTreeMap::from([(
                SAVED_AT_ANNOTATION.to_string(),
                unix_millis().to_string(),
            )])),
            ..kube::api::ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            EXPORT_CACHE_KEY.to_string(),
            serde_json::to_string(catalog).expect("catalog serialises"),
        )])),
        ..ConfigMap::default()
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
