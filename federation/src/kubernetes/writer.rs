//! What the leader writes to the API server, whenever the view changes and every second (for
//! RTTs and link states): the cluster's link information, one `ServiceImport` per service of
//! the cluster-set (and no other), the `Valid` and `Conflict` conditions of each
//! `ServiceExport`, the status of each `Link`, and the export catalog cache. Each write is made
//! only when the object differs from what the watches show, so a steady cluster-set costs no
//! writes.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use mesh_core::api::LinkInfo;
use mesh_core::names::ServiceKey;
use mesh_k8s::conditions::{ConditionUpdate, same, set_condition};
use mesh_k8s::link::Link;
use mesh_k8s::link_info::publish_link_info;
use mesh_k8s::mcs::{self, ServiceExport, ServiceImport};
use mesh_k8s::names::{CONTROLLER_MANAGER, EXPORT_CACHE_CONFIGMAP};
use serde_json::json;
use tokio::sync::watch;

use super::imports::{conflict, desired_imports, import_object, recorded_vips};
use super::links::{Acceptance, link_status};
use super::registry::KubernetesRegistry;
use super::{Stores, export_cache_object};
use crate::controller::Controller;
use crate::dns::VipTable;
use crate::dns::vip::service_name;

/// The export cache is rewritten at most this often.
const CACHE_INTERVAL: Duration = Duration::from_secs(2);
/// Besides every change, the leader looks at the state this often (RTTs, link states).
const RESYNC: Duration = Duration::from_secs(1);

/// The leader's writer.
pub(super) struct LeaderWriter {
    pub client: Client,
    pub namespace: String,
    pub stores: Stores,
    pub registry: Arc<KubernetesRegistry>,
    pub controller: Arc<Controller>,
    pub acceptance: Arc<Mutex<Acceptance>>,
    /// The VIP allocations shared with the DNS server.
    pub vips: Arc<Mutex<VipTable>>,
}

/// What the leader wrote last (for objects the watches do not show it).
#[derive(Default)]
struct Written {
    link_info: Option<LinkInfo>,
    cache_version: Option<u64>,
    cache_at: Option<Instant>,
    /// Namespaces where an import could not be created (they do not exist): logged once.
    missing_namespaces: BTreeSet<String>,
}

impl LeaderWriter {
    /// Writes while this replica leads, until `shutdown`.
    pub(super) async fn run(
        self,
        mut leading: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut views = self.controller.subscribe();
        let mut tick = tokio::time::interval(RESYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut written = Written::default();
        let mut failing = false;
        loop {
            tokio::select! {
                _ = views.changed() => {}
                _ = tick.tick() => {}
                _ = leading.changed() => {}
                _ = shutdown.changed() => return,
            }
            // Every replica takes the leader's recorded VIPs, so its DNS answers the same.
            self.vips
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .restore(recorded_vips(&self.stores.imports.state()));
            let lead = *leading.borrow();
            self.controller.metrics().leader.set(i64::from(lead));
            if !lead {
                written = Written::default();
                continue;
            }
            match self.sync(&mut written).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("leader writes to the API server succeed again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "leader write to the API server failed; retrying every second");
                }
                Err(e) => tracing::debug!(error = %e, "leader write failed again"),
            }
        }
    }

    async fn sync(&self, written: &mut Written) -> Result<(), kube::Error> {
        self.link_info(written).await?;
        self.imports(written).await?;
        self.export_statuses().await?;
        self.link_statuses().await?;
        self.export_cache(written).await?;
        Ok(())
    }

    async fn link_info(&self, written: &mut Written) -> Result<(), kube::Error> {
        let info = self.controller.read(|s, _| s.link_info());
        if let Some(info) = info
            && written.link_info.as_ref() != Some(&info)
        {
            publish_link_info(&self.client, &self.namespace, &info).await?;
            tracing::info!(gateway = %info.gateway_addr, "link information published");
            written.link_info = Some(info);
        }
        Ok(())
    }

