//! Sidecar injection (Kubernetes mode, `--webhook`): a mutating admission webhook for Pods.
//!
//! - [`mutation`]: the decision for one pod and its JSON Patch (pure);
//! - [`containers`]: the injected `mesh-init` and `mesh-proxy` containers and volumes (pure);
//! - [`settings`]: the image, resources and capture exclusions, from the file the chart mounts,
//!   read on every request;
//! - [`review`]: `AdmissionReview` in, `AdmissionReview` (or a 400) out (pure);
//! - [`server`]: the HTTPS listener, its certificate from the cluster CA;
//! - [`ca_bundle`]: the MutatingWebhookConfiguration's `caBundle` kept equal to the root.
//!
//! The webhook must never block deployments when it is unhealthy: the chart's failurePolicy is
//! `Ignore` by default, and whenever the webhook cannot build its answer it allows the pod
//! unchanged with a warning and counts `mesh_injection_total{result="error"}`.

pub(crate) mod ca_bundle;
pub(crate) mod containers;
pub(crate) mod mutation;
pub(crate) mod review;
pub(crate) mod server;
pub(crate) mod settings;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use mesh_core::names::check_label;
use mesh_k8s::names::CONTROLLER_SERVICE;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ca_service::CaService;
use crate::control_listener::ServingTls;
use crate::controller::Controller;
use crate::error::FederationError;

/// Retry delay when reissuing the serving certificate failed.
const CERT_RETRY: Duration = Duration::from_secs(60);

/// The webhook's flags, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where to listen (HTTPS).
    pub addr: SocketAddr,
    /// Extra DNS names of the serving certificate.
    pub dns_names: Vec<String>,
    /// Extra IP addresses of the serving certificate.
    pub ips: Vec<IpAddr>,
    /// The MutatingWebhookConfiguration whose `caBundle` is kept equal to the root.
    pub configuration: String,
    /// The injection settings file.
    pub settings_file: PathBuf,
}

impl WebhookConfig {
    /// Checks the webhook's flags: the settings file is given, every extra name is an address or a
    /// DNS name, the configuration's name is a DNS name.
    pub(crate) fn from_flags(
        addr: Option<SocketAddr>,
        sans: &[String],
        configuration: &str,
        settings_file: Option<&Path>,
    ) -> Result<Option<WebhookConfig>, FederationError> {
        let config = |flag, reason: String| FederationError::Config { flag, reason };
        let Some(addr) = addr else {
            return Ok(None);
        };
        let settings_file = settings_file.ok_or_else(|| {
            config(
                "injection-config",
                "is required with --webhook: the injection settings file (the chart mounts ConfigMap mesh-injection)".into(),
            )
        })?;
        check_dns_name(configuration).map_err(|e| config("webhook-configuration", e))?;
        let (mut dns_names, mut ips) = (Vec::new(), Vec::new());
        for san in sans.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            match san.parse::<std::net::IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => {
                    check_dns_name(san).map_err(|e| config("webhook-san", e))?;
                    dns_names.push(san.to_string());
                }
            }
        }
        Ok(Some(WebhookConfig {
            addr,
            dns_names,
            ips,
            configuration: configuration.to_string(),
            settings_file: settings_file.to_path_buf(),
        }))
    }

    /// Every name of the serving certificate: the controller Service's (as the chart's
    /// MutatingWebhookConfiguration calls it) and the extras.
    fn dns_names(&self, namespace: &str) -> Vec<String> {
        let mut names = vec![
            format!("{CONTROLLER_SERVICE}.{namespace}.svc"),
            format!("{CONTROLLER_SERVICE}.{namespace}.svc.cluster.local"),
        ];
        names.extend(self.dns_names.iter().cloned());
        names
    }
}

/// The running webhook: its bound address and tasks.
pub(crate) struct RunningWebhook {
    /// The bound address.
    pub addr: SocketAddr,
    /// Tasks that end when the controller shuts down.
    pub tasks: Vec<JoinHandle<()>>,
}

/// Everything [`start`] needs.
pub(crate) struct WebhookStart<'a> {
    /// The flags.
    pub config: WebhookConfig,
    /// The cluster.
    pub cluster: &'a str,
    /// The controller's namespace.
    pub namespace: &'a str,
    /// The controller (its CA issues the serving certificate; its metrics count requests).
    pub controller: Arc<Controller>,
    /// Validity of the serving certificate.
    pub cert_ttl: Duration,
    /// The API client (to patch the caBundle).
    pub client: Client,
}

/// Issues the serving certificate, binds the listener and starts serving and keeping the
/// caBundle patched.
pub(crate) async fn start(
    s: WebhookStart<'_>,
    shutdown: watch::Receiver<bool>,
) -> Result<RunningWebhook, FederationError> {
    let names = s.config.dns_names(s.namespace);
    let ca = s.controller.ca();
    let tls = ServingTls::new(serving_config(ca, &names, &s.config.ips, s.cert_ttl)?);
    let listener = mesh_core::telemetry::bind_tcp("controller", "webhook", s.config.addr).await?;
    let addr = server::bound(&listener, s.config.addr);
    let root_pem = ca.bundle().ca_pem;
    let injector = Arc::new(server::Injector {
        cluster: s.cluster.to_string(),
        mesh_namespace: s.namespace.to_string(),
        root_pem: root_pem.clone(),
        config: s.config.clone(),
        counter: s.controller.metrics().injections.clone(),
    });
    let rotation = {
        let tls = tls.clone();
        let controller = s.controller.clone();
        let ips = s.config.ips.clone();
        let ttl = s.cert_ttl;
        let shutdown = shutdown.clone();
        async move { rotate(controller, names, ips, ttl, tls, shutdown).await }
    };
    let tasks = vec![
        tokio::spawn(server::serve(listener, tls, injector, shutdown.clone())),
        tokio::spawn(rotation),
        tokio::spawn(ca_bundle::keep_patched(
            s.client,
            s.config.configuration.clone(),
            root_pem,
            shutdown,
        )),
    ];
    tracing::info!(%addr, settings = %s.config.settings_file.display(), configuration = %s.config.configuration, "sidecar injection webhook listening");
    Ok(RunningWebhook { addr, tasks })
}

fn serving_config(
    ca: &CaService,
    names: &[String],
    ips: &[IpAddr],
    ttl: Duration,
) -> Result<rustls::ServerConfig, FederationError> {
    let fail = |reason: String| FederationError::Config {
        flag: "webhook-san",
        reason,
    };
    let identity = ca
        .issue_serving(names, ips, ttl)
        .map_err(|e| fail(format!("cannot issue the webhook's certificate: {e}")))?;
    server::server_config(&identity)
        .map_err(|e| fail(format!("the webhook's TLS configuration: {e}")))
}

/// Reissues the certificate at half its validity.
async fn rotate(
    controller: Arc<Controller>,
    names: Vec<String>,
    ips: Vec<IpAddr>,
    ttl: Duration,
    tls: ServingTls,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut wait = ttl / 2;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        match serving_config(controller.ca(), &names, &ips, ttl) {
            Ok(config) => {
                tls.replace(config);
                tracing::info!("webhook serving certificate reissued");
                wait = ttl / 2;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reissuing the webhook certificate failed; retrying");
                wait = CERT_RETRY;
            }
        }
    }
}

fn check_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{name:?} is not a DNS name (1 to 253 characters)"));
    }
    for label in name.split('.') {
        check_label(label)
            .map_err(|e| format!("{name:?} is not an IP address or a DNS name: {e}"))?;
    }
    Ok(())
}
