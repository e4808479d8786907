//! What injection adds to a pod: the `mesh-init` container (capture rules), the `mesh-proxy`
//! native sidecar, and their two volumes. Pure: typed Kubernetes objects built from the
//! workload's facts ([`Workload`]) and the settings ([`Template`]).
//!
//! The sidecar is a native sidecar (an init container with `restartPolicy: Always`, GA since
//! Kubernetes 1.33 and on by default since 1.29, the chart's minimum): it starts after
//! `mesh-init` and before the pod's own init containers and app containers, the kubelet waits
//! for its startup probe before starting them (so their first connections are captured by a
//! running proxy), and it is stopped after them (so a Job's pod completes).

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, Probe, ProjectedVolumeSource,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_core::argv::Argv;
use mesh_k8s::names::{
    CA_CERT_KEY, CONTROL_PORT, CONTROLLER_SERVICE, INIT_CONTAINER, ROOT_CA_ANNOTATION,
    SIDECAR_CONTAINER, TOKEN_AUDIENCE,
};

use super::settings::InjectionSettings;

/// The sidecar's outbound listener, where `mesh init` redirects the app's connections.
pub(crate) const OUTBOUND_PORT: u16 = 15001;
/// The sidecar's admin listener (probes, metrics), on the pod's address for the kubelet.
pub(crate) const ADMIN_PORT: u16 = 15020;
/// The uid the sidecar runs as; `mesh init` never redirects this uid's connections.
pub(crate) const PROXY_UID: i64 = 1337;
/// Volume of the projected ServiceAccount token (audience `mesh`) the sidecar presents to the CA.
pub(crate) const TOKEN_VOLUME: &str = "mesh-token";
/// Volume of the cluster's root certificate.
pub(crate) const ROOT_CA_VOLUME: &str = "mesh-root-ca";
const TOKEN_DIR: &str = "/var/run/mesh/token";
const ROOT_CA_DIR: &str = "/var/run/mesh/ca";
/// The kubelet rotates the token well before this; the sidecar uses it once, for its first CSR.
const TOKEN_SECONDS: i64 = 3600;

/// The settings every injected pod of this cluster shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Template<'a> {
    /// The cluster's name (`--cluster`).
    pub cluster: &'a str,
    /// The namespace of the controller (its Service is `mesh-controller.<namespace>.svc`).
    pub mesh_namespace: &'a str,
    /// The cluster's root certificate (PEM).
    pub root_pem: &'a str,
    /// Image, resources, log level, capture exclusions.
    pub settings: &'a InjectionSettings,
}

/// What the injected containers need to know about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Workload {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's ServiceAccount (its identity is `.../ns/<namespace>/sa/<account>`).
    pub service_account: String,
    /// The sidecar's inbound (mTLS) port.
    pub inbound_port: u16,
    /// The service the pod serves and the app port inbound traffic is forwarded to.
    pub served: Option<Served>,
    /// The app ports whose inbound connections `mesh init` redirects to the sidecar.
    pub captured_ports: Vec<u16>,
}

/// The service a pod serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Served {
    /// The Service's name, in the pod's namespace.
    pub service: String,
    /// The app's port on loopback.
    pub app_port: u16,
}

/// `mesh sidecar ...`: the proxy's command line (after the image's `mesh` entrypoint).
pub(crate) fn sidecar_argv(t: &Template<'_>, w: &Workload) -> Vec<String> {
    let mut argv = Argv::new(["sidecar"]);
    argv.flag("cluster", t.cluster)
        .flag(
            "controller",
            format!(
                "{CONTROLLER_SERVICE}.{}.svc:{CONTROL_PORT}",
                t.mesh_namespace
            ),
        )
        .flag("ca-file", format!("{ROOT_CA_DIR}/{CA_CERT_KEY}"))
        .flag("token-file", format!("{TOKEN_DIR}/token"))
        // Kubernetes expands $(POD_NAME) from the container's env: a pod created with
        // generateName has no name yet when it is admitted.
        .flag("id", "$(POD_NAME)")
        .flag("namespace", &w.namespace)
        .flag("service-account", &w.service_account)
        .flag("inbound", format!("0.0.0.0:{}", w.inbound_port))
        .flag("outbound", format!("127.0.0.1:{OUTBOUND_PORT}"))
        .flag("admin", format!("0.0.0.0:{ADMIN_PORT}"))
        .flag("outbound-policy", &t.settings.outbound_policy)
        .flag("inbound-policy", &t.settings.inbound_policy)
        .flag("vip-range", &t.settings.vip_range)
        // The pod's EndpointSlices say where it is and whether it is ready.
        .switch("no-register", true);
    if let Some(served) = &w.served {
        argv.flag("service", format!("{}.{}", served.service, w.namespace))
            .flag("app", format!("127.0.0.1:{}", served.app_port));
    }
    argv.into_vec()
}