    async fn imports(&self, written: &mut Written) -> Result<(), kube::Error> {
        let exporters = self.controller.read(|s, _| s.exporters());
        let desired = desired_imports(&exporters);
        let existing = self.stores.imports.state();
        let mut wanted = BTreeSet::new();
        for import in &desired {
            wanted.insert((import.key.namespace.clone(), import.key.name.clone()));
            let vip = self
                .vips
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .allocate(&service_name(&import.key.name, &import.key.namespace));
            let object = import_object(import, vip);
            let current = existing.iter().find(|i| {
                i.namespace().as_deref() == Some(import.key.namespace.as_str())
                    && i.name_any() == import.key.name
            });
            let api: Api<ServiceImport> =
                Api::namespaced(self.client.clone(), &import.key.namespace);
            let spec_differs = current.is_none_or(|c| c.spec != object.spec);
            if spec_differs {
                let applied = api
                    .patch(
                        &import.key.name,
                        &PatchParams::apply(CONTROLLER_MANAGER).force(),
                        &Patch::Apply(&object),
                    )
                    .await;
                match applied {
                    Ok(_) => {
                        written.missing_namespaces.remove(&import.key.namespace);
                        tracing::info!(service = %import.key, clusters = ?import.clusters, "ServiceImport written");
                    }
                    // MCS namespace sameness: a service is imported only where its namespace exists.
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        if written
                            .missing_namespaces
                            .insert(import.key.namespace.clone())
                        {
                            tracing::info!(service = %import.key, "namespace does not exist here; not imported until it does");
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let status_differs = current.is_none_or(|c| c.status != object.status);
            if status_differs {
                api.patch_status(
                    &import.key.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": object.status })),
                )
                .await?;
            }
        }
        for stale in existing {
            let key = (stale.namespace().unwrap_or_default(), stale.name_any());
            if wanted.contains(&key) {
                continue;
            }
            let api: Api<ServiceImport> = Api::namespaced(self.client.clone(), &key.0);
            match api.delete(&key.1, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(service = %format!("{}.{}", key.1, key.0), "ServiceImport removed: no linked cluster exports it")
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn export_statuses(&self) -> Result<(), kube::Error> {
        let validity = self.registry.validity();
        let (own, exporters) = self
            .controller
            .read(|s, _| (s.cluster().to_string(), s.exporters()));
        for export in self.stores.exports.state() {
            let namespace = export.namespace().unwrap_or_default();
            let name = export.name_any();
            let Some(valid) = validity
                .iter()
                .find(|v| v.namespace == namespace && v.name == name)
            else {
                continue;
            };
            let current = export
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            let mut conditions = current.clone();
            let generation = export.metadata.generation;
            match &valid.verdict {
                Ok(()) => {
                    set_condition(
                        &mut conditions,
                        ConditionUpdate {
                            type_: mcs::VALID,
                            status: true,
                            reason: "Valid",
                            message: "the Service is exported to the linked clusters".into(),
                        },
                        generation,
                    );
                    let key = ServiceKey::new(&name, &namespace).ok();
                    if let Some(key) = key {
                        set_condition(
                            &mut conditions,
                            conflict(&own, &key, &exporters),
                            generation,
                        );
                    }
                }
                Err((reason, message)) => {
                    set_condition(
                        &mut conditions,
                        ConditionUpdate {
                            type_: mcs::VALID,
                            status: false,
                            reason,
                            message: message.clone(),
                        },
                        generation,
                    );
                    conditions.retain(|c| c.type_ != mcs::CONFLICT);
                }
            }
            if same(&conditions, &current) {
                continue;
            }
            Api::<ServiceExport>::namespaced(self.client.clone(), &namespace)
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": { "conditions": conditions } })),
                )
                .await?;
        }
        Ok(())
    }

    async fn link_statuses(&self) -> Result<(), kube::Error> {
        let views = self.controller.read(|s, now| s.status(now).links);
        let acceptance = self
            .acceptance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for link in self.stores.links.state() {
            let name = link.name_any();
            let seen = views.iter().find(|v| v.cluster == name);
            let status = link_status(&link, acceptance.get(&name), seen);
            let current = link.status.clone().unwrap_or_default();
            let unchanged = same(&status.conditions, &current.conditions)
                && status.rtt == current.rtt
                && status.last_error == current.last_error
                && status.observed_generation == current.observed_generation;
            if unchanged {
                continue;
            }
            Api::<Link>::all(self.client.clone())
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": status })),
                )
                .await?;
        }
        Ok(())
    }

    async fn export_cache(&self, written: &mut Written) -> Result<(), kube::Error> {
        let exports = self.controller.read(|s, _| s.view().exports.clone());
        if written.cache_version == Some(exports.version)
            || written
                .cache_at
                .is_some_and(|t| t.elapsed() < CACHE_INTERVAL)
        {
            return Ok(());
        }
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
            .patch(
                EXPORT_CACHE_CONFIGMAP,
                &PatchParams::apply(CONTROLLER_MANAGER).force(),
                &Patch::Apply(&export_cache_object(&self.namespace, &exports)),
            )
            .await?;
        written.cache_version = Some(exports.version);
        written.cache_at = Some(Instant::now());
        Ok(())
    }
}
