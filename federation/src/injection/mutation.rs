//! The injection decision for one pod and the JSON Patch that carries it out. Pure: a pod and
//! the template in, a [`Decision`] out, no sockets.
//!
//! In order:
//! 1. a pod annotated `mesh.dev/injected: "true"` is left as it is (idempotent: re-creating a
//!    pod from an injected pod's spec does not inject twice);
//!    pods of the mesh's own namespace are never injected (they are the mesh);
//! 2. `mesh.dev/inject` must be `"true"` or `"false"` (anything else is refused, naming the
//!    annotation); `"false"` skips the pod;
//! 3. a pod that already has a container named `mesh-proxy` or `mesh-init` (but not the
//!    annotation) is left unchanged, with a warning: injecting would clash with it;
//! 4. a `hostNetwork` pod is left unchanged, with a warning: the capture rules would change
//!    the node's network namespace;
//! 5. the annotations `mesh.dev/inbound-port`, `mesh.dev/service` and `mesh.dev/app-port` and
//!    the ServiceAccount name are checked (a bad value is refused, naming it), then the pod
//!    gets `mesh-init`, `mesh-proxy`, their volumes and the annotations `mesh.dev/injected`
//!    and `mesh.dev/root-ca`.
//!
//! The served service (`--service`) is the pod's `mesh.dev/service` annotation (a Service name
//! in the pod's namespace); without it the sidecar only proxies the app's outbound calls. The
//! app port (`--app 127.0.0.1:<port>`) is `mesh.dev/app-port`, or else the first port of the
//! pod's first container. Only that port's inbound connections are captured (the one the mesh
//! serves; the sidecar hands captured plaintext from outside the mesh to its original port
//! under the `permissive` inbound policy and refuses it under `strict`), and not when the
//! kubelet probes it: the kubelet's probes are plaintext from outside the mesh, which `strict`
//! would refuse.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_core::names::check_label;
use mesh_k8s::names::{
    APP_PORT_ANNOTATION, DEFAULT_INBOUND_PORT, INBOUND_PORT_ANNOTATION, INIT_CONTAINER,
    INJECT_ANNOTATION, INJECTED_ANNOTATION, ROOT_CA_ANNOTATION, SERVICE_ANNOTATION,
    SIDECAR_CONTAINER,
};
use serde_json::{Value, json};

use super::containers::{
    ADMIN_PORT, OUTBOUND_PORT, Served, Template, Workload, init_container, proxy_container, volumes,
};

/// What the webhook answers for one pod.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Allowed with this JSON Patch (RFC 6902 operations).
    Inject {
        /// The operations.
        patch: Vec<Value>,
        /// Things the user should know (returned as admission warnings).
        warnings: Vec<String>,
    },
    /// Allowed unchanged.
    Skip {
        /// Why (logged).
        reason: String,
        /// A warning for the user, when the skip is probably not what they meant.
        warning: Option<String>,
    },
    /// Refused with this message (names the annotation or field that is wrong).
    Refuse(String),
}

