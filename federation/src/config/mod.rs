//! The controller's command line (`mesh controller --help`) and its validated form.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_core::argv::{Argv, parse_flags};
use mesh_core::host_port::HostPorts;
use mesh_core::names::check_label;

use crate::dns::vip::RangeError;
use crate::dns::{DnsSettings, ForwardSettings};
use crate::error::FederationError;
use crate::injection::WebhookConfig;

mod admin;

pub(crate) use admin::AdminTokenSource;

/// Sidecars heartbeat every second; three missed beats expire a workload.
const DEFAULT_REGISTRATION_TTL: &str = "3s";
/// Matches `peer_catalogs::DEFAULT_LEASE_GRACE`: rides out a gateway restart, not a dead region.
const DEFAULT_LEASE_GRACE: &str = "30s";
/// Workload certificates live a day and are rotated well before they expire.
const DEFAULT_CERT_TTL: &str = "24h";
/// client-go's default: a killed leader is replaced in well under a minute, and a slow API
/// server does not make leadership flap.
const DEFAULT_LEADER_LEASE: &str = "15s";
/// Short, so a name that disappears (a peer's catalog withdrawn) is forgotten by caches soon.
const DEFAULT_DNS_TTL: &str = "5s";
/// Generous: in Kubernetes one client address (the cluster DNS) asks for many pods.
const DEFAULT_DNS_CLIENT_QPS: u32 = 2000;
/// A resolver that has not answered in 2 s is not going to: clients (glibc: 5 s, dig: 5 s)
/// then get SERVFAIL before they give up themselves.
const DEFAULT_DNS_FORWARD_TIMEOUT: &str = "2s";
/// Each forwarded query holds a socket until answered or timed out; 512 stays well inside the
/// usual 1024 file descriptors with the DNS TCP connections (128) and everything else, and
/// at an upstream's usual millisecond still carries hundreds of thousands of queries a second.
const DEFAULT_DNS_FORWARD_MAX_INFLIGHT: usize = 512;
/// Shortest certificate lifetime: every component renews at 2/3 of it, so shorter would leave
/// no time to retry a failed renewal. A minute is the practical floor outside tests.
const MIN_CERT_TTL: Duration = Duration::from_secs(10);

