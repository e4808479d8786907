//! The Kubernetes registry backend, as a pure function of the objects the controller watches:
//! a Service is exported when a `ServiceExport` of the same name and namespace exists; its
//! endpoints are its EndpointSlices' endpoints (ready conditions respected), each reached at
//! its pod's sidecar inbound port and identified by its pod's ServiceAccount.
//!
//! The watched objects live in reflector stores ([`super::watch`]); this module only reads
//! them, so every rule here is tested without an API server.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use mesh_core::catalog::ServicePort;
use mesh_core::identity::SpiffeId;
use mesh_core::names::ServiceKey;
use mesh_k8s::mcs::ServiceExport;
use mesh_k8s::names::{DEFAULT_INBOUND_PORT, INBOUND_PORT_ANNOTATION, SERVICE_NAME_LABEL};

use crate::registry::{RegistryEndpoint, ServiceSpec};

/// The objects the registry is computed from, as the stores hold them now.
#[derive(Debug, Default, Clone)]
pub(crate) struct WatchedObjects {
    /// Every `ServiceExport`.
    pub exports: Vec<Arc<ServiceExport>>,
    /// Every Service.
    pub services: Vec<Arc<Service>>,
    /// Every EndpointSlice.
    pub slices: Vec<Arc<EndpointSlice>>,
    /// Every Pod.
    pub pods: Vec<Arc<Pod>>,
}

/// Whether an export can be honoured: the `Valid` condition of its `ServiceExport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExportValidity {
    /// The export's namespace.
    pub namespace: String,
    /// Its name (= the Service's).
    pub name: String,
    /// `Ok` or the condition's reason and message.
    pub verdict: Result<(), (&'static str, String)>,
}

/// What the registry computed: the endpoints of exported services and each export's validity.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct RegistryView {
    /// Endpoints of every valid export.
    pub endpoints: Vec<RegistryEndpoint>,
    /// Every valid export's definition, with or without endpoints.
    pub defined: Vec<(ServiceKey, Arc<ServiceSpec>)>,
    /// One verdict per `ServiceExport`.
    pub exports: Vec<ExportValidity>,
    /// Endpoints left out because no pod (so no identity) is known for them.
    pub unidentified: usize,
}

/// Computes the registry of `trust_domain` from `objects`.
pub(crate) fn compute(objects: &WatchedObjects, trust_domain: &str) -> RegistryView {
    let services: HashMap<(String, String), &Service> = objects
        .services
        .iter()
        .map(|s| {
            (
                (s.namespace().unwrap_or_default(), s.name_any()),
                s.as_ref(),
            )
        })
        .collect();
    let pods: HashMap<(String, String), &Pod> = objects
        .pods
        .iter()
        .map(|p| {
            (
                (p.namespace().unwrap_or_default(), p.name_any()),
                p.as_ref(),
            )
        })
        .collect();
    let mut slices: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
    for slice in &objects.slices {
        if let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) {
            slices
                .entry((slice.namespace().unwrap_or_default(), service.clone()))
                .or_default()
                .push(slice);
        }
    }
    let mut view = RegistryView::default();
    for export in &objects.exports {
        let namespace = export.namespace().unwrap_or_default();
        let name = export.name_any();
        let id = (namespace.clone(), name.clone());
        let verdict = validate(services.get(&id).copied(), &namespace, &name);
        let valid = verdict.is_ok();
        view.exports.push(ExportValidity {
            namespace: namespace.clone(),
            name: name.clone(),
            verdict,
        });
        if !valid {
            continue;
        }
        let Ok(key) = ServiceKey::new(&name, &namespace) else {
            continue;
        };
        let service = services[&id];
        let spec = Arc::new(ServiceSpec {
            ports: ports(service),
            exported_since: export
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| u64::try_from(t.0.as_second()).ok()),
        });
        view.defined.push((key.clone(), spec.clone()));
        let mut seen = BTreeMap::new();
        for slice in slices.get(&id).into_iter().flatten() {
            for endpoint in &slice.endpoints {
                let Some(ip) = endpoint
                    .addresses
                    .first()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                else {
                    continue;
                };
                let pod = endpoint
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| {
                        let ns = r.namespace.clone().unwrap_or_else(|| namespace.clone());
                        pods.get(&(ns, r.name.clone()?)).copied()
                    });
                let Some(pod) = pod else {
                    view.unidentified += 1;
                    continue;
                };
                let account = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".to_string());
                let address = SocketAddr::new(ip, inbound_port(pod));
                // Kubernetes: a nil `ready` means ready; a terminating endpoint is not.
                let conditions = endpoint.conditions.clone().unwrap_or_default();
                let healthy =
                    conditions.ready.unwrap_or(true) && !conditions.terminating.unwrap_or(false);
                let entry = RegistryEndpoint {
                    service: key.clone(),
                    address,
                    identity: SpiffeId::workload(trust_domain, &namespace, &account).to_string(),
                    healthy,
                    plaintext: false,
                    spec: Some(spec.clone()),
                };
                // The same endpoint in two slices (during a slice rewrite): ready wins.
                seen.entry(address)
                    .and_modify(|e: &mut RegistryEndpoint| e.healthy |= healthy)
                    .or_insert(entry);
            }
        }
        view.endpoints.extend(seen.into_values());
    }
    view.exports
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    view
}

