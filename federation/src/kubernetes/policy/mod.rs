//! The traffic policy source of Kubernetes mode: `HTTPRoute`s and `GRPCRoute`s
//! (`gateway.networking.k8s.io/v1`, those with a `kind: Service` parent, GAMMA; a `GRPCRoute`
//! is compiled as the `HTTPRoute` it means, as in local mode) and our `FaultPolicy`, `RateLimitPolicy`,
//! `CachePolicy`, `BackendPolicy` and `AuthorizationPolicy` (`mesh.dev/v1alpha1`), watched in
//! every namespace.
//!
//! Every replica compiles them (`mesh_core::policy::compile`) against the services the
//! controller knows, on every change of an object and of that set, and puts the result in force
//! (sidecars get it with their next snapshot). Unlike local mode, where a file with an error
//! is refused whole, each object stands alone: one that is not accepted is left out and the
//! others apply, so one user's bad route cannot hold back everyone else's change. The leader
//! writes each object's conditions to its `status` (see `status`), only when they change.
//!
//! The policy watches do not hold back the controller's start: a cluster without the HTTPRoute
//! or GRPCRoute CRD (Gateway API before v1.1) still gets discovery, and says why it has no routes in `GET /v1/policy`.
//!
//! - `objects.rs`: the watched objects read into what `compile` takes (pure);
//! - `status.rs`: the status each object should have (pure).