/// `mesh controller`: the federation controller of one cluster (registry, CA, peering, failover
/// decisions, discovery streams to sidecars and the gateway, link management).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ControllerArgs {
    /// Name of this cluster, a DNS label (e.g. `us-east`). Its trust domain is `<cluster>.mesh`.
    #[arg(long)]
    pub cluster: String,

    /// Region this cluster runs in, used by peers for failover priority. Default: the cluster
    /// name.
    #[arg(long)]
    pub region: Option<String>,

    /// The cluster's state directory, holding `ca.crt`, `ca.key` and `join-token` (written by
    /// `mesh ca`). The controller keeps its links in `links.json` there. Not used with
    /// `--kubernetes`, where the state lives in Kubernetes objects.
    #[arg(
        long,
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    pub state_dir: Option<PathBuf>,

    /// Kubernetes mode: the registry is the cluster's `ServiceExport`s, Services and
    /// EndpointSlices; links are `Link` objects; the CA is a Secret; workloads authenticate with
    /// ServiceAccount tokens; replicas elect a leader with a Lease.
    #[arg(long)]
    pub kubernetes: bool,

    /// Kubernetes mode: the kubeconfig to use (default: the pod's in-cluster config).
    #[arg(long, requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubernetes mode: the namespace the chart is installed in (its CA Secret, ConfigMaps and
    /// leader Lease live there).
    #[arg(long, default_value = mesh_k8s::names::DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// Kubernetes mode: this replica's name in the leader election (the chart passes the pod's
    /// name; default: the host name).
    #[arg(long)]
    pub pod_name: Option<String>,

    /// Kubernetes mode: the Secret holding the CA (`ca.crt`, `ca.key`, `join-token`). The
    /// default `mesh-ca` is created on first start when missing; any other name must exist.
    #[arg(long, default_value = mesh_k8s::names::DEFAULT_CA_SECRET)]
    pub ca_secret: String,

    /// Kubernetes mode: the gateway's ServiceAccount in `--namespace`; its tokens are issued
    /// the gateway identity.
    #[arg(long, default_value = mesh_k8s::names::GATEWAY_SERVICE_ACCOUNT)]
    pub gateway_service_account: String,

    /// Kubernetes mode: how long the leader Lease lasts without renewal (a killed leader is
    /// replaced within about this long).
    #[arg(long, value_parser = humantime::parse_duration, default_value = DEFAULT_LEADER_LEASE)]
    pub leader_lease: Duration,

    /// Control listener (TLS, HTTP/2) for sidecars and the gateway.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,

    /// Admin listener (plain HTTP): /healthz, /readyz, /metrics, /v1/status, /v1/links,
    /// /v1/link-info. Keep it on loopback or a private network.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin: SocketAddr,

    /// The admin token: every admin call but GET and HEAD (links, trust changes) needs
    /// `Authorization: Bearer <token>` with this file's content. Default: `admin-token` in the
    /// state directory, created (random, mode 0600) when missing. Kubernetes mode: a file that
    /// must exist (the chart mounts Secret `mesh-admin-token`), required when `--admin` is not
    /// on loopback.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,

    /// DNS server (UDP and TCP), authoritative for `clusterset.local`: the cluster-set VIP of
    /// every service (`<svc>.<ns>.svc.clusterset.local`), per-cluster VIPs
    /// (`<svc>.<ns>.svc.<cluster>.clusterset.local`) and SRV records of named ports. Names
    /// outside the zone are refused, or forwarded with `--dns-upstream`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub dns: SocketAddr,

    /// TTL of DNS answers (and of negative answers), e.g. `5s`: short, so a withdrawn name is
    /// forgotten soon.
    #[arg(long, value_parser = humantime::parse_duration, default_value = DEFAULT_DNS_TTL)]
    pub dns_ttl: Duration,

    /// DNS queries per second each client address may send on average (twice as many in a
    /// burst); 0 disables the limit. In Kubernetes the cluster DNS forwards for many pods, so
    /// keep it generous.
    #[arg(long, default_value_t = DEFAULT_DNS_CLIENT_QPS)]
    pub dns_client_qps: u32,

    /// Upstream resolvers for names outside `clusterset.local`, `ip:port` comma-separated in
    /// order of preference (e.g. `10.96.0.10:53,1.1.1.1:53`); then the controller can be a
    /// pod's only resolver. Without it those names are refused. Answers are not cached.
    #[arg(long)]
    pub dns_upstream: Option<HostPorts>,

    /// How long a forwarded query may take in all, every upstream tried included (then
    /// SERVFAIL), e.g. `2s`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = DEFAULT_DNS_FORWARD_TIMEOUT)]
    pub dns_forward_timeout: Duration,

    /// At most this many queries forwarded at once; more are answered SERVFAIL at once (and
    /// counted in `mesh_dns_forwards_total{result="overloaded"}`).
    #[arg(long, default_value_t = DEFAULT_DNS_FORWARD_MAX_INFLIGHT)]
    pub dns_forward_max_inflight: usize,

    /// The range service VIPs are allocated from (IPv4 CIDR, /8 to /30). The default is in
    /// the reserved class E block, never routed anywhere, so a VIP cannot shadow a real
    /// address. Every cluster of a cluster-set must use the same range.
    #[arg(long, default_value = crate::dns::vip::DEFAULT_RANGE)]
    pub vip_range: String,

    /// An IPv6 range (CIDR, /8 to /112) mirroring the IPv4 VIPs (the same offset), answered as
    /// AAAA records; without it there are no AAAA records.
    #[arg(long)]
    pub vip_range_v6: Option<String>,

    /// Other regions in failover preference order, comma-separated (e.g. `eu,ap`). Clusters
    /// in unlisted regions come after listed ones, ordered by measured round-trip time.
    #[arg(long, value_delimiter = ',')]
    pub region_priority: Vec<String>,

    /// How long a peer's catalog stays usable after its link drops (static stability), e.g.
    /// `30s`; then it is withdrawn so stale endpoints cannot attract traffic.
    #[arg(long, value_parser = humantime::parse_duration, default_value = DEFAULT_LEASE_GRACE)]
    pub lease_grace: Duration,

    /// A workload registration expires this long after its last heartbeat (e.g. `3s`).
    /// Sidecars heartbeat every second, so the default tolerates two lost beats.
    #[arg(long, value_parser = humantime::parse_duration, default_value = DEFAULT_REGISTRATION_TTL)]
    pub registration_ttl: Duration,

    /// Optional YAML file of static endpoints (VMs, services without a sidecar that
    /// registers): a list of `{service: echo.demo, address: ip:port, identity: spiffe://...}`;
    /// `plaintext: true` instead of `identity` lists a local plain HTTP/2 (h2c) server that
    /// sidecars reach without TLS and that is not exported.
    #[arg(long)]
    pub services_file: Option<PathBuf>,

    /// Traffic policy files (local mode), comma-separated or repeated: YAML documents
    /// (`HTTPRoute`, ...) watched for changes; a change that does not validate is refused
    /// with file, line and reason, and the last good policy stays in force.
    #[arg(long = "policy", value_delimiter = ',')]
    pub policy_files: Vec<PathBuf>,

    /// Validity of the certificates the CA signs (e.g. `24h`, the default; at least `10s`, a
    /// minute being the practical floor). Every component renews at 2/3 of it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = DEFAULT_CERT_TTL)]
    pub cert_ttl: Duration,

    /// Kubernetes mode: serve the sidecar injection webhook (HTTPS, `POST /inject`, a mutating
    /// admission webhook for Pods) on this address, e.g. `0.0.0.0:15017`. Off when not given.
    #[arg(long)]
    pub webhook: Option<SocketAddr>,

    /// Extra names of the webhook's serving certificate, comma-separated DNS names or IP
    /// addresses, besides `mesh-controller.<namespace>.svc` and
    /// `mesh-controller.<namespace>.svc.cluster.local` (e.g. the host of a `clientConfig.url`).
    #[arg(long, value_delimiter = ',', requires = "webhook")]
    pub webhook_san: Vec<String>,

    /// The MutatingWebhookConfiguration whose webhooks' `caBundle` the controller keeps equal
    /// to the cluster's root certificate (every replica; written only when it differs).
    #[arg(long, default_value = mesh_k8s::names::INJECTOR_WEBHOOK_CONFIGURATION)]
    pub webhook_configuration: String,

    /// The injection settings file, YAML (`image`, `imagePullPolicy`, `resources`, `logLevel`,
    /// `excludeOutboundPorts`, `excludeOutboundCidrs`; the chart mounts ConfigMap
    /// `mesh-injection`). Read on every admission request: while it is missing or invalid, pods
    /// are allowed unchanged with a warning. Required with `--webhook`.
    #[arg(long, requires = "webhook")]
    pub injection_config: Option<PathBuf>,

    /// Once ready, write a JSON file with the bound addresses (`control`, `admin`, `dns`, and
    /// `webhook` when on) and the pid here, so a supervisor learns the real ports.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

