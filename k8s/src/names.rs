//! Names the chart, the controller, `mesh link` and `mesh check` agree on.

/// API group of the mesh's own custom resources.
pub const GROUP: &str = "mesh.dev";
/// The namespace the chart is installed into in the docs; every command takes `--namespace`.
pub const DEFAULT_NAMESPACE: &str = "mesh-system";
/// Field manager of every server-side apply the controller makes.
pub const CONTROLLER_MANAGER: &str = "mesh-controller";
/// Field manager of `mesh link`.
pub const LINK_MANAGER: &str = "mesh-link";

/// ServiceAccount of the controller (chart).
pub const CONTROLLER_SERVICE_ACCOUNT: &str = "mesh-controller";
/// ServiceAccount of the gateway (chart).
pub const GATEWAY_SERVICE_ACCOUNT: &str = "mesh-gateway";
/// Deployment of the controller (chart).
pub const CONTROLLER_DEPLOYMENT: &str = "mesh-controller";

/// Secret of the cluster CA created by the controller when the chart names none: keys
/// [`CA_CERT_KEY`], [`CA_KEY_KEY`], [`JOIN_TOKEN_KEY`].
pub const DEFAULT_CA_SECRET: &str = "mesh-ca";
/// Key of the root certificate (PEM) in the CA Secret and the root ConfigMap.
pub const CA_CERT_KEY: &str = "ca.crt";
/// Key of the root's private key (PEM) in the CA Secret.
pub const CA_KEY_KEY: &str = "ca.key";
/// Key of the join token (for workloads outside Kubernetes) in the CA Secret.
pub const JOIN_TOKEN_KEY: &str = "join-token";

/// ConfigMap with the root certificate that gateways and sidecars mount (key [`CA_CERT_KEY`]).
pub const ROOT_CA_CONFIGMAP: &str = "mesh-root-ca";
/// ConfigMap where the leader publishes the cluster's link information (key [`LINK_INFO_KEY`]).
pub const LINK_INFO_CONFIGMAP: &str = "mesh-link-info";
/// Key of the link information (JSON of `mesh_core::api::LinkInfo`).
pub const LINK_INFO_KEY: &str = "link-info.json";
/// ConfigMap where the leader caches the cluster's export catalog across restarts.
pub const EXPORT_CACHE_CONFIGMAP: &str = "mesh-export-cache";
/// Key of the cached export catalog.
pub const EXPORT_CACHE_KEY: &str = "exports.json";
/// Lease the controller replicas elect their leader with.
pub const LEADER_LEASE: &str = "mesh-controller";

/// Label on every object the controller creates, so it finds (and deletes) only its own.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on the controller's objects.
pub const MANAGED_BY_VALUE: &str = "mesh-controller";

/// Pod annotation naming the port of the pod's sidecar inbound (mTLS) listener.
pub const INBOUND_PORT_ANNOTATION: &str = "mesh.dev/inbound-port";
/// The sidecar inbound port of a pod without [`INBOUND_PORT_ANNOTATION`] (what injection sets).
pub const DEFAULT_INBOUND_PORT: u16 = 15006;
/// Label EndpointSlices carry to name their Service (set by Kubernetes).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Audience of the ServiceAccount tokens workloads present to the CA.
pub const TOKEN_AUDIENCE: &str = "mesh";

/// Namespace label the chart's default `injection.namespaceSelector` matches (`enabled`).
pub const INJECTION_LABEL: &str = "mesh.dev/injection";
/// Pod annotation: `"false"` opts a pod out of injection (`"true"` is the same as none).
pub const INJECT_ANNOTATION: &str = "mesh.dev/inject";
/// Pod annotation the webhook sets on a pod it injected (`"true"`): a pod carrying it is left
/// as it is, so injection is idempotent.
pub const INJECTED_ANNOTATION: &str = "mesh.dev/injected";
/// Pod annotation naming the service the pod serves (a Service name in the pod's namespace):
/// its sidecar then serves inbound mTLS for `<service>.<namespace>`.
pub const SERVICE_ANNOTATION: &str = "mesh.dev/service";
/// Pod annotation naming the app's port the sidecar forwards inbound traffic to (default: the
/// first port of the pod's first container).
pub const APP_PORT_ANNOTATION: &str = "mesh.dev/app-port";
/// Pod annotation holding the cluster's root certificate (PEM), which the injected sidecar
/// reads through a downward API volume.
pub const ROOT_CA_ANNOTATION: &str = "mesh.dev/root-ca";
/// The injected sidecar container (a native sidecar: an init container that keeps running).
pub const SIDECAR_CONTAINER: &str = "mesh-proxy";
/// The injected init container that sets up the capture rules (`mesh init`).
pub const INIT_CONTAINER: &str = "mesh-init";
/// Default name of the chart's MutatingWebhookConfiguration, whose `caBundle` the controller
/// keeps equal to the cluster's root.
pub const INJECTOR_WEBHOOK_CONFIGURATION: &str = "mesh-sidecar-injector";
/// The controller's Service (chart).
pub const CONTROLLER_SERVICE: &str = "mesh-controller";
/// Port of the controller's control listener on its Service (chart).
pub const CONTROL_PORT: u16 = 15012;