fn validate(
    service: Option<&Service>,
    namespace: &str,
    name: &str,
) -> Result<(), (&'static str, String)> {
    let Some(service) = service else {
        return Err((
            "NoService",
            format!(
                "Service {namespace}/{name} does not exist: create it, or delete this ServiceExport"
            ),
        ));
    };
    if ServiceKey::new(name, namespace).is_err() {
        return Err((
            "InvalidServiceName",
            format!("{namespace}/{name} is not a DNS label pair the mesh can name"),
        ));
    }
    let kind = service
        .spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return Err((
            "InvalidServiceType",
            format!(
                "Service {namespace}/{name} is of type ExternalName, which has no endpoints to export"
            ),
        ));
    }
    Ok(())
}

fn ports(service: &Service) -> Vec<ServicePort> {
    let mut ports: Vec<ServicePort> = service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| {
            Some(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port: u16::try_from(p.port).ok()?,
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect();
    ports.sort();
    ports
}

fn inbound_port(pod: &Pod) -> u16 {
    pod.annotations()
        .get(INBOUND_PORT_ANNOTATION)
        .and_then(|p| p.parse().ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_INBOUND_PORT)
}

/// The Kubernetes backend of the controller's registry: the last [`RegistryView`] computed
/// from the watches, replaced whole at each change.
#[derive(Debug, Default)]
pub(crate) struct KubernetesRegistry {
    view: std::sync::Mutex<RegistryView>,
}

impl KubernetesRegistry {
    /// Replaces the view.
    pub(crate) fn set(&self, view: RegistryView) {
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = view;
    }

    /// Each `ServiceExport`'s validity, as last computed.
    pub(crate) fn validity(&self) -> Vec<ExportValidity> {
        self.view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .exports
            .clone()
    }
}

impl crate::registry::ServiceRegistry for KubernetesRegistry {
    fn name(&self) -> &str {
        "kubernetes"
    }

    fn endpoints(&self, _now: std::time::Instant) -> Vec<RegistryEndpoint> {
        self.view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .endpoints
            .clone()
    }

    fn defined(&self) -> Vec<(ServiceKey, Arc<ServiceSpec>)> {
        self.view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .defined
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ObjectReference, PodSpec, ServicePort as K8sPort, ServiceSpec as K8sServiceSpec,
    };
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use kube::api::ObjectMeta;

    use super::*;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("demo".into()),
            ..ObjectMeta::default()
        }
    }

    fn service(name: &str, port: i32) -> Arc<Service> {
        Arc::new(Service {
            metadata: meta(name),
            spec: Some(K8sServiceSpec {
                ports: Some(vec![K8sPort {
                    name: Some("http".into()),
                    port,
                    ..K8sPort::default()
                }]),
                ..K8sServiceSpec::default()
            }),
            ..Service::default()
        })
    }

    fn pod(name: &str, account: &str, inbound: Option<u16>) -> Arc<Pod> {
        let mut metadata = meta(name);
        if let Some(port) = inbound {
            metadata.annotations =
                Some([(INBOUND_PORT_ANNOTATION.to_string(), port.to_string())].into());
        }
        Arc::new(Pod {
            metadata,
            spec: Some(PodSpec {
                service_account_name: Some(account.into()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        })
    }

    fn endpoint(ip: &str, pod: Option<&str>, ready: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready,
                ..EndpointConditions::default()
            }),
            target_ref: pod.map(|p| ObjectReference {
                kind: Some("Pod".into()),
                name: Some(p.into()),
                namespace: Some("demo".into()),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        }
    }

    fn slice(service: &str, endpoints: Vec<Endpoint>) -> Arc<EndpointSlice> {
        let mut metadata = meta(&format!("{service}-abc"));
        metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into());
        Arc::new(EndpointSlice {
            metadata,
            address_type: "IPv4".into(),
            endpoints,
            ..EndpointSlice::default()
        })
    }

    fn export(name: &str) -> Arc<ServiceExport> {
        let mut e = ServiceExport::new(name);
        e.metadata.namespace = Some("demo".into());
        Arc::new(e)
    }

    #[test]
    fn exported_services_get_their_ready_pod_endpoints_with_identities() {
        let objects = WatchedObjects {
            exports: vec![export("echo")],
            services: vec![service("echo", 80), service("private", 80)],
            slices: vec![
                slice(
                    "echo",
                    vec![
                        endpoint("10.0.0.1", Some("echo-1"), Some(true)),
                        endpoint("10.0.0.2", Some("echo-2"), Some(false)),
                        endpoint("10.0.0.3", Some("echo-3"), None),
                        endpoint("10.0.0.4", None, Some(true)),
                    ],
                ),
                slice(
                    "private",
                    vec![endpoint("10.0.0.9", Some("private-1"), Some(true))],
                ),
            ],
            pods: vec![
                pod("echo-1", "echo", None),
                pod("echo-2", "echo", Some(17000)),
                pod("echo-3", "echo-canary", None),
                pod("private-1", "private", None),
            ],
        };
        let view = compute(&objects, "us-east.mesh");
        let got: Vec<(String, bool, String)> = view
            .endpoints
            .iter()
            .map(|e| (e.address.to_string(), e.healthy, e.identity.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "10.0.0.1:15006".to_string(),
                    true,
                    "spiffe://us-east.mesh/ns/demo/sa/echo".to_string()
                ),
                (
                    "10.0.0.2:17000".into(),
                    false,
                    "spiffe://us-east.mesh/ns/demo/sa/echo".into()
                ),
                (
                    "10.0.0.3:15006".into(),
                    true,
                    "spiffe://us-east.mesh/ns/demo/sa/echo-canary".into()
                ),
            ]
        );
        assert_eq!(
            view.unidentified, 1,
            "the endpoint without a pod has no identity"
        );
        let spec = view.endpoints[0].spec.as_ref().unwrap();
        assert_eq!(spec.ports[0].port, 80);
        assert_eq!(spec.ports[0].name, "http");
        assert_eq!(spec.ports[0].protocol, "TCP");
        assert!(view.exports.iter().all(|e| e.verdict.is_ok()));
        assert_eq!(
            view.defined.len(),
            1,
            "the export defines echo, endpoints or not"
        );
        assert!(
            view.endpoints.iter().all(|e| e.service.name == "echo"),
            "private is not exported"
        );
    }

    #[test]
    fn an_export_without_its_service_is_invalid_and_exports_nothing() {
        let objects = WatchedObjects {
            exports: vec![export("ghost")],
            slices: vec![slice(
                "ghost",
                vec![endpoint("10.0.0.1", Some("g"), Some(true))],
            )],
            pods: vec![pod("g", "ghost", None)],
            ..WatchedObjects::default()
        };
        let view = compute(&objects, "us-east.mesh");
        assert!(view.endpoints.is_empty());
        assert!(view.defined.is_empty(), "an invalid export defines nothing");
        let (reason, message) = view.exports[0].verdict.clone().unwrap_err();
        assert_eq!(reason, "NoService");
        assert!(
            message.contains("Service demo/ghost does not exist"),
            "{message}"
        );
    }

    #[test]
    fn external_name_services_cannot_be_exported() {
        let mut svc = (*service("ext", 80)).clone();
        svc.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        let objects = WatchedObjects {
            exports: vec![export("ext")],
            services: vec![Arc::new(svc)],
            ..WatchedObjects::default()
        };
        let view = compute(&objects, "us-east.mesh");
        assert_eq!(
            view.exports[0].verdict.clone().unwrap_err().0,
            "InvalidServiceType"
        );
    }
}
