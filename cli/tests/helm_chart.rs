//! The Helm chart `charts/mesh` with the real `helm` and `kubectl` against three real API servers:
//! lint and template, a server-side dry run of what it renders, an install into each cluster
//! (CRDs established, every object there), its RBAC (everything the controller needs, nothing
//! more, nothing for the gateway), the MCS CRDs accepting what the controller writes, and the
//! values schema refusing bad values by name.
//!
//! These tests never skip: without the binaries (no Go toolchain to build them) they fail with
//! the reason, and under `CI=true` the message says the CI image is broken.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use mesh_k8s_testenv::{Cluster, TestEnv};
use serde_json::Value;

/// The test clusters (one fixture for this test binary).
const CLUSTERS: [&str; 3] = ["c1", "c2", "c3"];
/// The release namespace, as the docs use it.
const NAMESPACE: &str = "mesh-system";
/// The controller's and the gateway's ServiceAccounts, as RBAC subjects.
const CONTROLLER_SA: &str = "system:serviceaccount:mesh-system:mesh-controller";
const GATEWAY_SA: &str = "system:serviceaccount:mesh-system:mesh-gateway";
/// The CA Secret the third cluster's operator created before installing (`ca.existingSecret`).
const EXISTING_CA: &str = "mesh-ca-external";

/// What is installed into one test cluster.
struct Install {
    /// The test cluster (kubeconfig).
    test_cluster: &'static str,
    /// `cluster.name`.
    name: &'static str,
    /// `cluster.region`.
    region: &'static str,
    /// `cluster.regionPriority`.
    region_priority: &'static [&'static str],
    /// `ca.existingSecret`.
    existing_ca: Option<&'static str>,
    /// `injection.enabled`.
    injection: bool,
}

const INSTALLS: [Install; 3] = [
    Install {
        test_cluster: "c1",
        name: "us-east",
        region: "us-east",
        region_priority: &[],
        existing_ca: None,
        injection: true,
    },
    Install {
        test_cluster: "c2",
        name: "us-west",
        region: "us-west",
        region_priority: &["us-east"],
        existing_ca: None,
        injection: true,
    },
    Install {
        test_cluster: "c3",
        name: "eu-west",
        region: "eu",
        region_priority: &["us-east", "us-west"],
        existing_ca: Some(EXISTING_CA),
        injection: false,
    },
];

fn env() -> &'static TestEnv {
    mesh_k8s_testenv::shared(&CLUSTERS)
}

fn cluster(name: &str) -> &'static Cluster {
    env()
        .cluster(name)
        .unwrap_or_else(|| panic!("no test cluster {name}"))
}

/// `charts/mesh` of this workspace.
fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/mesh")
        .canonicalize()
        .expect("charts/mesh exists")
}

/// Every CRD file the chart ships (`charts/mesh/crds/*.yaml`): the MCS CRDs and ours, whatever
/// lands there later.
fn crd_files() -> Vec<PathBuf> {
    let dir = chart().join("crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    for mcs in ["serviceexports", "serviceimports"] {
        let file = dir.join(format!("multicluster.x-k8s.io_{mcs}.yaml"));
        assert!(files.contains(&file), "{} is missing", file.display());
    }
    files
}

/// A finished command.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
    what: String,
}

impl Ran {
    fn describe(&self) -> String {
        format!(
            "{}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` with `stdin` (if any) and collects its output.
fn run(mut cmd: Command, stdin: Option<&str>) -> Ran {
    use std::io::Write;
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("writing the input of {what}: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        what: format!("{what} ({})", out.status),
    }
}

/// Runs `cmd` against `cluster`, failing the test with its output and the cluster's logs when
/// it fails; returns its stdout.
fn ok(cluster: &Cluster, cmd: Command, stdin: Option<&str>) -> String {
    let ran = run(cmd, stdin);
    assert!(
        ran.ok,
        "failed against cluster {}: {}\n{}",
        cluster.name(),
        ran.describe(),
        cluster.log_tails()
    );
    ran.stdout
}

fn kubectl(cluster: &Cluster, args: &[&str]) -> Command {
    let mut cmd = cluster.kubectl();
    cmd.args(args);
    cmd
}

fn json(cluster: &Cluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = ok(cluster, kubectl(cluster, &all), None);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {args:?}: not JSON ({e}): {out}"))
}

/// The API server's version (`v1.36.3`). `helm template` and `helm lint` render for it: they do
/// not ask the server, and a helm built without Helm's Makefile stamps assumes v1.20.
fn server_version(cluster: &Cluster) -> String {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION
        .get_or_init(|| {
            let v = json(cluster, &["version"]);
            v["serverVersion"]["gitVersion"]
                .as_str()
                .unwrap_or_else(|| panic!("no serverVersion.gitVersion in {v}"))
                .to_string()
        })
        .clone()
}

/// `helm template mesh charts/mesh -n <namespace> --kube-version <server's> <args>`.
fn helm_template(cluster: &Cluster, namespace: &str, args: &[&str]) -> Command {
    let mut cmd = cluster.helm();
    cmd.args(["template", "mesh"])
        .arg(chart())
        .args(["-n", namespace, "--kube-version", &server_version(cluster)])
        .args(args);
    cmd
}

/// `--set` arguments of an install.
fn install_args(install: &Install) -> Vec<String> {
    let mut args = vec![
        "--set".to_string(),
        format!("cluster.name={}", install.name),
        "--set".to_string(),
        format!("cluster.region={}", install.region),
    ];
    if !install.region_priority.is_empty() {
        args.push("--set".to_string());
        args.push(format!(
            "cluster.regionPriority={{{}}}",
            install.region_priority.join(",")
        ));
    }
    if let Some(secret) = install.existing_ca {
        args.push("--set".to_string());
        args.push(format!("ca.existingSecret={secret}"));
    }
    if !install.injection {
        args.push("--set".to_string());
        args.push("injection.enabled=false".to_string());
    }
    args
}

/// Installs the chart into every cluster, once for this test binary; the install's output per
/// cluster, or why it failed. Tests that need an installed chart call it; the install test
/// asserts on it.
fn installed() -> &'static Result<Vec<String>, String> {
    static INSTALLED: OnceLock<Result<Vec<String>, String>> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let mut outputs = Vec::new();
        for install in &INSTALLS {
            let cluster = cluster(install.test_cluster);
            if let Some(secret) = install.existing_ca {
                // The operator's own CA, created before the install (its contents are not read
                // by anything in these tests).
                for args in [
                    vec!["create", "namespace", NAMESPACE],
                    vec![
                        "-n",
                        NAMESPACE,
                        "create",
                        "secret",
                        "generic",
                        secret,
                        "--from-literal=ca.crt=placeholder",
                        "--from-literal=ca.key=placeholder",
                        "--from-literal=join-token=placeholder",
                    ],
                ] {
                    let ran = run(kubectl(cluster, &args), None);
                    if !ran.ok {
                        return Err(ran.describe());
                    }
                }
            }
            let mut cmd = cluster.helm();
            cmd.args(["install", "mesh"])
                .arg(chart())
                .args(["-n", NAMESPACE, "--create-namespace"])
                .args(install_args(install));
            let ran = run(cmd, None);
            if !ran.ok {
                return Err(format!(
                    "cluster {}: {}\n{}",
                    cluster.name(),
                    ran.describe(),
                    cluster.log_tails()
                ));
            }
            outputs.push(ran.stdout);
        }
        Ok(outputs)
    })
}

fn require_installed() -> &'static [String] {
    match installed() {
        Ok(outputs) => outputs,
        Err(e) => panic!("helm install of charts/mesh failed: {e}"),
    }
}

