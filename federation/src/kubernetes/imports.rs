//! What the leader derives from the cluster-set's catalogs, as pure functions: one
//! `ServiceImport` per service exported by any linked cluster (this one included), defined by
//! the oldest export when clusters disagree (KEP-1645's conflict resolution), and the
//! `Conflict` condition of this cluster's own `ServiceExport`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use kube::api::ObjectMeta;
use mesh_core::catalog::{ExportedService, ServicePort};
use mesh_core::names::ServiceKey;
use mesh_k8s::conditions::ConditionUpdate;
use mesh_k8s::mcs::{self, ClusterStatus, ServiceImport, ServiceImportSpec, ServiceImportStatus};

use super::ca_secret::managed_labels;

/// Every cluster exporting each service, with its catalog entry.
pub(crate) type Exporters = BTreeMap<ServiceKey, Vec<(String, ExportedService)>>;

/// A `ServiceImport` the leader wants to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DesiredImport {
    /// The service.
    pub key: ServiceKey,
    /// Its ports, as the defining (oldest) export has them.
    pub ports: Vec<ServicePort>,
    /// Clusters exporting it, sorted.
    pub clusters: Vec<String>,
}

/// The definition that wins among `exporters` of one service: the oldest export; exports
/// without a time (outside Kubernetes) after dated ones; the cluster name breaks ties, so every
/// cluster picks the same one.
fn defining(exporters: &[(String, ExportedService)]) -> Option<&(String, ExportedService)> {
    exporters
        .iter()
        .min_by_key(|(cluster, svc)| (svc.exported_since.unwrap_or(u64::MAX), cluster.clone()))
}

/// The imports for `exporters`.
pub(crate) fn desired_imports(exporters: &Exporters) -> Vec<DesiredImport> {
    exporters
        .iter()
        .filter_map(|(key, list)| {
            let (_, winner) = defining(list)?;
            let mut clusters: Vec<String> = list.iter().map(|(c, _)| c.clone()).collect();
            clusters.sort();
            clusters.dedup();
            Some(DesiredImport {
                key: key.clone(),
                ports: winner.ports.clone(),
                clusters,
            })
        })
        .collect()
}

/// The `Conflict` condition of `own`'s export of `key`.
pub(crate) fn conflict(
    own: &str,
    key: &ServiceKey,
    exporters: &Exporters,
) -> ConditionUpdate<'static> {
    let list = exporters.get(key).map(Vec::as_slice).unwrap_or_default();
    let mine = list.iter().find(|(c, _)| c == own);
    match (defining(list), mine) {
        (Some((winner, defined)), Some((_, mine)))
            if winner != own && defined.ports != mine.ports =>
        {
            ConditionUpdate {
                type_: mcs::CONFLICT,
                status: true,
                reason: "PortConflict",
                message: format!(
                    "cluster {winner} exported {ns}/{name} first with ports {theirs}; this cluster's \
                     Service has {ours}. The oldest export defines the service (KEP-1645): make the \
                     ports agree",
                    ns = key.namespace,
                    name = key.name,
                    theirs = describe(&defined.ports),
                    ours = describe(&mine.ports),
                ),
            }
        }
        _ => ConditionUpdate {
            type_: mcs::CONFLICT,
            status: false,
            reason: "NoConflicts",
            message: "every cluster exporting this service agrees on its ports".into(),
        },
    }
}

fn describe(ports: &[ServicePort]) -> String {
    let list: Vec<String> = ports
        .iter()
        .map(|p| {
            if p.name.is_empty() {
                format!("{}/{}", p.port, p.protocol)
            } else {
                format!("{}:{}/{}", p.name, p.port, p.protocol)
            }
        })
        .collect();
    format!("[{}]", list.join(", "))
}

/// The VIPs recorded in `imports`' `spec.ips` (the first IPv4 address of each), by allocation
/// name `<svc>.<ns>`: how allocations survive restarts and reach every replica in Kubernetes
/// mode.
pub(crate) fn recorded_vips(imports: &[Arc<ServiceImport>]) -> Vec<(String, Ipv4Addr)> {
    imports
        .iter()
        .filter_map(|i| {
            let ns = i.metadata.namespace.as_deref()?;
            let name = i.metadata.name.as_deref()?;
            let ip = i
                .spec
                .ips
                .iter()
                .find_map(|ip| ip.parse::<Ipv4Addr>().ok())?;
            Some((crate::dns::vip::service_name(name, ns), ip))
        })
        .collect()
}