impl ControllerArgs {
    /// The arguments of the controller of `cluster` keeping its state in `state_dir`, every other
    /// flag at its default (clap's, so the two cannot drift apart).
    pub fn new(cluster: &str, state_dir: &Path) -> Self {
        let mut argv = Argv::default();
        argv.flag("cluster", cluster).path("state-dir", state_dir);
        parse_flags(argv).expect("rendered flags parse")
    }

    /// The flags as command-line arguments after `mesh controller`, the inverse of parsing them.
    pub fn to_argv(&self) -> Argv {
        let mut argv = Argv::default();
        argv.flag("cluster", &self.cluster)
            .opt("region", self.region.as_ref())
            .opt_path("state-dir", self.state_dir.as_deref());
        if self.kubernetes {
            argv.switch("kubernetes", true)
                .opt_path("kubeconfig", self.kubeconfig.as_deref())
                .opt("pod-name", self.pod_name.as_ref())
                .flag("namespace", &self.namespace)
                .flag("ca-secret", &self.ca_secret)
                .flag("gateway-service-account", &self.gateway_service_account)
                .duration("leader-lease", self.leader_lease)
                .opt("webhook", self.webhook)
                .list("webhook-san", &self.webhook_san)
                .flag("webhook-configuration", &self.webhook_configuration)
                .opt_path("injection-config", self.injection_config.as_deref());
        }
        argv.flag("control", self.control)
            .flag("admin", self.admin)
            .opt_path("admin-token-file", self.admin_token_file.as_deref())
            .flag("dns", self.dns)
            .duration("dns-ttl", self.dns_ttl)
            .flag("dns-client-qps", self.dns_client_qps)
            .opt("dns-upstream", self.dns_upstream.as_ref())
            .duration("dns-forward-timeout", self.dns_forward_timeout)
            .flag("dns-forward-max-inflight", self.dns_forward_max_inflight)
            .flag("vip-range", &self.vip_range)
            .opt("vip-range-v6", self.vip_range_v6.as_ref())
            .list("region-priority", &self.region_priority)
            .duration("lease-grace", self.lease_grace)
            .duration("registration-ttl", self.registration_ttl)
            .opt_path("services-file", self.services_file.as_deref())
            .list(
                "policy",
                &self
                    .policy_files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>(),
            )
            .duration("cert-ttl", self.cert_ttl)
            .opt_path("ready-file", self.ready_file.as_deref());
        argv
    }
}