#[test]
fn helm_lint_is_clean_and_template_renders() {
    let c1 = cluster("c1");
    let mut lint = c1.helm();
    lint.arg("lint")
        .arg(chart())
        .args(["--strict", "--set", "cluster.name=us-east"])
        .args(["--kube-version", &server_version(c1)]);
    let out = ok(c1, lint, None);
    assert!(
        out.contains("1 chart(s) linted, 0 chart(s) failed") && !out.contains("[WARNING]"),
        "helm lint: {out}"
    );

    let rendered = ok(
        c1,
        helm_template(c1, NAMESPACE, &["--set", "cluster.name=us-east"]),
        None,
    );
    for kind_and_name in [
        "kind: ServiceAccount\nmetadata:\n  name: mesh-controller",
        "kind: ServiceAccount\nmetadata:\n  name: mesh-gateway",
        "kind: Deployment\nmetadata:\n  name: mesh-controller",
        "kind: Deployment\nmetadata:\n  name: mesh-gateway",
        "kind: Service\nmetadata:\n  name: mesh-controller\n",
        "kind: Service\nmetadata:\n  name: mesh-controller-headless",
        "kind: Service\nmetadata:\n  name: mesh-dns\n",
        "kind: Service\nmetadata:\n  name: mesh-gateway\n",
        "kind: Service\nmetadata:\n  name: mesh-gateway-tunnel",
        "kind: PodDisruptionBudget\nmetadata:\n  name: mesh-gateway",
        "kind: ClusterRole\nmetadata:\n  name: mesh-controller",
        "kind: ClusterRoleBinding\nmetadata:\n  name: mesh-controller",
        "kind: Role\nmetadata:\n  name: mesh-controller",
        "kind: RoleBinding\nmetadata:\n  name: mesh-controller",
        "kind: MutatingWebhookConfiguration\nmetadata:\n  name: mesh-sidecar-injector",
        "kind: ConfigMap\nmetadata:\n  name: mesh-injection",
        "kind: Secret\nmetadata:\n  name: mesh-admin-token",
    ] {
        assert!(
            rendered.contains(kind_and_name),
            "helm template lacks {kind_and_name:?}:\n{rendered}"
        );
    }
    // The templates hold no custom resources and no CRDs (those are in crds/).
    assert!(!rendered.contains("kind: CustomResourceDefinition"));
    // The CoreDNS ConfigMap is opt-in.
    assert!(!rendered.contains("coredns-custom"), "{rendered}");

    // Without DNS for the cluster: no Service, the controller's DNS stays on its loopback.
    let no_dns = ok(
        c1,
        helm_template(
            c1,
            NAMESPACE,
            &[
                "--set",
                "cluster.name=us-east",
                "--set",
                "dns.enabled=false",
            ],
        ),
        None,
    );
    assert!(!no_dns.contains("name: mesh-dns"), "{no_dns}");
    assert!(
        !no_dns.contains("- --dns\n") && !no_dns.contains("5353"),
        "{no_dns}"
    );
    assert!(no_dns.contains("- --vip-range"), "{no_dns}");

    // Opted in: the stanza of README.md, with the fixed ClusterIP, for CoreDNS to import.
    let opt_in = ok(c1, helm_template(c1, NAMESPACE, DNS_OPT_IN), None);
    let stanza = "  clusterset.server: |\n    clusterset.local:53 {\n        errors\n        forward . 10.96.0.53:53\n    }\n";
    assert!(
        opt_in.contains(
            "kind: ConfigMap\nmetadata:\n  name: coredns-custom\n  namespace: kube-system\n"
        ) && opt_in.contains(stanza),
        "{opt_in}"
    );
    assert!(opt_in.contains("clusterIP: 10.96.0.53"), "{opt_in}");
    let readme = std::fs::read_to_string(chart().join("README.md")).expect("chart README");
    assert!(
        readme.contains(
            "```\nclusterset.local:53 {\n    errors\n    forward . <mesh-dns ClusterIP>:53\n}\n```"
        ),
        "the README's stanza differs from the chart's"
    );
}

/// Values that opt in to the CoreDNS ConfigMap (a ClusterIP in the test clusters' range).
const DNS_OPT_IN: &[&str] = &[
    "--set",
    "cluster.name=us-east",
    "--set",
    "dns.service.clusterIP=10.96.0.53",
    "--set",
    "dns.coreDNS.customConfigMap=true",
];

#[test]
fn rendered_templates_pass_a_server_side_dry_run() {
    // In a cluster where helm installed the CRDs; into a namespace of its own, so every
    // namespaced object is a (dry-run) creation.
    require_installed();
    let c1 = cluster("c1");
    let namespace = "mesh-dry-run";
    let ran = run(kubectl(c1, &["create", "namespace", namespace]), None);
    assert!(
        ran.ok || ran.stderr.contains("AlreadyExists"),
        "{}",
        ran.describe()
    );
    let defaults = ["--set", "cluster.name=us-east"].as_slice();
    let everything_set = [
        "--set",
        "cluster.name=us-east",
        "--set",
        "cluster.region=us",
        "--set",
        "cluster.regionPriority={eu,ap}",
        "--set",
        "ca.existingSecret=my-ca",
        "--set",
        "gateway.advertisedAddress=203.0.113.7:15443",
        "--set",
        "gateway.replicas=3",
        "--set",
        "gateway.service.type=LoadBalancer",
        "--set",
        "gateway.service.loadBalancerIP=203.0.113.7",
        "--set",
        "gateway.service.externalTrafficPolicy=Local",
        "--set",
        "gateway.service.loadBalancerSourceRanges={198.51.100.0/24}",
        "--set",
        "gateway.service.annotations.example\\.com/lb-type=nlb",
        "--set-string",
        "controller.podAnnotations.prometheus\\.io/scrape=true",
        "--set",
        "controller.nodeSelector.kubernetes\\.io/os=linux",
        "--set-json",
        r#"controller.tolerations=[{"key":"dedicated","operator":"Equal","value":"mesh","effect":"NoSchedule"}]"#,
        "--set-json",
        r#"gateway.affinity={"podAntiAffinity":{"preferredDuringSchedulingIgnoredDuringExecution":[{"weight":100,"podAffinityTerm":{"topologyKey":"kubernetes.io/hostname","labelSelector":{"matchLabels":{"app.kubernetes.io/component":"gateway"}}}}]}}"#,
        "--set",
        "controller.priorityClassName=system-cluster-critical",
        "--set-json",
        r#"imagePullSecrets=[{"name":"regcred"}]"#,
        "--set",
        "commonLabels.team=platform",
        "--set",
        "image.tag=0.1.0-rc1",
        "--set",
        "dns.upstreams={10.96.0.10:53,[fd00::10]:53}",
        "--set",
        "dns.ttl=10s",
        "--set",
        "dns.vipRange=240.241.0.0/16",
        "--set",
        "injection.failurePolicy=Fail",
        "--set",
        "injection.timeoutSeconds=3",
        "--set-json",
        r#"injection.objectSelector={"matchExpressions":[{"key":"mesh.dev/skip","operator":"DoesNotExist"}]}"#,
        "--set",
        "injection.sidecar.image=registry.example.com/mesh:0.1.0",
        "--set",
        "injection.sidecar.imagePullPolicy=Always",
        "--set",
        "injection.sidecar.resources.requests.cpu=1",
        "--set",
        "injection.sidecar.excludeOutboundPorts={443,8443}",
        "--set",
        "injection.sidecar.excludeOutboundCidrs={10.96.0.1/32}",
    ]
    .as_slice();
    let no_injection = [
        "--set",
        "cluster.name=us-east",
        "--set",
        "injection.enabled=false",
    ];
    let node_port = [
        "--set",
        "cluster.name=us-east",
        "--set",
        "gateway.service.type=NodePort",
    ];
    for values in [
        defaults,
        everything_set,
        node_port.as_slice(),
        no_injection.as_slice(),
        DNS_OPT_IN,
    ] {
        let rendered = ok(c1, helm_template(c1, namespace, values), None);
        let out = ok(
            c1,
            kubectl(c1, &["apply", "--dry-run=server", "-f", "-"]),
            Some(&rendered),
        );
        assert!(
            out.contains("deployment.apps/mesh-controller")
                && out.contains("service/mesh-dns")
                && out.contains("(server dry run)"),
            "kubectl apply --dry-run=server with {values:?}: {out}"
        );
        if values == DNS_OPT_IN {
            assert!(out.contains("configmap/coredns-custom"), "{out}");
        }
        if values == everything_set {
            assert!(
                rendered
                    .contains("- --dns-upstream\n            - \"10.96.0.10:53,[fd00::10]:53\"")
                    && rendered.contains("- --dns-ttl\n            - \"10s\"")
                    && rendered.contains("- --vip-range\n            - \"240.241.0.0/16\""),
                "{rendered}"
            );
        }
    }
}