/// Decides what to do with `pod`, created in `namespace`.
pub(crate) fn decide(pod: &Pod, namespace: &str, t: &Template<'_>) -> Decision {
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let annotation = |key: &str| annotations.get(key).map(String::as_str);
    if annotation(INJECTED_ANNOTATION) == Some("true") {
        return skip("already injected", None);
    }
    if namespace == t.mesh_namespace {
        // The controller and gateway are the mesh: a sidecar would need them to start.
        return skip("the mesh's own namespace is never injected", None);
    }
    match annotation(INJECT_ANNOTATION) {
        None | Some("true") => {}
        Some("false") => return skip(&format!("annotated {INJECT_ANNOTATION}: \"false\""), None),
        Some(other) => {
            return Decision::Refuse(format!(
                "annotation {INJECT_ANNOTATION}: {other:?} is not valid: use \"true\" or \"false\""
            ));
        }
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let init = spec.init_containers.clone().unwrap_or_default();
    if let Some(clash) = spec
        .containers
        .iter()
        .chain(&init)
        .find(|c| c.name == SIDECAR_CONTAINER || c.name == INIT_CONTAINER)
    {
        return skip(
            "a container already has the sidecar's name",
            Some(format!(
                "the pod already has a container named {:?} but no annotation {INJECTED_ANNOTATION}: \
                 it was left unchanged (no mesh sidecar injected); rename that container",
                clash.name
            )),
        );
    }
    if spec.host_network == Some(true) {
        return skip(
            "hostNetwork pod",
            Some(
                "the pod uses hostNetwork: no mesh sidecar injected (its capture rules would \
                 change the node's network); annotate it mesh.dev/inject: \"false\" to silence this"
                    .into(),
            ),
        );
    }
    let workload = match workload(&annotations, namespace, &spec) {
        Ok(w) => w,
        Err(message) => return Decision::Refuse(message),
    };
    let mut warnings = Vec::new();
    if let Some(served) = &workload.served
        && !workload.captured_ports.contains(&served.app_port)
    {
        warnings.push(format!(
            "port {} is probed by the kubelet, so its inbound connections are not redirected \
             to the mesh sidecar (mesh traffic reaches the sidecar on port {})",
            served.app_port, workload.inbound_port
        ));
    }
    Decision::Inject {
        patch: patch(pod, &annotations, t, &workload),
        warnings,
    }
}

fn skip(reason: &str, warning: Option<String>) -> Decision {
    Decision::Skip {
        reason: reason.into(),
        warning,
    }
}

/// Reads and checks what the containers need from the pod.
fn workload(
    annotations: &BTreeMap<String, String>,
    namespace: &str,
    spec: &PodSpec,
) -> Result<Workload, String> {
    let containers = &spec.containers;
    let service_account = spec
        .service_account_name
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    check_label(&service_account).map_err(|e| {
        format!(
            "serviceAccountName {service_account:?} cannot be a mesh identity ({e}): use a \
             ServiceAccount whose name is a DNS label, or annotate the pod {INJECT_ANNOTATION}: \"false\""
        )
    })?;
    let reserved = [OUTBOUND_PORT, ADMIN_PORT];
    let inbound_port = match annotations.get(INBOUND_PORT_ANNOTATION) {
        None => DEFAULT_INBOUND_PORT,
        Some(text) => {
            let port = port_annotation(INBOUND_PORT_ANNOTATION, text)?;
            if reserved.contains(&port) {
                return Err(format!(
                    "annotation {INBOUND_PORT_ANNOTATION}: \"{port}\" is taken by the sidecar's \
                     outbound ({OUTBOUND_PORT}) or admin ({ADMIN_PORT}) listener: choose another port"
                ));
            }
            port
        }
    };
    let served = match annotations.get(SERVICE_ANNOTATION) {
        None => {
            if let Some(text) = annotations.get(APP_PORT_ANNOTATION) {
                return Err(format!(
                    "annotation {APP_PORT_ANNOTATION}: {text:?} needs {SERVICE_ANNOTATION}: \
                     name the Service this pod serves"
                ));
            }
            None
        }
        Some(service) => {
            check_label(service).map_err(|e| {
                format!("annotation {SERVICE_ANNOTATION}: {service:?} is not a Service name ({e})")
            })?;
            let app_port = match annotations.get(APP_PORT_ANNOTATION) {
                Some(text) => port_annotation(APP_PORT_ANNOTATION, text)?,
                None => first_container_port(containers).ok_or_else(|| {
                    format!(
                        "annotation {SERVICE_ANNOTATION}: {service:?} needs the app's port: \
                         annotate {APP_PORT_ANNOTATION} or declare a containerPort on the first container"
                    )
                })?,
            };
            if app_port == inbound_port || reserved.contains(&app_port) {
                return Err(format!(
                    "the app port {app_port} ({APP_PORT_ANNOTATION} or the first containerPort) \
                     is one of the sidecar's ports ({inbound_port}, {OUTBOUND_PORT}, {ADMIN_PORT}): \
                     set {INBOUND_PORT_ANNOTATION} to another port"
                ));
            }
            Some(Served {
                service: service.clone(),
                app_port,
            })
        }
    };
    let probed = probed_ports(containers);
    let captured_ports = served
        .iter()
        .map(|s| s.app_port)
        .filter(|p| !probed.contains(p))
        .collect();
    Ok(Workload {
        namespace: namespace.to_string(),
        service_account,
        inbound_port,
        served,
        captured_ports,
    })
}

fn port_annotation(name: &str, text: &str) -> Result<u16, String> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("annotation {name}: {text:?} is not a port (1-65535)"))
}

