//! Sidecar injection against a real API server: the chart installed with real helm, the
//! controller running as a process of the built `mesh` binary with the chart's controller
//! ServiceAccount's credentials and `--webhook`, and the API server calling it for every pod
//! created in a namespace labelled `mesh.dev/injection=enabled`. There is no kubelet, so pods
//! are only stored, never run: the stored objects are what the acceptance checks.
//!
//! The MutatingWebhookConfiguration is the chart's, with two changes the test makes: its
//! `clientConfig` names the controller's URL on this host (a test API server cannot reach a
//! Service: there is no kube-proxy), and `failurePolicy: Fail`, so a webhook that does not
//! answer fails the test's pods instead of letting them through uninjected. Replacing
//! `clientConfig` also drops the `caBundle`: the controller must set it again.
//!
//! One test walks the phases in order: they share one API server and one controller. These
//! tests never skip: without the Kubernetes binaries, or without curl, they fail with the reason.

mod kube_support;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kube_support::{MESH_NS, MeshCluster, get_json, host_ip, kubectl, run};
use mesh_k8s_testenv::Cluster;
use mesh_test_support::{eventually, wait_for};
use serde_json::{Value, json};
use support::Scratch;

const CLUSTER: &str = "inject";
/// Namespace labelled for injection.
const ON: &str = "inject-on";
/// Namespace without the label.
const OFF: &str = "inject-off";
const WAIT: Duration = Duration::from_secs(60);

struct World {
    mesh: MeshCluster,
    /// The controller's injection settings file (the chart's ConfigMap, as mounted).
    settings: std::path::PathBuf,
    admin: std::net::SocketAddr,
    webhook: std::net::SocketAddr,
    _scratch: Scratch,
}

impl World {
    fn kube(&self) -> &'static Cluster {
        self.mesh.kube
    }
}

#[tokio::test(flavor = "current_thread")]
async fn pods_are_injected_by_the_controllers_webhook() {
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "curl is needed (Debian package curl; .ci/run installs it)"
    );
    let env = mesh_k8s_testenv::shared(&[CLUSTER]);
    let kube = env.cluster(CLUSTER).expect("test cluster");
    let scratch = Scratch::new("injection");
    let mut mesh = MeshCluster::install(kube, CLUSTER, CLUSTER, &[], &scratch.0);

    // The settings file as the chart renders it into ConfigMap mesh-injection.
    let map = get_json(kube, &["configmap", "mesh-injection", "-n", MESH_NS])
        .expect("the chart installs ConfigMap mesh-injection");
    let settings = scratch.0.join("injection-settings.yaml");
    std::fs::write(
        &settings,
        map["data"]["settings.yaml"]
            .as_str()
            .expect("settings.yaml"),
    )
    .unwrap();
    let ip = host_ip().to_string();
    mesh.start_controller(
        "controller-0",
        &[],
        &[
            "--webhook",
            &format!("{ip}:0"),
            "--webhook-san",
            &ip,
            "--injection-config",
            settings.to_str().unwrap(),
        ],
    )
    .await;
    let world = World {
        admin: mesh.addr("controller-0", "admin"),
        webhook: mesh.addr("controller-0", "webhook"),
        mesh,
        settings,
        _scratch: scratch,
    };
    for (ns, labelled) in [(ON, true), (OFF, false)] {
        let labels = if labelled {
            "{mesh.dev/injection: enabled}"
        } else {
            "{}"
        };
        kube_support::apply(
            kube,
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {labels}}}\n---\n\
                 apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: default, namespace: {ns}}}\n---\n\
                 apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: echo, namespace: {ns}}}\n"
            ),
        );
    }

    the_controller_sets_the_ca_bundle_and_the_api_server_calls_it(&world).await;
    a_pod_in_a_labelled_namespace_is_stored_with_the_sidecar(&world);
    pods_elsewhere_or_opted_out_are_unchanged(&world);
    an_injected_spec_applied_again_is_not_injected_twice(&world);
    bad_input_is_refused_or_allowed_with_a_warning(&world);
    without_usable_settings_pods_pass_unchanged_with_a_warning(&world);
    the_metrics_count_every_result(&world);

    let mut mesh = world.mesh;
    mesh.stop().await;
}

/// Points the chart's webhook at the controller on this host and makes failures fatal.
async fn the_controller_sets_the_ca_bundle_and_the_api_server_calls_it(world: &World) {
    let kube = world.kube();
    let root = std::fs::read_to_string(world.mesh.root_ca_file()).unwrap();
    let url = format!("https://{}/inject", world.webhook);
    let patch = json!([
        {"op": "replace", "path": "/webhooks/0/clientConfig", "value": {"url": url}},
        {"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Fail"},
    ]);
    kubectl(
        kube,
        &[
            "patch",
            "mutatingwebhookconfiguration",
            "mesh-sidecar-injector",
            "--type",
            "json",
            "-p",
            &patch.to_string(),
        ],
        None,
    );
    eventually(
        "the controller sets the webhook's caBundle to the cluster's root",
        WAIT,
        async || ca_bundle(kube).as_deref() == Some(root.as_str()),
    )
    .await;
    // The API server picks up the changed configuration on its own schedule: ask it (a dry
    // run, which calls the webhook as a creation does) until the webhook answers.
    let probe = pod_yaml(ON, "probe", "{}", "");
    let ready = wait_for("the API server calls the webhook", WAIT, async || {
        let mut cmd = kube.kubectl();
        cmd.args(["create", "--dry-run=server", "-o", "json", "-f", "-"]);
        let ran = run(cmd, Some(&probe));
        ran.ok
            && serde_json::from_str::<Value>(&ran.stdout)
                .map(|p| init_names(&p) == ["mesh-init", "mesh-proxy"])
                .unwrap_or(false)
    })
    .await;
    if let Err(e) = ready {
        panic!("{e}\n{}\n{}", world.mesh.logs(), kube.log_tails());
    }
}