#[test]
fn helm_install_succeeds_in_each_cluster_with_crds_established_and_every_object() {
    let outputs = require_installed();
    let crds = crd_files();
    for (install, output) in INSTALLS.iter().zip(outputs) {
        let c = cluster(install.test_cluster);
        assert!(
            output.contains("STATUS: deployed")
                && output.contains("mesh link --kubeconfig")
                && output.contains("clusterset.local:53 {")
                && output.contains("forward . <mesh-dns ClusterIP>:53"),
            "helm install output in {}: {output}",
            c.name()
        );
        let status = json(c, &["get", "namespace", NAMESPACE]);
        assert_eq!(status["metadata"]["name"], NAMESPACE);

        for file in &crds {
            let file = file.to_str().expect("UTF-8 path");
            ok(
                c,
                kubectl(
                    c,
                    &[
                        "wait",
                        "--for=condition=Established",
                        "--timeout=120s",
                        "-f",
                        file,
                    ],
                ),
                None,
            );
        }

        ok(
            c,
            kubectl(
                c,
                &[
                    "-n",
                    NAMESPACE,
                    "get",
                    "serviceaccount/mesh-controller",
                    "serviceaccount/mesh-gateway",
                    "deployment/mesh-controller",
                    "deployment/mesh-gateway",
                    "service/mesh-controller",
                    "service/mesh-controller-headless",
                    "service/mesh-dns",
                    "service/mesh-gateway",
                    "service/mesh-gateway-tunnel",
                    "poddisruptionbudget/mesh-gateway",
                    "poddisruptionbudget/mesh-controller",
                    "role/mesh-controller",
                    "rolebinding/mesh-controller",
                    "clusterrole/mesh-controller",
                    "clusterrolebinding/mesh-controller",
                    "secret/mesh-admin-token",
                ],
            ),
            None,
        );

        check_controller(c, install);
        check_gateway(c, install);
    }
}

/// The controller's Deployment and Service are what the contract with the controller says.
#[test]
fn the_admin_token_is_made_once_and_kept_across_upgrades() {
    require_installed();
    // The third install: no injection webhook, so an upgrade races nothing else's admission.
    let install = &INSTALLS[2];
    let c = cluster(install.test_cluster);
    let token = || {
        json(c, &["-n", NAMESPACE, "get", "secret", "mesh-admin-token"])["data"]["token"]
            .as_str()
            .map(str::to_string)
            .expect("the Secret has a token")
    };
    let before = token();
    // 48 random characters, base64-encoded in the Secret.
    assert_eq!(before.len(), 64, "{before}");
    let mut upgrade = c.helm();
    upgrade
        .args(["upgrade", "mesh"])
        .arg(chart())
        .args(["-n", NAMESPACE])
        .args(install_args(install));
    ok(c, upgrade, None);
    assert_eq!(token(), before, "helm upgrade replaced the admin token");
    let deploy = json(
        c,
        &["-n", NAMESPACE, "get", "deployment", "mesh-controller"],
    );
    let volumes = &deploy["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes.as_array().is_some_and(|v| v
            .iter()
            .any(|v| v["secret"]["secretName"] == "mesh-admin-token")),
        "{volumes}"
    );
}

fn check_controller(c: &Cluster, install: &Install) {
    let deploy = json(
        c,
        &["-n", NAMESPACE, "get", "deployment", "mesh-controller"],
    );
    assert_eq!(deploy["spec"]["replicas"], 2, "{deploy}");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "mesh-controller");
    let container = &pod["containers"][0];
    let ca = install.existing_ca.unwrap_or("mesh-ca");
    let priority = install.region_priority.join(",");
    let mut expected = vec![
        "controller",
        "--kubernetes",
        "--namespace",
        "$(POD_NAMESPACE)",
        "--pod-name",
        "$(POD_NAME)",
        "--cluster",
        install.name,
        "--region",
        install.region,
    ];
    if !priority.is_empty() {
        expected.extend(["--region-priority", &priority]);
    }
    expected.extend([
        "--control",
        "0.0.0.0:15012",
        "--admin",
        "0.0.0.0:15014",
        "--admin-token-file",
        "/etc/mesh/admin/token",
        "--ca-secret",
        ca,
        "--gateway-service-account",
        "mesh-gateway",
        "--lease-grace",
        "30s",
        "--cert-ttl",
        "24h",
        "--dns",
        "0.0.0.0:5353",
        "--dns-ttl",
        "5s",
        "--vip-range",
        "240.240.0.0/16",
    ]);
    if install.injection {
        expected.extend([
            "--webhook",
            "0.0.0.0:15017",
            "--webhook-configuration",
            "mesh-sidecar-injector",
            "--injection-config",
            "/etc/mesh/injection/settings.yaml",
        ]);
    }
    assert_eq!(
        container["args"],
        serde_json::json!(expected),
        "{container}"
    );
    let env = &container["env"];
    assert_eq!(env[0]["name"], "POD_NAMESPACE");
    assert_eq!(
        env[0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(env[1]["name"], "POD_NAME");
    assert_eq!(
        env[1]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{container}");
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{container}");
    }
    let mut ports = vec![
        ("control", 15012, "TCP"),
        ("admin", 15014, "TCP"),
        ("dns-udp", 5353, "UDP"),
        ("dns-tcp", 5353, "TCP"),
    ];
    if install.injection {
        ports.push(("webhook", 15017, "TCP"));
    }
    assert_ports(&container["ports"], &ports, "containerPort");
    assert_hardened(container);
    assert!(
        container["resources"]["requests"]["cpu"].is_string(),
        "{container}"
    );

    let svc = json(c, &["-n", NAMESPACE, "get", "service", "mesh-controller"]);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    let mut ports = vec![("control", 15012, "TCP"), ("admin", 15014, "TCP")];
    if install.injection {
        ports.push(("webhook", 443, "TCP"));
    }
    assert_ports(&svc["spec"]["ports"], &ports, "port");
    check_injection(c, install, container, pod);

    // DNS on the standard port, to the controllers' 5353 (they cannot bind 53 unprivileged).
    let dns = json(c, &["-n", NAMESPACE, "get", "service", "mesh-dns"]);
    assert_eq!(dns["spec"]["type"], "ClusterIP", "{dns}");
    assert!(
        dns["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.96.")),
        "{dns}"
    );
    assert_eq!(dns["spec"]["selector"], svc["spec"]["selector"], "{dns}");
    assert_ports(
        &dns["spec"]["ports"],
        &[("dns-udp", 53, "UDP"), ("dns-tcp", 53, "TCP")],
        "port",
    );
    let targets: Vec<&Value> = dns["spec"]["ports"]
        .as_array()
        .map(|p| p.iter().map(|p| &p["targetPort"]).collect())
        .unwrap_or_default();
    assert_eq!(
        targets,
        [&Value::from("dns-udp"), &Value::from("dns-tcp")],
        "{dns}"
    );

    // Headless, so its name resolves to every controller pod: the gateway reaches each one.
    let headless = json(
        c,
        &[
            "-n",
            NAMESPACE,
            "get",
            "service",
            "mesh-controller-headless",
        ],
    );
    assert_eq!(headless["spec"]["clusterIP"], "None", "{headless}");
    assert_eq!(
        headless["spec"]["selector"], svc["spec"]["selector"],
        "{headless}"
    );
    assert_ports(
        &headless["spec"]["ports"],
        &[("control", 15012, "TCP")],
        "port",
    );
}