/// Where the controller keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateStore {
    /// Local mode: the state directory.
    Directory(PathBuf),
    /// Kubernetes mode.
    Kubernetes(KubernetesConfig),
}

/// The Kubernetes settings (see [`ControllerArgs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    pub(crate) settings: crate::kubernetes::KubernetesSettings,
}

/// The validated configuration the controller runs with.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The cluster.
    pub cluster: String,
    /// Its region.
    pub region: String,
    /// Where the state lives.
    pub store: StateStore,
    /// Control listener address.
    pub control: SocketAddr,
    /// Admin listener address.
    pub admin: SocketAddr,
    /// Where the admin token comes from.
    pub(crate) admin_token: AdminTokenSource,
    /// The DNS server.
    pub dns: DnsSettings,
    /// Other regions in failover order.
    pub region_priority: Vec<String>,
    /// Peer catalog lease grace.
    pub lease_grace: Duration,
    /// Registration lifetime without a heartbeat.
    pub registration_ttl: Duration,
    /// Static services file.
    pub services_file: Option<PathBuf>,
    /// Validity of signed certificates.
    pub cert_ttl: Duration,
    /// Where to write the ready file.
    pub ready_file: Option<PathBuf>,
    /// The sidecar injection webhook, when on.
    pub webhook: Option<WebhookConfig>,
    /// Traffic policy files (local mode).
    pub policy_files: Vec<PathBuf>,
}