fn ca_bundle(kube: &Cluster) -> Option<String> {
    let config = get_json(
        kube,
        &["mutatingwebhookconfiguration", "mesh-sidecar-injector"],
    )?;
    let b64 = config["webhooks"][0]["clientConfig"]["caBundle"].as_str()?;
    let bytes: k8s_openapi::ByteString = serde_json::from_value(json!(b64)).ok()?;
    String::from_utf8(bytes.0).ok()
}

/// A pod of one container `app` (ports 8080 and 9090) in `ns`, with `annotations` (a YAML
/// flow map) and `extra` spec lines.
fn pod_yaml(ns: &str, name: &str, annotations: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
         annotations: {annotations}\nspec:\n  serviceAccountName: echo\n{extra}  containers:\n  \
         - name: app\n    image: echo\n    ports: [{{containerPort: 8080}}, {{containerPort: 9090}}]\n"
    )
}

/// Creates a pod; returns kubectl's outcome (its stderr carries admission warnings).
fn create(kube: &Cluster, yaml: &str) -> kube_support::Ran {
    let mut cmd = kube.kubectl();
    cmd.args(["create", "-f", "-"]);
    run(cmd, Some(yaml))
}

fn stored(kube: &Cluster, ns: &str, name: &str) -> Value {
    get_json(kube, &["pod", name, "-n", ns]).unwrap_or_else(|| panic!("pod {ns}/{name} stored"))
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn init_names(pod: &Value) -> Vec<String> {
    names(&pod["spec"]["initContainers"])
}

fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn a_pod_in_a_labelled_namespace_is_stored_with_the_sidecar(world: &World) {
    let kube = world.kube();
    let ran = create(
        kube,
        &pod_yaml(ON, "echo-0", "{mesh.dev/service: echo}", ""),
    );
    assert!(ran.ok, "{}\n{}", ran.stderr, world.mesh.logs());
    let pod = stored(kube, ON, "echo-0");
    assert_eq!(init_names(&pod), ["mesh-init", "mesh-proxy"], "{pod}");
    assert_eq!(names(&pod["spec"]["containers"]), ["app"]);
    let volumes = names(&pod["spec"]["volumes"]);
    for v in ["mesh-token", "mesh-root-ca"] {
        assert!(volumes.iter().any(|n| n == v), "{v} in {volumes:?}");
    }
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["mesh.dev/injected"], "true");
    let root = std::fs::read_to_string(world.mesh.root_ca_file()).unwrap();
    assert_eq!(annotations["mesh.dev/root-ca"], root.as_str());

    let init = &pod["spec"]["initContainers"][0];
    let caps = &init["securityContext"]["capabilities"]["add"];
    assert_eq!(caps, &json!(["NET_ADMIN", "NET_RAW"]));
    assert_eq!(init["securityContext"]["runAsUser"], 0);
    let init_args = args(init);
    assert_eq!(init_args[0], "init");
    assert_eq!(flag(&init_args, "--app-ports").as_deref(), Some("8080"));

    let proxy = &pod["spec"]["initContainers"][1];
    // A native sidecar, accepted as such by the API server.
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(proxy["image"], "mesh:0.1.0", "the chart's image");
    let proxy_args = args(proxy);
    assert_eq!(proxy_args[0], "sidecar");
    for (name, value) in [
        ("--cluster", CLUSTER.to_string()),
        (
            "--controller",
            format!("mesh-controller.{MESH_NS}.svc:15012"),
        ),
        ("--namespace", ON.to_string()),
        ("--service-account", "echo".to_string()),
        ("--service", format!("echo.{ON}")),
        ("--app", "127.0.0.1:8080".to_string()),
        ("--id", "$(POD_NAME)".to_string()),
    ] {
        assert_eq!(
            flag(&proxy_args, name),
            Some(value),
            "{name} in {proxy_args:?}"
        );
    }
    assert!(proxy_args.iter().any(|a| a == "--no-register"));
    let token = &pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "mesh-token")
        .unwrap()["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "mesh");
}