/// The injection webhook's configuration, settings and mount, or none of them when it is off.
fn check_injection(c: &Cluster, install: &Install, container: &Value, pod: &Value) {
    let get = |args: &[&str]| run(kubectl(c, args), None);
    let webhook = get(&[
        "get",
        "mutatingwebhookconfiguration",
        "mesh-sidecar-injector",
        "-o",
        "json",
    ]);
    let settings = get(&[
        "-n",
        NAMESPACE,
        "get",
        "configmap",
        "mesh-injection",
        "-o",
        "json",
    ]);
    if !install.injection {
        assert!(
            !webhook.ok && webhook.stderr.contains("NotFound"),
            "{}",
            webhook.describe()
        );
        assert!(
            !settings.ok && settings.stderr.contains("NotFound"),
            "{}",
            settings.describe()
        );
        return;
    }
    assert!(webhook.ok, "{}", webhook.describe());
    let config: Value = serde_json::from_str(&webhook.stdout).expect("JSON");
    let hook = &config["webhooks"][0];
    assert_eq!(hook["sideEffects"], "None", "{hook}");
    assert_eq!(hook["admissionReviewVersions"], serde_json::json!(["v1"]));
    assert_eq!(
        hook["failurePolicy"], "Ignore",
        "never blocks deployments by default"
    );
    assert!(
        hook["timeoutSeconds"].as_i64().is_some_and(|t| t <= 10),
        "{hook}"
    );
    assert_eq!(
        hook["rules"],
        serde_json::json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                            "resources": ["pods"], "scope": "Namespaced"}])
    );
    assert_eq!(
        hook["namespaceSelector"],
        serde_json::json!({"matchLabels": {"mesh.dev/injection": "enabled"}})
    );
    assert_eq!(
        hook["clientConfig"]["service"],
        serde_json::json!({"name": "mesh-controller", "namespace": NAMESPACE, "path": "/inject", "port": 443})
    );
    assert!(settings.ok, "{}", settings.describe());
    let map: Value = serde_json::from_str(&settings.stdout).expect("JSON");
    let text = map["data"]["settings.yaml"]
        .as_str()
        .expect("settings.yaml");
    for line in [
        "image: \"mesh:0.1.0\"",
        "imagePullPolicy: \"IfNotPresent\"",
        "cpu: 50m",
        "outboundPolicy: \"allow-any\"",
        "inboundPolicy: \"permissive\"",
        "vipRange: \"240.240.0.0/16\"",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    let mount = container["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "injection"))
        .unwrap_or_else(|| panic!("no injection mount: {container}"));
    assert_eq!(mount["mountPath"], "/etc/mesh/injection");
    let volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "injection"))
        .unwrap_or_else(|| panic!("no injection volume: {pod}"));
    assert_eq!(volume["configMap"]["name"], "mesh-injection");
}

/// The gateway's Deployment, Services and PDB are what the contract says.
fn check_gateway(c: &Cluster, install: &Install) {
    let deploy = json(c, &["-n", NAMESPACE, "get", "deployment", "mesh-gateway"]);
    assert_eq!(deploy["spec"]["replicas"], 1, "{deploy}");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "mesh-gateway");
    assert_eq!(pod["automountServiceAccountToken"], false);
    let container = &pod["containers"][0];
    let controller = format!("mesh-controller-headless.{NAMESPACE}.svc:15012");
    let expected = [
        "gateway",
        "--cluster",
        install.name,
        "--controller",
        &controller,
        "--ca-file",
        "/etc/mesh/ca/ca.crt",
        "--token-file",
        "/var/run/secrets/mesh/token",
        "--quic",
        "0.0.0.0:15443",
        "--tunnel",
        "0.0.0.0:15008",
        "--admin",
        "0.0.0.0:15021",
        "--advertise-quic",
        "$(POD_IP):15443",
        "--advertise-tunnel",
        "$(POD_IP):15008",
    ];
    assert_eq!(
        container["args"],
        serde_json::json!(expected),
        "{container}"
    );
    assert_eq!(container["env"][0]["name"], "POD_IP");
    assert_eq!(
        container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{container}");
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{container}");
    }
    assert_ports(
        &container["ports"],
        &[
            ("quic", 15443, "UDP"),
            ("tunnel", 15008, "TCP"),
            ("admin", 15021, "TCP"),
        ],
        "containerPort",
    );
    assert_hardened(container);

    // The root certificate from the controller's ConfigMap; the projected token of audience mesh.
    let mounts = &container["volumeMounts"];
    let mount = |name: &str| {
        mounts
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == name))
            .unwrap_or_else(|| panic!("no volume mount {name}: {mounts}"))
            .clone()
    };
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == name))
            .unwrap_or_else(|| panic!("no volume {name}: {}", pod["volumes"]))
            .clone()
    };
    assert_eq!(mount("root-ca")["mountPath"], "/etc/mesh/ca");
    assert_eq!(volume("root-ca")["configMap"]["name"], "mesh-root-ca");
    assert_eq!(mount("mesh-token")["mountPath"], "/var/run/secrets/mesh");
    let token = &volume("mesh-token")["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "mesh", "{token}");
    assert_eq!(token["expirationSeconds"], 3600, "{token}");
    assert_eq!(token["path"], "token", "{token}");

    let quic = json(c, &["-n", NAMESPACE, "get", "service", "mesh-gateway"]);
    assert_eq!(quic["spec"]["type"], "LoadBalancer", "{quic}");
    assert_ports(&quic["spec"]["ports"], &[("quic", 15443, "UDP")], "port");
    let tunnel = json(
        c,
        &["-n", NAMESPACE, "get", "service", "mesh-gateway-tunnel"],
    );
    assert_eq!(tunnel["spec"]["type"], "ClusterIP", "{tunnel}");
    assert_ports(
        &tunnel["spec"]["ports"],
        &[("tunnel", 15008, "TCP")],
        "port",
    );

    // A single gateway must stay evictable: the budget allows one unavailable, never "min 1".
    let pdb = json(c, &["-n", NAMESPACE, "get", "pdb", "mesh-gateway"]);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{pdb}");
    assert!(pdb["spec"].get("minAvailable").is_none(), "{pdb}");
}