mod objects;
mod status;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use mesh_core::names::ServiceKey;
use mesh_core::policy::compile::{ObjectStatus, compile_known};
use mesh_k8s::policy::{
    AuthorizationPolicy, BackendPolicy, CachePolicy, FaultPolicy, GrpcRoute, HttpRoute,
    RateLimitPolicy,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use self::objects::{ReadPolicy, WatchedPolicy, own_kinds, read, source};
use self::status::{policy_conditions, route_parents};
use super::watch::{ApiHealth, reflect};
use crate::controller::Controller;
use crate::policy_board::{PolicyBoard, put_in_force};

/// How long the first list of the policy kinds may take before the policy is compiled from
/// what is listed so far: long enough for a loaded API server, short enough that a kind whose
/// CRD is missing does not hold back the others for long.
const INITIAL_SYNC: Duration = Duration::from_secs(10);
/// Changes arriving together are compiled together.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Besides every change, statuses are looked at this often, so a failed write is retried.
const RESYNC: Duration = Duration::from_secs(1);

/// The stores of the policy kinds.
#[derive(Clone)]
struct PolicyStores {
    routes: Store<HttpRoute>,
    grpc_routes: Store<GrpcRoute>,
    faults: Store<FaultPolicy>,
    rate_limits: Store<RateLimitPolicy>,
    caches: Store<CachePolicy>,
    backends: Store<BackendPolicy>,
    authorizations: Store<AuthorizationPolicy>,
}

impl PolicyStores {
    fn watched(&self) -> WatchedPolicy {
        WatchedPolicy {
            routes: self.routes.state(),
            grpc_routes: self.grpc_routes.state(),
            faults: self.faults.state(),
            rate_limits: self.rate_limits.state(),
            caches: self.caches.state(),
            backends: self.backends.state(),
            authorizations: self.authorizations.state(),
        }
    }

    async fn ready(&self) {
        let _ = tokio::join!(
            self.routes.wait_until_ready(),
            self.grpc_routes.wait_until_ready(),
            self.faults.wait_until_ready(),
            self.rate_limits.wait_until_ready(),
            self.caches.wait_until_ready(),
            self.backends.wait_until_ready(),
            self.authorizations.wait_until_ready(),
        );
    }
}

/// The policy source of one replica.
pub(crate) struct PolicySource {
    /// The API client.
    pub client: Client,
    /// Where the compiled policy is put in force.
    pub controller: Arc<Controller>,
    /// What `GET /v1/policy` shows.
    pub board: Arc<PolicyBoard>,
}

/// What was compiled last: the objects and the known services.
type Compiled = (ReadPolicy, BTreeSet<ServiceKey>);

/// What one compile judged: every object's conditions, and the false ones as messages.
#[derive(Default)]
struct Judged {
    statuses: Vec<ObjectStatus>,
    problems: Vec<String>,
}

impl PolicySource {
    /// Starts the watches and the compile-and-status loop; `leading` says whether this replica
    /// writes statuses.
    pub(crate) fn start(
        self,
        leading: watch::Receiver<bool>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        // Their own health: a missing policy CRD is the policy's problem, not the API
        // server's, and must not mark the controller unready.
        let health = Arc::new(ApiHealth::default());
        let changed = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        macro_rules! watch_all {
            ($kind:literal) => {{
                let (store, task) = reflect(
                    $kind,
                    Api::all(self.client.clone()),
                    watcher::Config::default(),
                    health.clone(),
                    changed.clone(),
                    shutdown.clone(),
                );
                tasks.push(task);
                store
            }};
        }
        let stores = PolicyStores {
            routes: watch_all!("HTTPRoute"),
            grpc_routes: watch_all!("GRPCRoute"),
            faults: watch_all!("FaultPolicy"),
            rate_limits: watch_all!("RateLimitPolicy"),
            caches: watch_all!("CachePolicy"),
            backends: watch_all!("BackendPolicy"),
            authorizations: watch_all!("AuthorizationPolicy"),
        };
        tasks.push(tokio::spawn(
            self.run(stores, health, changed, leading, shutdown),
        ));
        tasks
    }

    async fn run(
        self,
        stores: PolicyStores,
        health: Arc<ApiHealth>,
        changed: Arc<Notify>,
        mut leading: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        tokio::select! {
            _ = tokio::time::timeout(INITIAL_SYNC, stores.ready()) => {}
            _ = shutdown.changed() => return,
        }
        let mut views = self.controller.subscribe();
        let mut tick = tokio::time::interval(RESYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<Compiled> = None;
        let mut judged = Judged::default();
        let mut writer = StatusWriter::default();
        loop {
            let watched = stores.watched();
            let now: Compiled = (
                read(&watched),
                self.controller.read(|s, _| s.known_services()),
            );
            if last.as_ref() != Some(&now) {
                judged = self.evaluate(&now, &judged.problems);
                last = Some(now);
            }
            // The watches' problem is reported as it is now (its text counts the time), without
            // recompiling; each watch logs its own failure once.
            let mut refused = judged.problems.clone();
            refused.extend(
                health
                    .problem(Instant::now())
                    .map(|p| format!("policy watches: {p}")),
            );
            self.board.update(|r| r.refused = refused);
            if *leading.borrow() {
                writer.write(&self.client, &watched, &judged.statuses).await;
            } else {
                writer = StatusWriter::default();
            }
            tokio::select! {
                _ = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
                r = views.changed() => if r.is_err() { return },
                r = leading.changed() => if r.is_err() { return },
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Compiles the objects read and puts the accepted ones in force; logs the problems not in
    /// `before`.
    fn evaluate(&self, (read, known): &Compiled, before: &[String]) -> Judged {
        let mut compiled = compile_known(&read.objects, known);
        own_kinds(&mut compiled.statuses);
        let mut problems: Vec<String> = compiled.errors.iter().map(ToString::to_string).collect();
        for s in &read.unreadable {
            for c in &s.conditions {
                problems.push(format!(
                    "{}: {} {}/{} ({}): {}",
                    source(&s.kind, &s.namespace, &s.name),
                    s.kind,
                    s.namespace,
                    s.name,
                    c.reason,
                    c.message
                ));
            }
        }
        for p in problems.iter().filter(|p| !before.contains(p)) {
            tracing::warn!(problem = %p, "policy object condition false (one not accepted is left out; the others apply)");
        }
        compiled.statuses.extend(read.unreadable.iter().cloned());
        let statuses = compiled.statuses.clone();
        put_in_force(&self.controller, &self.board, compiled, problems.clone());
        Judged { statuses, problems }
    }
}

/// The leader's status writes, and what it wrote since it leads.
#[derive(Default)]
struct StatusWriter {
    /// The resource version each object had when its status was last patched: while the
    /// watch still shows that version, the patch is not repeated.
    patched: HashMap<(String, String, String), String>,
    /// Whether the last write failed (logged once per streak).
    failing: bool,
}

impl StatusWriter {
    async fn write(&mut self, client: &Client, watched: &WatchedPolicy, judged: &[ObjectStatus]) {
        let mut failed = None;
        macro_rules! routes {
            ($list:expr, $kind:literal) => {
                for route in $list {
                    let Some(judged) = judgement(judged, $kind, route.as_ref()) else {
                        continue;
                    };
                    let (spec, current) = (&route.spec, route.status.as_ref());
                    if let Some(parents) =
                        route_parents(spec, current, route.metadata.generation, judged)
                    {
                        let status = json!({ "parents": parents });
                        failed = failed.or(self.patch(client, route.as_ref(), status).await);
                    }
                }
            };
        }
        routes!(&watched.routes, "HTTPRoute");
        routes!(&watched.grpc_routes, "GRPCRoute");
        macro_rules! policies {
            ($list:expr, $kind:literal) => {
                for p in $list {
                    let Some(judged) = judgement(judged, $kind, p.as_ref()) else {
                        continue;
                    };
                    let current = p.status.as_ref().map_or(&[][..], |s| &s.conditions[..]);
                    if let Some(c) = policy_conditions(current, judged, p.metadata.generation) {
                        let status = json!({ "conditions": c });
                        failed = failed.or(self.patch(client, p.as_ref(), status).await);
                    }
                }
            };
        }
        policies!(&watched.faults, "FaultPolicy");
        policies!(&watched.rate_limits, "RateLimitPolicy");
        policies!(&watched.caches, "CachePolicy");
        policies!(&watched.backends, "BackendPolicy");
        policies!(&watched.authorizations, "AuthorizationPolicy");
        // Forget deleted objects.
        self.patched.retain(|(kind, namespace, name), _| {
            judged
                .iter()
                .any(|s| &s.kind == kind && &s.namespace == namespace && &s.name == name)
        });
        match failed {
            Some(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(error = %e, "policy status write failed; retrying every second");
            }
            Some(e) => tracing::debug!(error = %e, "policy status write failed again"),
            None if self.failing => {
                self.failing = false;
                tracing::info!("policy status writes succeed again");
            }
            None => {}
        }
    }

    /// Merge-patches `object`'s status to `status`, guarded by its resource version (the
    /// route's `parents` list is shared with other controllers: a write based on an old list
    /// is refused with 409 and made again from the new one). Returns the error worth logging.
    async fn patch<K>(&mut self, client: &Client, object: &K, status: Value) -> Option<kube::Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let kind = K::kind(&()).to_string();
        let namespace = object.namespace().unwrap_or_default();
        let name = object.name_any();
        let version = object.resource_version().unwrap_or_default();
        let key = (kind.clone(), namespace.clone(), name.clone());
        if self.patched.get(&key) == Some(&version) {
            return None;
        }
        let body = json!({ "metadata": { "resourceVersion": version }, "status": status });
        let written = Api::<K>::namespaced(client.clone(), &namespace)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(body))
            .await;
        match written {
            Ok(_) => {
                tracing::debug!(%kind, %namespace, %name, "policy status written");
                self.patched.insert(key, version);
                None
            }
            // Deleted, or changed since: the watch brings the news, and the next round
            // writes from it.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => None,
            Err(e) => Some(e),
        }
    }
}

/// What `compile` said of `object` of `kind`.
fn judgement<'a>(
    judged: &'a [ObjectStatus],
    kind: &str,
    object: &impl ResourceExt,
) -> Option<&'a ObjectStatus> {
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    judged
        .iter()
        .find(|s| s.kind == kind && s.namespace == namespace && s.name == name)
}