fn pods_elsewhere_or_opted_out_are_unchanged(world: &World) {
    let kube = world.kube();
    for (ns, name, annotations) in [
        (OFF, "plain", "{mesh.dev/service: echo}"),
        (ON, "opted-out", "{mesh.dev/inject: \"false\"}"),
    ] {
        let ran = create(kube, &pod_yaml(ns, name, annotations, ""));
        assert!(ran.ok, "{ns}/{name}: {}", ran.stderr);
        let pod = stored(kube, ns, name);
        assert!(init_names(&pod).is_empty(), "{ns}/{name}: {pod}");
        assert!(
            pod["metadata"]["annotations"]
                .get("mesh.dev/injected")
                .is_none(),
            "{pod}"
        );
    }
}

fn an_injected_spec_applied_again_is_not_injected_twice(world: &World) {
    let kube = world.kube();
    let mut again = stored(kube, ON, "echo-0");
    let meta = again["metadata"].as_object_mut().unwrap();
    for field in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "generation",
    ] {
        meta.remove(field);
    }
    meta.insert("name".into(), json!("echo-again"));
    again.as_object_mut().unwrap().remove("status");
    let ran = create(kube, &again.to_string());
    assert!(ran.ok, "{}", ran.stderr);
    let pod = stored(kube, ON, "echo-again");
    assert_eq!(init_names(&pod), ["mesh-init", "mesh-proxy"], "{pod}");
    assert_eq!(
        names(&pod["spec"]["volumes"])
            .iter()
            .filter(|n| n.starts_with("mesh-"))
            .count(),
        2,
        "{pod}"
    );
}

fn bad_input_is_refused_or_allowed_with_a_warning(world: &World) {
    let kube = world.kube();
    for (name, annotations, needle) in [
        (
            "maybe",
            "{mesh.dev/inject: maybe}",
            "annotation mesh.dev/inject: \"maybe\"",
        ),
        (
            "bad-port",
            "{mesh.dev/inbound-port: http}",
            "annotation mesh.dev/inbound-port: \"http\"",
        ),
    ] {
        let ran = create(kube, &pod_yaml(ON, name, annotations, ""));
        assert!(!ran.ok, "{name} was admitted");
        assert!(
            ran.stderr.contains("denied the request") && ran.stderr.contains(needle),
            "{name}: {}",
            ran.stderr
        );
        assert!(get_json(kube, &["pod", name, "-n", ON]).is_none());
    }
    // A container already named like the sidecar: allowed unchanged, with a warning.
    let yaml = pod_yaml(ON, "clash", "{}", "").replace("- name: app", "- name: mesh-proxy");
    let ran = create(kube, &yaml);
    assert!(ran.ok, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("Warning") && ran.stderr.contains("\"mesh-proxy\""),
        "{}",
        ran.stderr
    );
    assert!(init_names(&stored(kube, ON, "clash")).is_empty());

    // A body that is not an AdmissionReview: a 400 naming the problem, and the webhook keeps
    // answering.
    let root = world.mesh.root_ca_file();
    let out = curl(
        &root,
        &[
            "-X",
            "POST",
            "--data-binary",
            "not json",
            &format!("https://{}/inject", world.webhook),
        ],
    );
    assert!(out.starts_with("400\n"), "{out}");
    assert!(out.contains("not a JSON AdmissionReview"), "{out}");
}

fn without_usable_settings_pods_pass_unchanged_with_a_warning(world: &World) {
    let kube = world.kube();
    let good = std::fs::read_to_string(&world.settings).unwrap();
    let broken: String = good
        .lines()
        .map(|l| {
            if l.starts_with("image:") {
                "image: \"\""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&world.settings, broken).unwrap();
    let ran = create(kube, &pod_yaml(ON, "no-image", "{}", ""));
    std::fs::write(&world.settings, &good).unwrap();
    assert!(
        ran.ok,
        "failurePolicy is Fail, yet the webhook must allow: {}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("mesh sidecar not injected") && ran.stderr.contains("image is empty"),
        "{}",
        ran.stderr
    );
    assert!(init_names(&stored(kube, ON, "no-image")).is_empty());
    // Settings back: injection resumes without a restart.
    let ran = create(kube, &pod_yaml(ON, "after", "{}", ""));
    assert!(ran.ok, "{}", ran.stderr);
    assert_eq!(
        init_names(&stored(kube, ON, "after")),
        ["mesh-init", "mesh-proxy"]
    );
}

fn the_metrics_count_every_result(world: &World) {
    let metrics = curl(Path::new(""), &[&format!("http://{}/metrics", world.admin)]);
    for result in ["injected", "skipped", "refused", "error"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("mesh_injection_total{{result=\"{result}\"}}")))
            .unwrap_or_else(|| panic!("no mesh_injection_total{{result={result}}} in\n{metrics}"));
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(count >= 1.0, "{line}");
    }
}

/// `curl` with `args` trusting `ca` (when not empty); prints the status line first.
fn curl(ca: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"]);
    if !ca.as_os_str().is_empty() {
        cmd.arg("--cacert").arg(ca);
    }
    cmd.args(args);
    let ran = run(cmd, None);
    assert!(ran.ok, "curl {args:?}: {}", ran.stderr);
    let (body, status) = ran.stdout.rsplit_once('\n').unwrap_or(("", &ran.stdout));
    format!("{status}\n{body}")
}