fn assert_ports(ports: &Value, expected: &[(&str, u16, &str)], port_field: &str) {
    let got: Vec<(String, u64, String)> = ports
        .as_array()
        .unwrap_or_else(|| panic!("no ports: {ports}"))
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p[port_field].as_u64().unwrap_or_default(),
                p["protocol"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, u64, String)> = expected
        .iter()
        .map(|(n, p, proto)| (n.to_string(), u64::from(*p), proto.to_string()))
        .collect();
    assert_eq!(got, want);
}

/// Non-root, read-only root filesystem, no capabilities, no privilege escalation.
fn assert_hardened(container: &Value) {
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{container}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{container}");
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{container}"
    );
}

/// One authorization question: `kubectl auth can-i <verb> <resource> [--subresource s] <scope>`.
struct Access {
    verb: &'static str,
    resource: &'static str,
    subresource: Option<&'static str>,
    /// `None`: cluster-wide (`--all-namespaces`); `Some(ns)`: in that namespace.
    namespace: Option<&'static str>,
}

const fn everywhere(verb: &'static str, resource: &'static str) -> Access {
    Access {
        verb,
        resource,
        subresource: None,
        namespace: None,
    }
}

const fn status_everywhere(verb: &'static str, resource: &'static str) -> Access {
    Access {
        verb,
        resource,
        subresource: Some("status"),
        namespace: None,
    }
}

const fn in_ns(verb: &'static str, resource: &'static str, ns: &'static str) -> Access {
    Access {
        verb,
        resource,
        subresource: None,
        namespace: Some(ns),
    }
}

/// Everything the controller needs, per the chart's contract with the controller.
fn controller_needs(existing_ca: bool, injection: bool) -> Vec<Access> {
    let mut needs = Vec::new();
    for resource in [
        "services",
        "pods",
        "endpointslices.discovery.k8s.io",
        "serviceexports.multicluster.x-k8s.io",
        "links.mesh.dev",
    ] {
        for verb in ["get", "list", "watch"] {
            needs.push(everywhere(verb, resource));
            if resource != "links.mesh.dev" {
                // Namespaced resources: also in a user's namespace, not only cluster-wide.
                needs.push(in_ns(verb, resource, "demo"));
            }
        }
    }
    for resource in ["serviceexports.multicluster.x-k8s.io", "links.mesh.dev"] {
        for verb in ["update", "patch"] {
            needs.push(status_everywhere(verb, resource));
        }
    }
    for (resource, _) in POLICY_RESOURCES {
        for verb in ["get", "list", "watch"] {
            needs.push(everywhere(verb, resource));
        }
        needs.push(status_everywhere("patch", resource));
    }
    for verb in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        needs.push(everywhere(verb, "serviceimports.multicluster.x-k8s.io"));
        needs.push(in_ns(verb, "serviceimports.multicluster.x-k8s.io", "demo"));
    }
    for verb in ["update", "patch"] {
        needs.push(status_everywhere(
            verb,
            "serviceimports.multicluster.x-k8s.io",
        ));
    }
    needs.push(everywhere("create", "tokenreviews.authentication.k8s.io"));
    // What it owns in the release namespace.
    for verb in ["get", "list", "watch", "create"] {
        needs.push(in_ns(verb, "configmaps", NAMESPACE));
    }
    for name in [
        "configmaps/mesh-link-info",
        "configmaps/mesh-root-ca",
        "configmaps/mesh-export-cache",
    ] {
        for verb in ["get", "update", "patch"] {
            needs.push(in_ns(verb, name, NAMESPACE));
        }
    }
    for verb in ["get", "list", "watch"] {
        needs.push(in_ns(verb, "secrets", NAMESPACE));
    }
    if !existing_ca {
        needs.push(in_ns("create", "secrets", NAMESPACE));
    }
    needs.push(in_ns("create", "leases.coordination.k8s.io", NAMESPACE));
    for verb in ["get", "update"] {
        needs.push(in_ns(
            verb,
            "leases.coordination.k8s.io/mesh-controller",
            NAMESPACE,
        ));
    }
    for resource in ["events", "events.events.k8s.io"] {
        for verb in ["create", "patch"] {
            needs.push(in_ns(verb, resource, NAMESPACE));
        }
    }
    if injection {
        for verb in ["get", "patch"] {
            needs.push(everywhere(verb, INJECTOR_CONFIG));
        }
    }
    needs
}

/// The chart's MutatingWebhookConfiguration, as `kubectl auth can-i` names it.
const INJECTOR_CONFIG: &str =
    "mutatingwebhookconfigurations.admissionregistration.k8s.io/mesh-sidecar-injector";

/// The traffic policy kinds the controller watches, with their status subresource.
const POLICY_RESOURCES: [(&str, &str); 7] = [
    (
        "httproutes.gateway.networking.k8s.io",
        "httproutes.gateway.networking.k8s.io/status",
    ),
    (
        "grpcroutes.gateway.networking.k8s.io",
        "grpcroutes.gateway.networking.k8s.io/status",
    ),
    ("faultpolicies.mesh.dev", "faultpolicies.mesh.dev/status"),
    (
        "ratelimitpolicies.mesh.dev",
        "ratelimitpolicies.mesh.dev/status",
    ),
    ("cachepolicies.mesh.dev", "cachepolicies.mesh.dev/status"),
    (
        "backendpolicies.mesh.dev",
        "backendpolicies.mesh.dev/status",
    ),
    (
        "authorizationpolicies.mesh.dev",
        "authorizationpolicies.mesh.dev/status",
    ),
];

/// What the controller must not be able to do.
fn controller_must_not(existing_ca: bool, injection: bool) -> Vec<Access> {
    let mut denied = vec![
        in_ns("delete", "secrets", NAMESPACE),
        in_ns("update", "secrets", NAMESPACE),
        in_ns("get", "secrets", "kube-system"),
        in_ns("get", "secrets", "demo"),
        everywhere("list", "secrets"),
        everywhere("create", "links.mesh.dev"),
        everywhere("update", "links.mesh.dev"),
        everywhere("delete", "links.mesh.dev"),
        everywhere("update", "services"),
        in_ns("update", "services", "demo"),
        in_ns("create", "services", "demo"),
        in_ns("create", "serviceexports.multicluster.x-k8s.io", "demo"),
        in_ns("update", "serviceexports.multicluster.x-k8s.io", "demo"),
        in_ns("delete", "serviceexports.multicluster.x-k8s.io", "demo"),
        in_ns("create", "endpointslices.discovery.k8s.io", "demo"),
        // Policy objects are the users': the controller writes only their status.
        in_ns("update", "httproutes.gateway.networking.k8s.io", "demo"),
        in_ns("delete", "httproutes.gateway.networking.k8s.io", "demo"),
        in_ns("update", "grpcroutes.gateway.networking.k8s.io", "demo"),
        in_ns("update", "ratelimitpolicies.mesh.dev", "demo"),
        in_ns("create", "pods", "demo"),
        in_ns("update", "configmaps/some-other-config", NAMESPACE),
        in_ns("delete", "configmaps/mesh-root-ca", NAMESPACE),
        in_ns("get", "configmaps", "kube-system"),
        in_ns(
            "update",
            "leases.coordination.k8s.io/some-other-lease",
            NAMESPACE,
        ),
        in_ns(
            "delete",
            "leases.coordination.k8s.io/mesh-controller",
            NAMESPACE,
        ),
        in_ns("create", "leases.coordination.k8s.io", "kube-system"),
        everywhere("get", "nodes"),
        everywhere("create", "customresourcedefinitions.apiextensions.k8s.io"),
        everywhere("create", "clusterroles.rbac.authorization.k8s.io"),
        in_ns("create", "serviceaccounts/token", NAMESPACE),
        // The webhook's configuration is the chart's: the controller only sets its caBundle.
        everywhere("delete", INJECTOR_CONFIG),
        everywhere("update", INJECTOR_CONFIG),
        everywhere(
            "patch",
            "mutatingwebhookconfigurations.admissionregistration.k8s.io/someone-elses",
        ),
        everywhere(
            "list",
            "mutatingwebhookconfigurations.admissionregistration.k8s.io",
        ),
        everywhere(
            "create",
            "mutatingwebhookconfigurations.admissionregistration.k8s.io",
        ),
        everywhere(
            "patch",
            "validatingwebhookconfigurations.admissionregistration.k8s.io",
        ),
    ];
    if existing_ca {
        denied.push(in_ns("create", "secrets", NAMESPACE));
    }
    if !injection {
        denied.push(everywhere("get", INJECTOR_CONFIG));
        denied.push(everywhere("patch", INJECTOR_CONFIG));
    }
    denied
}