impl ControllerConfig {
    /// Checks every flag and builds the configuration.
    pub fn from_args(args: ControllerArgs) -> Result<Self, FederationError> {
        let config = |flag, reason: String| FederationError::Config { flag, reason };
        let forward = ForwardSettings::from_args(&args)?;
        check_label(&args.cluster).map_err(|e| config("cluster", e.to_string()))?;
        let region = args.region.unwrap_or_else(|| args.cluster.clone());
        check_label(&region).map_err(|e| config("region", e.to_string()))?;
        let mut region_priority = Vec::new();
        for r in args.region_priority {
            let r = r.trim().to_string();
            check_label(&r).map_err(|e| config("region-priority", e.to_string()))?;
            if region_priority.contains(&r) {
                return Err(config(
                    "region-priority",
                    format!("region {r} is listed twice"),
                ));
            }
            region_priority.push(r);
        }
        if args.registration_ttl.is_zero() {
            return Err(config(
                "registration-ttl",
                "must be above 0 (sidecars heartbeat every second; 3s is the default)".into(),
            ));
        }
        if args.lease_grace.is_zero() {
            return Err(config(
                "lease-grace",
                "must be above 0 (30s is the default)".into(),
            ));
        }
        if args.cert_ttl < MIN_CERT_TTL {
            return Err(config(
                "cert-ttl",
                "must be at least 10s (components renew at 2/3 of it; a minute is the practical \
                 floor outside tests)"
                    .into(),
            ));
        }
        if args.dns_ttl < Duration::from_secs(1) || args.dns_ttl > Duration::from_secs(3600) {
            return Err(config(
                "dns-ttl",
                "must be 1s to 1h (5s is the default)".into(),
            ));
        }
        let dns = DnsSettings {
            forward,
            addr: args.dns,
            ttl: args.dns_ttl,
            client_qps: args.dns_client_qps,
            range: args
                .vip_range
                .parse()
                .map_err(|e: RangeError| config("vip-range", e.to_string()))?,
            v6: args
                .vip_range_v6
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e: RangeError| config("vip-range-v6", e.to_string()))?,
        };
        if args.webhook.is_some() && !args.kubernetes {
            return Err(config(
                "webhook",
                "is only served in Kubernetes mode (--kubernetes): it injects sidecars into pods"
                    .into(),
            ));
        }
        if args.kubernetes && !args.policy_files.is_empty() {
            return Err(config(
                "policy",
                "is for local mode: in Kubernetes mode apply HTTPRoutes and policy objects".into(),
            ));
        }
        let webhook = WebhookConfig::from_flags(
            args.webhook,
            &args.webhook_san,
            &args.webhook_configuration,
            args.injection_config.as_deref(),
        )?;
        let admin_token = AdminTokenSource::from_flags(
            args.admin_token_file.as_deref(),
            args.state_dir.as_deref().filter(|_| !args.kubernetes),
            args.admin,
        )?;
        let store = match (args.kubernetes, args.state_dir) {
            (false, Some(dir)) => StateStore::Directory(dir),
            (false, None) => {
                return Err(config(
                    "state-dir",
                    "is required (or run in Kubernetes mode with --kubernetes)".into(),
                ));
            }
            (true, Some(_)) => {
                return Err(config(
                    "state-dir",
                    "is not used with --kubernetes: the state lives in Kubernetes objects".into(),
                ));
            }
            (true, None) => {
                check_label(&args.namespace).map_err(|e| config("namespace", e.to_string()))?;
                if args.leader_lease < Duration::from_secs(2) {
                    return Err(config("leader-lease", "must be at least 2s".into()));
                }
                let pod_name = match args.pod_name {
                    Some(name) if !name.trim().is_empty() => name,
                    _ => std::env::var("HOSTNAME")
                        .ok()
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| {
                            format!("{}-controller-{}", args.cluster, std::process::id())
                        }),
                };
                StateStore::Kubernetes(KubernetesConfig {
                    settings: crate::kubernetes::KubernetesSettings {
                        kubeconfig: args.kubeconfig,
                        namespace: args.namespace,
                        pod_name,
                        create_ca: args.ca_secret == mesh_k8s::names::DEFAULT_CA_SECRET,
                        ca_secret: args.ca_secret,
                        gateway_service_account: args.gateway_service_account,
                        leader_lease: args.leader_lease,
                    },
                })
            }
        };
        Ok(Self {
            cluster: args.cluster,
            region,
            store,
            control: args.control,
            admin: args.admin,
            admin_token,
            dns,
            region_priority,
            lease_grace: args.lease_grace,
            registration_ttl: args.registration_ttl,
            policy_files: args.policy_files,
            services_file: args.services_file,
            cert_ttl: args.cert_ttl,
            ready_file: args.ready_file,
            webhook,
        })
    }
}

#[cfg(test)]
mod tests;