/// `mesh init ...`: the capture rules' command line.
pub(crate) fn init_argv(t: &Template<'_>, w: &Workload) -> Vec<String> {
    let list = |ports: &[u16]| ports.iter().map(u16::to_string).collect::<Vec<_>>();
    let mut argv = Argv::new(["init"]);
    argv.flag("outbound-port", OUTBOUND_PORT)
        .flag("inbound-port", w.inbound_port)
        .flag("proxy-uid", PROXY_UID)
        .list("app-ports", &list(&w.captured_ports))
        .list(
            "exclude-outbound-ports",
            &list(&t.settings.exclude_outbound_ports),
        )
        .list("exclude-outbound-cidrs", &t.settings.exclude_outbound_cidrs);
    argv.into_vec()
}

/// The `mesh-init` container: root with `NET_ADMIN` and `NET_RAW` (iptables in the pod's
/// network namespace) and nothing else. Its root filesystem stays writable: iptables takes
/// its lock file under `/run`.
pub(crate) fn init_container(t: &Template<'_>, w: &Workload) -> Container {
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(t.settings.image.clone()),
        image_pull_policy: Some(t.settings.image_pull_policy.clone()),
        args: Some(init_argv(t, w)),
        resources: t.settings.resources.requirements(),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn admin_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ADMIN_PORT.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// The `mesh-proxy` native sidecar.
pub(crate) fn proxy_container(t: &Template<'_>, w: &Workload) -> Container {
    let mut ports = vec![
        ContainerPort {
            name: Some("mesh-inbound".into()),
            container_port: w.inbound_port.into(),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        },
        ContainerPort {
            name: Some("mesh-admin".into()),
            container_port: ADMIN_PORT.into(),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        },
    ];
    ports.dedup_by_key(|p| p.container_port);
    Container {
        name: SIDECAR_CONTAINER.into(),
        image: Some(t.settings.image.clone()),
        image_pull_policy: Some(t.settings.image_pull_policy.clone()),
        args: Some(sidecar_argv(t, w)),
        env: Some(vec![
            EnvVar {
                name: "POD_NAME".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            EnvVar {
                name: "RUST_LOG".into(),
                value: Some(t.settings.log_level.clone()),
                ..EnvVar::default()
            },
        ]),
        ports: Some(ports),
        restart_policy: Some("Always".into()),
        // The app starts once the proxy has its identity and listens (up to two minutes).
        startup_probe: Some(admin_probe("/readyz", 1, 120)),
        readiness_probe: Some(admin_probe("/readyz", 2, 2)),
        liveness_probe: Some(admin_probe("/healthz", 10, 3)),
        resources: t.settings.resources.requirements(),
        security_context: Some(SecurityContext {
            run_as_user: Some(PROXY_UID),
            run_as_group: Some(PROXY_UID),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: TOKEN_VOLUME.into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: ROOT_CA_VOLUME.into(),
                mount_path: ROOT_CA_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

/// The token volume (audience `mesh`, checked by the controller with a TokenReview) and the
/// root certificate volume. The root comes from the pod's own [`ROOT_CA_ANNOTATION`] through
/// the downward API: a ConfigMap volume can only name a ConfigMap of the pod's namespace, and
/// `mesh-root-ca` lives in the controller's.
pub(crate) fn volumes() -> Vec<Volume> {
    vec![
        Volume {
            name: TOKEN_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(TOKEN_AUDIENCE.into()),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        path: "token".into(),
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: ROOT_CA_VOLUME.into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: CA_CERT_KEY.into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: format!("metadata.annotations['{ROOT_CA_ANNOTATION}']"),
                        ..ObjectFieldSelector::default()
                    }),
                    ..DownwardAPIVolumeFile::default()
                }]),
                ..DownwardAPIVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use mesh_sidecar::capture::InitArgs;
    use mesh_sidecar::transparent::{InboundPolicy, OutboundPolicy};
    use mesh_sidecar::{SidecarArgs, SidecarConfig};

    use super::*;

    #[derive(Parser)]
    enum Mesh {
        Sidecar(Box<SidecarArgs>),
        Init(InitArgs),
    }

    fn settings() -> InjectionSettings {
        InjectionSettings::parse(
            "image: mesh:0.1.0\nexcludeOutboundPorts: [443, 8443]\n\
             excludeOutboundCidrs: [10.96.0.1/32]\n",
        )
        .unwrap()
    }

    fn workload(served: bool) -> Workload {
        Workload {
            namespace: "demo".into(),
            service_account: "echo".into(),
            inbound_port: 15006,
            served: served.then(|| Served {
                service: "echo".into(),
                app_port: 8080,
            }),
            captured_ports: if served { vec![8080] } else { vec![] },
        }
    }

    fn template(settings: &InjectionSettings) -> Template<'_> {
        Template {
            cluster: "us-east",
            mesh_namespace: "mesh-system",
            root_pem: "",
            settings,
        }
    }

    #[test]
    fn the_injected_sidecar_command_line_parses_and_checks() {
        let settings = settings();
        let t = template(&settings);
        for served in [true, false] {
            let argv = sidecar_argv(&t, &workload(served));
            let Mesh::Sidecar(args) =
                Mesh::try_parse_from(std::iter::once("mesh".into()).chain(argv.clone()))
                    .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
            else {
                panic!("not a sidecar command line: {argv:?}");
            };
            assert_eq!(args.member.cluster, "us-east");
            assert_eq!(
                args.member.controller.to_string(),
                "mesh-controller.mesh-system.svc:15012"
            );
            assert_eq!(
                args.member.ca_file.to_str(),
                Some("/var/run/mesh/ca/ca.crt")
            );
            assert_eq!(args.member.admin.port(), ADMIN_PORT);
            assert!(args.no_register);
            let config = SidecarConfig::from_args(*args).expect("the sidecar accepts its flags");
            assert_eq!(config.service_account, "echo");
            assert_eq!(config.namespace, "demo");
            assert_eq!(config.inbound, "0.0.0.0:15006".parse().unwrap());
            assert_eq!(config.outbound, "127.0.0.1:15001".parse().unwrap());
            assert_eq!(config.vip_range.to_string(), settings.vip_range);
            assert_eq!(
                (config.outbound_policy, config.inbound_policy),
                (OutboundPolicy::AllowAny, InboundPolicy::Permissive)
            );
            assert_eq!(
                config.served.map(|s| (s.service.to_string(), s.app)),
                served.then(|| ("echo.demo".to_string(), "127.0.0.1:8080".parse().unwrap()))
            );
        }
    }

    #[test]
    fn the_injected_init_command_line_parses_to_the_plan() {
        let settings = settings();
        let t = template(&settings);
        for served in [true, false] {
            let argv = init_argv(&t, &workload(served));
            let Ok(Mesh::Init(args)) =
                Mesh::try_parse_from(std::iter::once("mesh".into()).chain(argv.clone()))
            else {
                panic!("not a mesh init command line: {argv:?}");
            };
            let plan = args.plan();
            assert_eq!(plan.outbound_port, OUTBOUND_PORT);
            assert_eq!(plan.inbound_port, 15006);
            assert_eq!(i64::from(plan.proxy_uid), PROXY_UID);
            assert_eq!(plan.app_ports, if served { vec![8080] } else { vec![] });
            assert_eq!(plan.exclude_outbound_ports, [443, 8443]);
            assert_eq!(plan.exclude_outbound_cidrs.len(), 1);
            assert!(!args.dry_run && !args.cleanup);
        }
    }

    #[test]
    fn init_runs_as_root_with_only_the_network_capabilities() {
        let settings = settings();
        let t = Template {
            cluster: "c",
            mesh_namespace: "m",
            root_pem: "",
            settings: &settings,
        };
        let init = init_container(&t, &workload(false));
        let sc = init.security_context.unwrap();
        assert_eq!(sc.run_as_user, Some(0));
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.add.unwrap(), ["NET_ADMIN", "NET_RAW"]);
        assert_eq!(caps.drop.unwrap(), ["ALL"]);
        let proxy = proxy_container(&t, &workload(false));
        assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
        assert_eq!(proxy.security_context.unwrap().run_as_user, Some(PROXY_UID));
        assert_eq!(proxy.image.as_deref(), Some("mesh:0.1.0"));
    }
}