/// `kubectl auth can-i` as `user`: `Some(true)` for yes, `Some(false)` for no, and the failure
/// otherwise.
fn can_i(c: &Cluster, user: &str, access: &Access) -> Result<bool, String> {
    let mut cmd = c.kubectl();
    cmd.args(["auth", "can-i", access.verb, access.resource, "--as", user]);
    if let Some(sub) = access.subresource {
        cmd.args(["--subresource", sub]);
    }
    match access.namespace {
        Some(ns) => cmd.args(["-n", ns]),
        None => cmd.arg("--all-namespaces"),
    };
    let ran = run(cmd, None);
    if ran
        .stderr
        .contains("the server doesn't have a resource type")
    {
        // kubectl resolves `links.mesh.dev` through discovery; before that CRD is served it
        // would ask about resource `links.mesh.dev` in the core group, so ask the authorizer
        // directly with the group spelled out.
        return subject_access_review(c, user, access);
    }
    let answer = ran.stdout.trim();
    if answer == "yes" && ran.ok {
        Ok(true)
    } else if answer == "no" || answer.starts_with("no - ") {
        // `no` exits 1; anything else (an error) is a failure of the check itself.
        Ok(false)
    } else {
        Err(ran.describe())
    }
}

/// The same question as a SubjectAccessReview for `user`, a ServiceAccount, with the groups the
/// API server gives it (as impersonation with `--as` does).
fn subject_access_review(c: &Cluster, user: &str, access: &Access) -> Result<bool, String> {
    let (type_, name) = access
        .resource
        .split_once('/')
        .unwrap_or((access.resource, ""));
    let (resource, group) = type_.split_once('.').unwrap_or((type_, ""));
    let sa_namespace = user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split(':').next())
        .ok_or_else(|| format!("{user} is not a ServiceAccount"))?;
    let review = serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": [
                "system:serviceaccounts",
                format!("system:serviceaccounts:{sa_namespace}"),
                "system:authenticated",
            ],
            "resourceAttributes": {
                "verb": access.verb,
                "group": group,
                "resource": resource,
                "subresource": access.subresource.unwrap_or(""),
                "name": name,
                "namespace": access.namespace.unwrap_or(""),
            },
        },
    });
    let ran = run(
        kubectl(c, &["create", "-f", "-", "-o", "json"]),
        Some(&review.to_string()),
    );
    if !ran.ok {
        return Err(ran.describe());
    }
    let answer: Value =
        serde_json::from_str(&ran.stdout).map_err(|e| format!("{e}: {}", ran.stdout))?;
    Ok(answer["status"]["allowed"] == true)
}

fn describe(access: &Access) -> String {
    format!(
        "{} {}{}{}",
        access.verb,
        access.resource,
        access
            .subresource
            .map(|s| format!(" --subresource {s}"))
            .unwrap_or_default(),
        access
            .namespace
            .map(|ns| format!(" -n {ns}"))
            .unwrap_or_else(|| " --all-namespaces".to_string()),
    )
}