fn first_container_port(containers: &[Container]) -> Option<u16> {
    containers
        .first()?
        .ports
        .as_ref()?
        .iter()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .find_map(|p| u16::try_from(p.container_port).ok())
}

/// Every port the kubelet probes (HTTP, TCP, gRPC probes of every container), named ports
/// resolved against their container's ports.
fn probed_ports(containers: &[Container]) -> Vec<u16> {
    let mut ports = Vec::new();
    for c in containers {
        let resolve = |port: &IntOrString| match port {
            IntOrString::Int(n) => u16::try_from(*n).ok(),
            IntOrString::String(name) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok()),
        };
        let probes: [&Option<Probe>; 3] = [&c.liveness_probe, &c.readiness_probe, &c.startup_probe];
        for probe in probes.into_iter().flatten() {
            let port = probe
                .http_get
                .as_ref()
                .and_then(|h| resolve(&h.port))
                .or_else(|| probe.tcp_socket.as_ref().and_then(|t| resolve(&t.port)))
                .or_else(|| probe.grpc.as_ref().and_then(|g| u16::try_from(g.port).ok()));
            ports.extend(port);
        }
    }
    ports
}

/// The operations: only additions at the paths injection owns, so fields of the pod this
/// controller's Kubernetes types do not know are never touched.
fn patch(
    pod: &Pod,
    annotations: &BTreeMap<String, String>,
    t: &Template<'_>,
    w: &Workload,
) -> Vec<Value> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut ops = Vec::new();
    let mut annotations = annotations.clone();
    annotations.insert(INJECTED_ANNOTATION.into(), "true".into());
    annotations.insert(ROOT_CA_ANNOTATION.into(), t.root_pem.to_string());
    // `add` of an existing member replaces it: the whole map, the pod's own annotations kept.
    ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": annotations}));
    let init = to_json(&init_container(t, w));
    let proxy = to_json(&proxy_container(t, w));
    if spec.init_containers.as_ref().is_none_or(Vec::is_empty) {
        ops.push(json!({"op": "add", "path": "/spec/initContainers", "value": [init, proxy]}));
    } else {
        // First the capture rules, then the proxy, then the pod's own init containers (whose
        // connections are captured too, so the proxy must already run).
        ops.push(json!({"op": "add", "path": "/spec/initContainers/0", "value": proxy}));
        ops.push(json!({"op": "add", "path": "/spec/initContainers/0", "value": init}));
    }
    let volumes: Vec<Value> = volumes().iter().map(to_json).collect();
    if spec.volumes.as_ref().is_none_or(Vec::is_empty) {
        ops.push(json!({"op": "add", "path": "/spec/volumes", "value": volumes}));
    } else {
        for v in volumes {
            ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": v}));
        }
    }
    ops
}