/// The object for `import` (spec and status; they are written separately), carrying its
/// cluster-set VIP in `spec.ips` when one is allocated.
pub(crate) fn import_object(import: &DesiredImport, vip: Option<Ipv4Addr>) -> ServiceImport {
    let mut object = ServiceImport::new(
        &import.key.name,
        ServiceImportSpec {
            ports: import
                .ports
                .iter()
                .map(|p| mcs::ServicePort {
                    name: p.name.clone(),
                    protocol: p.protocol.clone(),
                    app_protocol: p.app_protocol.clone(),
                    port: i32::from(p.port),
                })
                .collect(),
            ips: vip.iter().map(ToString::to_string).collect(),
            type_: mcs::CLUSTER_SET_IP.into(),
            ..ServiceImportSpec::default()
        },
    );
    object.metadata = ObjectMeta {
        name: Some(import.key.name.clone()),
        namespace: Some(import.key.namespace.clone()),
        labels: Some(managed_labels()),
        ..ObjectMeta::default()
    };
    object.status = Some(ServiceImportStatus {
        clusters: import
            .clusters
            .iter()
            .map(|c| ClusterStatus { cluster: c.clone() })
            .collect(),
        ..ServiceImportStatus::default()
    });
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(port: u16, since: Option<u64>) -> ExportedService {
        ExportedService {
            healthy: true,
            endpoints: Vec::new(),
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: "TCP".into(),
                port,
                app_protocol: None,
            }],
            exported_since: since,
        }
    }

    fn key() -> ServiceKey {
        ServiceKey::new("echo", "demo").unwrap()
    }

    #[test]
    fn one_import_per_service_naming_every_exporting_cluster() {
        let exporters = Exporters::from([(
            key(),
            vec![
                ("us-west".to_string(), svc(80, Some(200))),
                ("us-east".to_string(), svc(80, Some(100))),
            ],
        )]);
        let imports = desired_imports(&exporters);
        assert_eq!(imports.len(), 1);
        assert_eq!(imports[0].clusters, ["us-east", "us-west"]);
        let object = import_object(&imports[0], Some(Ipv4Addr::new(240, 240, 1, 2)));
        assert_eq!(object.spec.type_, "ClusterSetIP");
        assert_eq!(object.spec.ips, ["240.240.1.2"]);
        let recorded = recorded_vips(&[Arc::new(object.clone())]);
        assert_eq!(
            recorded,
            [("echo.demo".to_string(), Ipv4Addr::new(240, 240, 1, 2))]
        );
        let mut foreign = object.clone();
        foreign.spec.ips = vec!["fd00::1".into(), "not an ip".into()];
        assert!(recorded_vips(&[Arc::new(foreign)]).is_empty());
        assert!(import_object(&imports[0], None).spec.ips.is_empty());
        assert_eq!(object.spec.ports[0].port, 80);
        assert_eq!(object.metadata.namespace.as_deref(), Some("demo"));
        assert_eq!(object.status.unwrap().clusters.len(), 2);
    }

    #[test]
    fn the_oldest_export_defines_the_ports_and_the_newer_one_is_in_conflict() {
        let exporters = Exporters::from([(
            key(),
            vec![
                ("eu".to_string(), svc(8080, Some(300))),
                ("us-east".to_string(), svc(80, Some(100))),
                ("us-west".to_string(), svc(80, None)),
            ],
        )]);
        assert_eq!(desired_imports(&exporters)[0].ports[0].port, 80);
        let newer = conflict("eu", &key(), &exporters);
        assert!(newer.status);
        assert_eq!(newer.reason, "PortConflict");
        assert!(
            newer
                .message
                .contains("cluster us-east exported demo/echo first"),
            "{}",
            newer.message
        );
        assert!(
            newer.message.contains("[http:8080/TCP]"),
            "{}",
            newer.message
        );
        assert!(!conflict("us-east", &key(), &exporters).status);
        assert!(
            !conflict("us-west", &key(), &exporters).status,
            "same ports: no conflict"
        );
    }

    #[test]
    fn ties_are_broken_by_cluster_name_so_every_cluster_agrees() {
        let exporters = Exporters::from([(
            key(),
            vec![
                ("b".to_string(), svc(81, Some(5))),
                ("a".to_string(), svc(80, Some(5))),
            ],
        )]);
        assert_eq!(desired_imports(&exporters)[0].ports[0].port, 80);
        assert!(conflict("b", &key(), &exporters).status);
    }
}