#[test]
fn rbac_gives_the_controller_what_it_needs_and_nothing_more_and_the_gateway_nothing() {
    require_installed();
    // One thread per cluster: each answer is a kubectl process and a SubjectAccessReview.
    let problems: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = INSTALLS
            .iter()
            .map(|install| {
                scope.spawn(move || {
                    let c = cluster(install.test_cluster);
                    let existing_ca = install.existing_ca.is_some();
                    let injection = install.injection;
                    let mut problems = Vec::new();
                    let mut expect =
                        |user: &str, access: &Access, want: bool| match can_i(c, user, access) {
                            Ok(got) if got == want => {}
                            Ok(got) => problems.push(format!(
                                "{}: {user} can-i {}: {} (expected {})",
                                c.name(),
                                describe(access),
                                if got { "yes" } else { "no" },
                                if want { "yes" } else { "no" }
                            )),
                            Err(e) => problems.push(format!("{}: {e}", c.name())),
                        };
                    for access in controller_needs(existing_ca, injection) {
                        expect(CONTROLLER_SA, &access, true);
                        // The gateway never calls the Kubernetes API.
                        expect(GATEWAY_SA, &access, false);
                    }
                    for access in controller_must_not(existing_ca, injection) {
                        expect(CONTROLLER_SA, &access, false);
                    }
                    // Exactly the contract's rules, nothing beyond them (verbs not asked
                    // about above, such as deletecollection, would show here); none for the
                    // gateway.
                    for (namespace, in_release) in [(NAMESPACE, true), ("demo", false)] {
                        let want = controller_rules(in_release, existing_ca, injection);
                        problems.extend(compare_grants(c, CONTROLLER_SA, namespace, &want));
                        problems.extend(compare_grants(c, GATEWAY_SA, namespace, &BTreeSet::new()));
                    }
                    problems
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("an RBAC checking thread panicked"))
            .collect()
    });
    assert!(problems.is_empty(), "RBAC:\n{}", problems.join("\n"));
}

/// One granted permission: (resource with its group and subresource, resource name or "", verb).
type Grant = (String, String, String);

/// Every resource permission `user` has in `namespace` (`kubectl auth can-i --list`), from all
/// its bindings, except what every authenticated user gets (self reviews; non-resource URLs such
/// as discovery and health).
fn granted(c: &Cluster, user: &str, namespace: &str) -> BTreeSet<Grant> {
    let out = ok(
        c,
        kubectl(
            c,
            &["auth", "can-i", "--list", "--as", user, "-n", namespace],
        ),
        None,
    );
    let mut grants = BTreeSet::new();
    for line in out.lines().skip(1) {
        let resource = line.split_whitespace().next().unwrap_or_default();
        if resource.is_empty() || resource.starts_with('[') || resource.starts_with("selfsubject") {
            continue;
        }
        // The columns after the resource: [non-resource URLs] [resource names] [verbs].
        let groups: Vec<&str> = line[resource.len()..]
            .split('[')
            .skip(1)
            .map(|g| g.split(']').next().unwrap_or_default())
            .collect();
        let [_, names, verbs] = groups[..] else {
            panic!("unexpected `kubectl auth can-i --list` line: {line}");
        };
        let names: Vec<&str> = match names.split_whitespace().collect::<Vec<_>>() {
            n if n.is_empty() => vec![""],
            n => n,
        };
        for name in names {
            for verb in verbs.split_whitespace() {
                grants.insert((resource.to_string(), name.to_string(), verb.to_string()));
            }
        }
    }
    grants
}

/// The controller's rules as the contract states them: (resource, names, verbs).
fn controller_rules(
    in_release_namespace: bool,
    existing_ca: bool,
    injection: bool,
) -> BTreeSet<Grant> {
    let read = ["get", "list", "watch"].as_slice();
    let write_status = ["update", "patch"].as_slice();
    let mut rules: Vec<(&str, &[&str], &[&str])> = vec![
        ("services", &[], read),
        ("pods", &[], read),
        ("endpointslices.discovery.k8s.io", &[], read),
        ("serviceexports.multicluster.x-k8s.io", &[], read),
        (
            "serviceexports.multicluster.x-k8s.io/status",
            &[],
            write_status,
        ),
        (
            "serviceimports.multicluster.x-k8s.io",
            &[],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ),
        (
            "serviceimports.multicluster.x-k8s.io/status",
            &[],
            write_status,
        ),
        ("links.mesh.dev", &[], read),
        ("links.mesh.dev/status", &[], write_status),
        ("tokenreviews.authentication.k8s.io", &[], &["create"]),
    ];
    // Traffic policy: read the objects, write only their status.
    for (resource, status) in POLICY_RESOURCES {
        rules.push((resource, &[], read));
        rules.push((status, &[], write_status));
    }
    if injection {
        rules.push((
            "mutatingwebhookconfigurations.admissionregistration.k8s.io",
            &["mesh-sidecar-injector"],
            &["get", "patch"],
        ));
    }
    if in_release_namespace {
        rules.extend([
            (
                "configmaps",
                &[][..],
                &["get", "list", "watch", "create"][..],
            ),
            (
                "configmaps",
                &["mesh-link-info", "mesh-root-ca", "mesh-export-cache"],
                &["update", "patch"],
            ),
            (
                "secrets",
                &[],
                if existing_ca {
                    read
                } else {
                    &["get", "list", "watch", "create"]
                },
            ),
            ("leases.coordination.k8s.io", &[], &["create"]),
            (
                "leases.coordination.k8s.io",
                &["mesh-controller"],
                &["get", "update"],
            ),
            ("events", &[], &["create", "patch"]),
            ("events.events.k8s.io", &[], &["create", "patch"]),
        ]);
    }
    let mut grants = BTreeSet::new();
    for (resource, names, verbs) in rules {
        let names = if names.is_empty() { &[""][..] } else { names };
        for name in names {
            for verb in verbs {
                grants.insert((resource.to_string(), name.to_string(), verb.to_string()));
            }
        }
    }
    grants
}

/// Differences between what `user` has and what it should have, as readable lines.
fn compare_grants(c: &Cluster, user: &str, namespace: &str, want: &BTreeSet<Grant>) -> Vec<String> {
    let got = granted(c, user, namespace);
    let extra = got.difference(want).map(|g| {
        format!(
            "{}: {user} in {namespace} has more than it should: {g:?}",
            c.name()
        )
    });
    let missing = want
        .difference(&got)
        .map(|g| format!("{}: {user} in {namespace} lacks {g:?}", c.name()));
    extra.chain(missing).collect()
}

#[test]
fn mcs_crds_accept_what_the_controller_writes_with_its_own_credentials() {
    require_installed();
    let c2 = cluster("c2");
    let ran = run(kubectl(c2, &["create", "namespace", "demo"]), None);
    assert!(
        ran.ok || ran.stderr.contains("AlreadyExists"),
        "{}",
        ran.describe()
    );
    // The user's side: a Service and its export.
    ok(
        c2,
        kubectl(c2, &["-n", "demo", "apply", "-f", "-"]),
        Some(
            "apiVersion: v1\nkind: Service\nmetadata: {name: echo}\n\
             spec: {ports: [{name: http, port: 80, protocol: TCP}]}\n---\n\
             apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {name: echo}\n",
        ),
    );
    let api = "/apis/multicluster.x-k8s.io/v1alpha1/namespaces/demo";

    // The controller's side, with its own credentials: the export's status (`update` on the
    // status subresource, a PUT as `replace_status` sends it; `kubectl patch --subresource`
    // would GET the subresource first, which the controller needs no right for).
    put_status_as_controller(c2, &format!("{api}/serviceexports/echo"), |status| {
        *status = serde_json::json!({"conditions": [{
            "type": "Valid", "status": "True", "reason": "Exported", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z"
        }]});
    });
    // An import, then its status.
    ok(
        c2,
        kubectl(
            c2,
            &["--as", CONTROLLER_SA, "-n", "demo", "create", "-f", "-"],
        ),
        Some(
            "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceImport\n\
             metadata: {name: echo}\n\
             spec: {type: ClusterSetIP, ips: [10.96.0.99], \
             ports: [{name: http, port: 80, protocol: TCP, appProtocol: http}]}\n",
        ),
    );
    put_status_as_controller(c2, &format!("{api}/serviceimports/echo"), |status| {
        *status = serde_json::json!({"clusters": [{"cluster": "us-east"}, {"cluster": "us-west"}]});
    });

    let export = raw_get(c2, &format!("{api}/serviceexports/echo"));
    assert_eq!(
        export["status"]["conditions"][0]["type"], "Valid",
        "{export}"
    );
    let import = raw_get(c2, &format!("{api}/serviceimports/echo"));
    assert_eq!(import["spec"]["type"], "ClusterSetIP", "{import}");
    assert_eq!(
        import["spec"]["ips"],
        serde_json::json!(["10.96.0.99"]),
        "{import}"
    );
    assert_eq!(import["spec"]["ports"][0]["port"], 80, "{import}");
    assert_eq!(
        import["status"]["clusters"],
        serde_json::json!([{"cluster": "us-east"}, {"cluster": "us-west"}]),
        "{import}"
    );
    // v1beta1 (the storage version, what `kubectl get` shows by default) serves the same object:
    // the two versions have the same schema and no conversion.
    let beta = raw_get(
        c2,
        "/apis/multicluster.x-k8s.io/v1beta1/namespaces/demo/serviceimports/echo",
    );
    assert_eq!(beta["spec"], import["spec"], "{beta}");
    assert_eq!(beta["status"], import["status"], "{beta}");

    ok(
        c2,
        kubectl(
            c2,
            &[
                "--as",
                CONTROLLER_SA,
                "-n",
                "demo",
                "delete",
                "serviceimport",
                "echo",
            ],
        ),
        None,
    );

    // The schema refuses an import without its required `type`.
    let ran = run(
        kubectl(c2, &["-n", "demo", "create", "-f", "-"]),
        Some(
            "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceImport\n\
             metadata: {name: typeless}\nspec: {ports: [{port: 80}]}\n",
        ),
    );
    assert!(
        !ran.ok && ran.stderr.contains("spec.type"),
        "{}",
        ran.describe()
    );
}

/// `kubectl get --raw <path>` as the admin, as JSON.
fn raw_get(c: &Cluster, path: &str) -> Value {
    let out = ok(c, kubectl(c, &["get", "--raw", path]), None);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {out}"))
}

/// Reads the object at `path` (as the admin), lets `edit` set its status, and writes the status
/// subresource as the controller's ServiceAccount (`PUT <path>/status`).
fn put_status_as_controller(c: &Cluster, path: &str, edit: impl FnOnce(&mut Value)) {
    let mut object = raw_get(c, path);
    edit(&mut object["status"]);
    let status_path = format!("{path}/status");
    ok(
        c,
        kubectl(
            c,
            &[
                "--as",
                CONTROLLER_SA,
                "replace",
                "--raw",
                &status_path,
                "-f",
                "-",
            ],
        ),
        Some(&object.to_string()),
    );
}

/// A bad value and what the error must name.
struct BadValue {
    what: &'static str,
    args: &'static [&'static str],
    /// Each must appear in helm's error output: the value's path as Helm prints it
    /// (`/gateway/service/type` for `gateway.service.type`) or, for an unknown key, the key.
    names: &'static [&'static str],
}