/// Kubernetes types always serialise to JSON (string keys, no floats).
fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("Kubernetes objects serialise to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::injection::settings::InjectionSettings;

    const ROOT: &str = "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n";

    fn settings() -> InjectionSettings {
        InjectionSettings::parse("image: mesh:0.1.0\n").unwrap()
    }

    fn template(settings: &InjectionSettings) -> Template<'_> {
        Template {
            cluster: "us-east",
            mesh_namespace: "mesh-system",
            root_pem: ROOT,
            settings,
        }
    }

    fn pod(yaml: &str) -> Value {
        serde_saphyr::from_str(yaml).unwrap()
    }

    const ECHO: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: echo-0\n  \
        annotations: {mesh.dev/service: echo, team: a}\nspec:\n  serviceAccountName: echo\n  \
        containers:\n  - name: echo\n    image: echo\n    ports: [{containerPort: 8080}, {containerPort: 9090}]\n";

    /// Decides on `pod` and applies the patch to it, the way the API server does.
    fn run(pod: &Value) -> (Decision, Value) {
        let settings = settings();
        let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
        let decision = decide(&typed, "demo", &template(&settings));
        let mut out = pod.clone();
        if let Decision::Inject { patch, .. } = &decision {
            let patch: json_patch::Patch =
                serde_json::from_value(Value::Array(patch.clone())).expect("a valid JSON Patch");
            json_patch::patch(&mut out, &patch).expect("the patch applies to the pod");
        }
        (decision, out)
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array()
            .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default()
    }

    fn args(container: &Value) -> Vec<&str> {
        container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect()
    }

    fn flag<'a>(args: &[&'a str], name: &str) -> Option<&'a str> {
        args.iter().position(|a| *a == name).map(|i| args[i + 1])
    }

    #[test]
    fn a_serving_pod_gets_init_proxy_volumes_and_annotations() {
        let (decision, out) = run(&pod(ECHO));
        assert!(
            matches!(&decision, Decision::Inject { warnings, .. } if warnings.is_empty()),
            "{decision:?}"
        );
        assert_eq!(
            names(&out["spec"]["initContainers"]),
            ["mesh-init", "mesh-proxy"]
        );
        assert_eq!(names(&out["spec"]["containers"]), ["echo"]);
        assert_eq!(
            names(&out["spec"]["volumes"]),
            ["mesh-token", "mesh-root-ca"]
        );
        let annotations = &out["metadata"]["annotations"];
        assert_eq!(annotations["mesh.dev/injected"], "true");
        assert_eq!(annotations["mesh.dev/root-ca"], ROOT);
        assert_eq!(
            annotations["team"], "a",
            "the pod's own annotations are kept"
        );
        let proxy = args(&out["spec"]["initContainers"][1]);
        assert_eq!(flag(&proxy, "--service"), Some("echo.demo"));
        assert_eq!(flag(&proxy, "--app"), Some("127.0.0.1:8080"));
        assert_eq!(flag(&proxy, "--service-account"), Some("echo"));
        assert_eq!(flag(&proxy, "--id"), Some("$(POD_NAME)"));
        let init = args(&out["spec"]["initContainers"][0]);
        assert_eq!(
            flag(&init, "--app-ports"),
            Some("8080"),
            "only the served port"
        );
        assert_eq!(
            out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            "mesh"
        );
    }

    #[test]
    fn the_pods_own_init_containers_and_volumes_come_after() {
        let mut p = pod(ECHO);
        p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m"}]);
        p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
        let (_, out) = run(&p);
        assert_eq!(
            names(&out["spec"]["initContainers"]),
            ["mesh-init", "mesh-proxy", "migrate"]
        );
        assert_eq!(
            names(&out["spec"]["volumes"]),
            ["data", "mesh-token", "mesh-root-ca"]
        );
    }

    #[test]
    fn a_client_pod_serves_nothing_and_captures_no_inbound_port() {
        let p = pod(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: c}\nspec:\n  containers:\n  - name: c\n    image: c\n    ports: [{containerPort: 80}]\n",
        );
        let (decision, out) = run(&p);
        assert!(matches!(decision, Decision::Inject { .. }), "{decision:?}");
        let proxy = args(&out["spec"]["initContainers"][1]);
        assert_eq!(flag(&proxy, "--service"), None);
        assert_eq!(flag(&proxy, "--service-account"), Some("default"));
        assert_eq!(
            flag(&args(&out["spec"]["initContainers"][0]), "--app-ports"),
            None
        );
    }

    #[test]
    fn an_injected_pod_is_not_injected_twice() {
        let (_, once) = run(&pod(ECHO));
        let (decision, twice) = run(&once);
        assert!(
            matches!(&decision, Decision::Skip { warning: None, .. }),
            "{decision:?}"
        );
        assert_eq!(once, twice);
    }

    #[test]
    fn opting_out_and_clashing_names_leave_the_pod_unchanged() {
        let mut p = pod(ECHO);
        p["metadata"]["annotations"]["mesh.dev/inject"] = json!("false");
        let (decision, out) = run(&p);
        assert!(
            matches!(decision, Decision::Skip { warning: None, .. }),
            "{decision:?}"
        );
        assert_eq!(out, p);

        let mut p = pod(ECHO);
        p["spec"]["containers"][0]["name"] = json!("mesh-proxy");
        let (decision, out) = run(&p);
        let Decision::Skip {
            warning: Some(w), ..
        } = decision
        else {
            panic!("{decision:?}");
        };
        assert!(
            w.contains("\"mesh-proxy\"") && w.contains("mesh.dev/injected"),
            "{w}"
        );
        assert_eq!(out, p);

        let mut p = pod(ECHO);
        p["spec"]["hostNetwork"] = json!(true);
        let (decision, _) = run(&p);
        assert!(
            matches!(
                decision,
                Decision::Skip {
                    warning: Some(_),
                    ..
                }
            ),
            "{decision:?}"
        );

        let settings = settings();
        let typed: Pod = serde_json::from_value(pod(ECHO)).unwrap();
        let decision = decide(&typed, "mesh-system", &template(&settings));
        assert!(
            matches!(decision, Decision::Skip { warning: None, .. }),
            "{decision:?}"
        );
    }

    #[test]
    fn bad_annotations_are_refused_naming_them() {
        for (key, value, needle) in [
            ("mesh.dev/inject", "maybe", "mesh.dev/inject: \"maybe\""),
            (
                "mesh.dev/inbound-port",
                "http",
                "mesh.dev/inbound-port: \"http\"",
            ),
            ("mesh.dev/inbound-port", "0", "mesh.dev/inbound-port"),
            (
                "mesh.dev/inbound-port",
                "15001",
                "mesh.dev/inbound-port: \"15001\" is taken",
            ),
            ("mesh.dev/app-port", "70000", "mesh.dev/app-port: \"70000\""),
            (
                "mesh.dev/app-port",
                "15006",
                "is one of the sidecar's ports",
            ),
            ("mesh.dev/service", "Echo_1", "mesh.dev/service: \"Echo_1\""),
        ] {
            let mut p = pod(ECHO);
            p["metadata"]["annotations"][key] = json!(value);
            let (decision, out) = run(&p);
            let Decision::Refuse(message) = decision else {
                panic!("{key}={value}: {decision:?}");
            };
            assert!(message.contains(needle), "{key}={value}: {message}");
            assert_eq!(out, p);
        }
        let mut p = pod(ECHO);
        p["spec"]["containers"][0]["ports"] = json!([]);
        let (decision, _) = run(&p);
        assert!(
            matches!(&decision, Decision::Refuse(m) if m.contains("mesh.dev/app-port")),
            "{decision:?}"
        );
        let mut p = pod(ECHO);
        p["spec"]["serviceAccountName"] = json!("my.account");
        let (decision, _) = run(&p);
        assert!(
            matches!(&decision, Decision::Refuse(m) if m.contains("serviceAccountName \"my.account\"")),
            "{decision:?}"
        );
    }

    #[test]
    fn a_probed_app_port_is_not_captured_and_the_user_is_told() {
        let mut p = pod(ECHO);
        p["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 8080}]);
        p["spec"]["containers"][0]["readinessProbe"] =
            json!({"httpGet": {"path": "/", "port": "http"}});
        let (decision, out) = run(&p);
        let Decision::Inject { warnings, .. } = decision else {
            panic!("{decision:?}");
        };
        assert!(warnings[0].contains("port 8080 is probed"), "{warnings:?}");
        assert_eq!(
            flag(&args(&out["spec"]["initContainers"][0]), "--app-ports"),
            None
        );
        // Another port probed: the app port is still captured.
        p["spec"]["containers"][0]["readinessProbe"] = json!({"tcpSocket": {"port": 9090}});
        let (_, out) = run(&p);
        assert_eq!(
            flag(&args(&out["spec"]["initContainers"][0]), "--app-ports"),
            Some("8080")
        );
    }

    #[test]
    fn the_annotated_ports_are_used() {
        let mut p = pod(ECHO);
        p["metadata"]["annotations"]["mesh.dev/inbound-port"] = json!("16000");
        p["metadata"]["annotations"]["mesh.dev/app-port"] = json!("9090");
        let (_, out) = run(&p);
        let proxy = args(&out["spec"]["initContainers"][1]);
        assert_eq!(flag(&proxy, "--inbound"), Some("0.0.0.0:16000"));
        assert_eq!(flag(&proxy, "--app"), Some("127.0.0.1:9090"));
        let init = args(&out["spec"]["initContainers"][0]);
        assert_eq!(flag(&init, "--inbound-port"), Some("16000"));
        assert_eq!(flag(&init, "--app-ports"), Some("9090"));
    }
}