const BAD_VALUES: &[BadValue] = &[
    BadValue {
        what: "cluster without a name",
        args: &["--set", "cluster=null"],
        names: &["missing property 'cluster'"],
    },
    BadValue {
        what: "cluster.name not a DNS label",
        args: &["--set", "cluster.name=US_East"],
        names: &["/cluster/name", "US_East"],
    },
    BadValue {
        what: "empty cluster.name",
        args: &["--set", "cluster.name="],
        names: &["/cluster/name"],
    },
    BadValue {
        what: "cluster.region not a DNS label",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "cluster.region=US East",
        ],
        names: &["/cluster/region"],
    },
    BadValue {
        what: "cluster.regionPriority entry not a DNS label",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "cluster.regionPriority={eu,Asia_1}",
        ],
        names: &["/cluster/regionPriority/1"],
    },
    BadValue {
        what: "negative controller.replicas",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "controller.replicas=-1",
        ],
        names: &["/controller/replicas"],
    },
    BadValue {
        what: "negative gateway.replicas",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "gateway.replicas=-2",
        ],
        names: &["/gateway/replicas"],
    },
    BadValue {
        what: "bad gateway.service.type",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "gateway.service.type=Ingress",
        ],
        names: &["/gateway/service/type"],
    },
    BadValue {
        what: "gateway.advertisedAddress without a port",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "gateway.advertisedAddress=gw.example.com",
        ],
        names: &["/gateway/advertisedAddress"],
    },
    BadValue {
        what: "gateway.advertisedAddress with a port out of range",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "gateway.advertisedAddress=203.0.113.7:70000",
        ],
        names: &["/gateway/advertisedAddress"],
    },
    BadValue {
        what: "gateway.advertisedAddress as a DNS name (links carry an address)",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "gateway.advertisedAddress=gw.us-east.example.com:15443",
        ],
        names: &["/gateway/advertisedAddress"],
    },
    BadValue {
        what: "gateway.advertisedAddress as a URL",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "gateway.advertisedAddress=https://gw.example.com:15443",
        ],
        names: &["/gateway/advertisedAddress"],
    },
    BadValue {
        what: "controller.leaseGrace not a duration",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "controller.leaseGrace=thirty",
        ],
        names: &["/controller/leaseGrace"],
    },
    BadValue {
        what: "dns.upstreams entry as a DNS name",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "dns.upstreams={kube-dns.kube-system.svc:53}",
        ],
        names: &["/dns/upstreams/0"],
    },
    BadValue {
        what: "dns.upstreams entry without a port",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "dns.upstreams={10.96.0.10:53,1.1.1.1}",
        ],
        names: &["/dns/upstreams/1"],
    },
    BadValue {
        what: "dns.vipRange with a prefix out of range",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "dns.vipRange=240.240.0.0/31",
        ],
        names: &["/dns/vipRange"],
    },
    BadValue {
        what: "dns.ttl not a duration",
        args: &["--set", "cluster.name=us-east", "--set", "dns.ttl=5"],
        names: &["/dns/ttl"],
    },
    BadValue {
        what: "dns.service.clusterIP not an address",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "dns.service.clusterIP=mesh-dns",
        ],
        names: &["/dns/service/clusterIP"],
    },
    BadValue {
        what: "dns.coreDNS.customConfigMap without dns.service.clusterIP",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "dns.coreDNS.customConfigMap=true",
        ],
        names: &["/dns/service/clusterIP"],
    },
    BadValue {
        what: "dns.coreDNS.customConfigMap without the mesh-dns Service",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "dns.coreDNS.customConfigMap=true",
            "--set",
            "dns.service.clusterIP=10.96.0.53",
            "--set",
            "dns.enabled=false",
        ],
        names: &["/dns/enabled"],
    },
    BadValue {
        what: "unknown key under dns",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "dns.upstream=10.96.0.10:53",
        ],
        names: &["/dns", "additional properties 'upstream' not allowed"],
    },
    BadValue {
        what: "unknown top-level key",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "gatway.replicas=2",
        ],
        names: &["additional properties 'gatway' not allowed"],
    },
    BadValue {
        what: "injection.failurePolicy not Ignore or Fail",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "injection.failurePolicy=Sometimes",
        ],
        names: &["/injection/failurePolicy"],
    },
    BadValue {
        what: "injection.timeoutSeconds above the API server's 30",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "injection.timeoutSeconds=60",
        ],
        names: &["/injection/timeoutSeconds"],
    },
    BadValue {
        what: "injection.sidecar.outboundPolicy unknown",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "injection.sidecar.outboundPolicy=open",
        ],
        names: &["/injection/sidecar/outboundPolicy"],
    },
    BadValue {
        what: "injection.sidecar.excludeOutboundPorts with port 0",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "injection.sidecar.excludeOutboundPorts={443,0}",
        ],
        names: &["/injection/sidecar/excludeOutboundPorts/1"],
    },
    BadValue {
        what: "injection.sidecar.imagePullPolicy unknown",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "injection.sidecar.imagePullPolicy=Sometimes",
        ],
        names: &["/injection/sidecar/imagePullPolicy"],
    },
    BadValue {
        what: "injection.namespaceSelector with a misspelt key",
        args: &[
            "--set",
            "cluster.name=us-east",
            "--set",
            "injection.namespaceSelector.matchLabel.team=a",
        ],
        names: &[
            "/injection/namespaceSelector",
            "additional properties 'matchLabel' not allowed",
        ],
    },
    BadValue {
        what: "unknown key under cluster",
        args: &["--set", "cluster.name=us-east", "--set", "cluster.nmae=x"],
        names: &["/cluster", "additional properties 'nmae' not allowed"],
    },
];

#[test]
fn bad_values_fail_template_lint_and_install_naming_the_value() {
    let c1 = cluster("c1");
    let mut problems = Vec::new();
    for bad in BAD_VALUES {
        let mut lint = c1.helm();
        lint.arg("lint")
            .arg(chart())
            .args(["--kube-version", &server_version(c1)])
            .args(bad.args);
        let mut install = c1.helm();
        install
            .args(["install", "mesh-bad"])
            .arg(chart())
            .args(["-n", "mesh-bad", "--create-namespace"])
            .args(bad.args);
        for (command, cmd) in [
            ("helm template", helm_template(c1, NAMESPACE, bad.args)),
            ("helm lint", lint),
            ("helm install", install),
        ] {
            let ran = run(cmd, None);
            // helm lint reports on stdout, the others on stderr.
            let output = format!("{}{}", ran.stdout, ran.stderr);
            if ran.ok {
                problems.push(format!(
                    "{}: {command} succeeded:\n{}",
                    bad.what,
                    ran.describe()
                ));
            } else if let Some(missing) = bad.names.iter().find(|n| !output.contains(*n)) {
                problems.push(format!(
                    "{}: {command} failed without naming {missing:?}:\n{}",
                    bad.what,
                    ran.describe()
                ));
            }
        }
    }
    // Nothing was installed by any of them.
    let list = ok(c1, helm_list_all(c1), None);
    assert!(!list.contains("mesh-bad"), "helm list: {list}");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

fn helm_list_all(c: &Cluster) -> Command {
    let mut cmd = c.helm();
    cmd.args(["list", "--all", "--all-namespaces", "-q"]);
    cmd
}
