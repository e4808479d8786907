//! The mesh on real Kubernetes API servers, for end-to-end tests: the chart installed with real
//! helm, the controller and gateway running as processes of the built `mesh` binary with the
//! credentials of the ServiceAccounts the chart created (tokens from the TokenRequest API), and
//! demo workloads as processes whose Pods and EndpointSlices the test writes (there is no
//! kubelet: see `k8s-testenv/README.md`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mesh_core::argv::{Argv, parse_flags};
use mesh_k8s_testenv::Cluster;
use mesh_launcher::cluster_set::{ComponentArgs, Process, log_tail};
use serde_json::Value;

/// The namespace the chart is installed in.
pub(crate) const MESH_NS: &str = "mesh-system";
/// The demo workloads' namespace.
pub(crate) const DEMO_NS: &str = "demo";

/// This machine's address on its default route: EndpointSlices may not list loopback
/// addresses, so the demo workloads' sidecars listen here.
pub(crate) fn host_ip() -> std::net::IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").expect("UDP socket");
    probe
        .connect("198.51.100.1:9")
        .expect("this machine needs a non-loopback IPv4 address with a route (EndpointSlices refuse loopback)");
    probe.local_addr().expect("local address").ip()
}

/// The built `mesh` binary.
pub(crate) fn mesh_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mesh"))
}

/// `charts/mesh`.
pub(crate) fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/mesh")
}

/// What a command printed.
#[derive(Debug)]
pub(crate) struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with `stdin`.
pub(crate) fn run(mut cmd: Command, stdin: Option<&str>) -> Ran {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())
            .expect("writing stdin");
    }
    let out = child.wait_with_output().expect("waiting");
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `kubectl args` against `cluster`, failing the test when it fails.
pub(crate) fn kubectl(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = cluster.kubectl();
    cmd.args(args);
    let ran = run(cmd, stdin);
    assert!(
        ran.ok,
        "kubectl {args:?} in {} failed:\n{}\n{}",
        cluster.name(),
        ran.stderr,
        ran.stdout
    );
    ran.stdout
}

/// `kubectl apply -f -` of `yaml`.
pub(crate) fn apply(cluster: &Cluster, yaml: &str) {
    kubectl(cluster, &["apply", "-f", "-"], Some(yaml));
}

/// `kubectl get ... -o json`, or `None` when it is not there.
pub(crate) fn get_json(cluster: &Cluster, args: &[&str]) -> Option<Value> {
    let mut cmd = cluster.kubectl();
    cmd.args(["get"]).args(args).args(["-o", "json"]);
    let ran = run(cmd, None);
    if !ran.ok {
        assert!(
            ran.stderr.contains("NotFound") || ran.stderr.contains("not found"),
            "kubectl get {args:?} in {}: {}",
            cluster.name(),
            ran.stderr
        );
        return None;
    }
    Some(serde_json::from_str(&ran.stdout).expect("kubectl JSON"))
}

/// The status of condition `type_` of the object `json`, with its reason and message.
pub(crate) fn condition(json: &Value, type_: &str) -> Option<(String, String, String)> {
    json["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// A ServiceAccount token from the TokenRequest API.
pub(crate) fn token(
    cluster: &Cluster,
    namespace: &str,
    account: &str,
    audience: Option<&str>,
) -> String {
    let mut args = vec![
        "create",
        "token",
        account,
        "-n",
        namespace,
        "--duration",
        "10h",
    ];
    if let Some(a) = audience {
        args.extend(["--audience", a]);
    }
    kubectl(cluster, &args, None).trim().to_string()
}

/// One cluster of the mesh on one test API server.
pub(crate) struct MeshCluster {
    /// The test API server.
    pub kube: &'static Cluster,
    /// `cluster.name`.
    pub name: &'static str,
    /// `cluster.region`.
    pub region: &'static str,
    /// Scratch folder: tokens, kubeconfigs, ready files, logs.
    pub dir: PathBuf,
    /// Running processes by name.
    pub processes: BTreeMap<String, Process>,
}

impl MeshCluster {
    /// Installs the chart into `kube` as cluster `name` in `region`, preferring `priority`.
    pub(crate) fn install(
        kube: &'static Cluster,
        name: &'static str,
        region: &'static str,
        priority: &[&str],
        dir: &Path,
    ) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut helm = kube.helm();
        helm.args(["upgrade", "--install", "mesh"])
            .arg(chart())
            .args(["-n", MESH_NS, "--create-namespace"])
            .args(["--set", &format!("cluster.name={name}")])
            .args(["--set", &format!("cluster.region={region}")]);
        if !priority.is_empty() {
            helm.args([
                "--set",
                &format!("cluster.regionPriority={{{}}}", priority.join(",")),
            ]);
        }
        let ran = run(helm, None);
        assert!(
            ran.ok,
            "helm install in {}: {}\n{}",
            kube.name(),
            ran.stderr,
            ran.stdout
        );
        for crd in mesh_k8s::check::CRDS {
            kubectl(
                kube,
                &[
                    "wait",
                    "--for=condition=Established",
                    "--timeout=60s",
                    &format!("crd/{crd}"),
                ],
                None,
            );
        }
        apply(
            kube,
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {DEMO_NS}}}\n---\n\
                 apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: echo, namespace: {DEMO_NS}}}\n---\n\
                 apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: client, namespace: {DEMO_NS}}}\n"
            ),
        );
        Self {
            kube,
            name,
            region,
            dir,
            processes: BTreeMap::new(),
        }
    }

    fn write(&self, file: &str, content: &str) -> PathBuf {
        let path = self.dir.join(file);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// A kubeconfig authenticating as `namespace/account` with a TokenRequest token.
    pub(crate) fn service_account_kubeconfig(&self, namespace: &str, account: &str) -> PathBuf {
        let token = token(self.kube, namespace, account, None);
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n\
             current-context: c\n",
            self.kube.server(),
            self.kube.ca_cert().display()
        );
        self.write(&format!("{account}.kubeconfig"), &kubeconfig)
    }

    async fn start(&mut self, name: &str, args: ComponentArgs) -> &Process {
        let mut process = Process::new(
            format!("{}/{name}", self.name),
            args,
            self.dir.join(format!("{name}.log")),
            self.dir.join(format!("{name}.ready.json")),
        );
        if let Err(e) = process.start(&mesh_bin()).await {
            panic!("{} did not start: {e}", process.label);
        }
        self.processes.insert(name.to_string(), process);
        &self.processes[name]
    }

    /// An address `process` bound under `role`.
    pub(crate) fn addr(&self, process: &str, role: &str) -> SocketAddr {
        self.processes[process].ready.as_ref().expect("ready").addrs[role]
    }

    /// Starts controller replica `replica` with the chart's controller ServiceAccount's
    /// credentials.
    pub(crate) async fn start_controller(
        &mut self,
        replica: &str,
        priority: &[&str],
        extra: &[&str],
    ) {
        let kubeconfig = self.service_account_kubeconfig(MESH_NS, "mesh-controller");
        let mut argv = Argv::new([
            "--cluster",
            self.name,
            "--region",
            self.region,
            "--kubernetes",
            "--namespace",
            MESH_NS,
            "--pod-name",
            replica,
        ]);
        argv.path("kubeconfig", &kubeconfig)
            .path(
                "ready-file",
                &self.dir.join(format!("{replica}.ready.json")),
            )
            .list(
                "region-priority",
                &priority.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            );
        argv.extend(Argv::new(extra.iter().copied()));
        let args = parse_flags(argv).expect("controller flags");
        self.start(replica, ComponentArgs::Controller(args)).await;
    }

    /// The root certificate the controller published, written to a file.
    pub(crate) fn root_ca_file(&self) -> PathBuf {
        let map = get_json(self.kube, &["configmap", "mesh-root-ca", "-n", MESH_NS])
            .expect("the controller publishes mesh-root-ca");
        self.write("ca.crt", map["data"]["ca.crt"].as_str().expect("ca.crt"))
    }

    /// The control addresses of controller replicas `names`, as `--controller` lists them.
    fn controllers(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|n| self.addr(n, "control").to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn member_argv(&self, controllers: &[&str], token_file: &Path, ready: &str) -> Argv {
        let mut argv = Argv::new(["--cluster", self.name]);
        argv.flag("controller", self.controllers(controllers))
            .path("ca-file", &self.root_ca_file())
            .path("token-file", token_file)
            .path("ready-file", &self.dir.join(format!("{ready}.ready.json")));
        argv
    }

    /// Starts the gateway with a projected-style token of the chart's gateway ServiceAccount.
    pub(crate) async fn start_gateway(&mut self, controllers: &[&str]) {
        let token = token(self.kube, MESH_NS, "mesh-gateway", Some("mesh"));
        let token_file = self.write("gateway.token", &token);
        let argv = self.member_argv(controllers, &token_file, "gateway");
        let args = parse_flags(argv).expect("gateway flags");
        self.start("gateway", ComponentArgs::Gateway(args)).await;
    }

    /// Starts echo replica `replica` (demo app and sidecar, ServiceAccount `demo/echo`) and
    /// writes its Pod; its EndpointSlice entry is [`Self::write_echo_slice`]'s.
    pub(crate) async fn start_echo(&mut self, replica: &str, controllers: &[&str]) {
        let app = parse_flags(Argv::new([
            "--cluster",
            self.name,
            "--replica",
            replica,
            "--ready-file",
            self.dir
                .join(format!("{replica}.ready.json"))
                .to_str()
                .unwrap(),
        ]))
        .expect("demo app flags");
        self.start(replica, ComponentArgs::DemoApp(app)).await;
        let app_addr = self.addr(replica, "listen");
        let token_file = self.write(
            &format!("{replica}.token"),
            &token(self.kube, DEMO_NS, "echo", Some("mesh")),
        );
        let sidecar = format!("sidecar-{replica}");
        let mut argv = self.member_argv(controllers, &token_file, &sidecar);
        argv.flag("id", replica)
            .flag("namespace", DEMO_NS)
            .flag("service-account", "echo")
            .flag("service", "echo.demo")
            .flag("app", app_addr)
            .flag("inbound", SocketAddr::new(host_ip(), 0))
            .switch("no-register", true);
        let args = parse_flags(argv).expect("sidecar flags");
        self.start(&sidecar, ComponentArgs::Sidecar(args)).await;
        let inbound = self.addr(&sidecar, "inbound");
        apply(
            self.kube,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {replica}\n  namespace: {DEMO_NS}\n  labels: {{app: echo}}\n  \
                 annotations: {{mesh.dev/inbound-port: \"{}\"}}\nspec:\n  serviceAccountName: echo\n  \
                 containers: [{{name: echo, image: mesh}}]\n",
                inbound.port()
            ),
        );
    }

    /// Writes the Service `demo/echo` (port 80) and its ServiceExport.
    pub(crate) fn export_echo(&self, port: u16) {
        apply(
            self.kube,
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: {DEMO_NS}}}\n\
                 spec: {{selector: {{app: echo}}, ports: [{{name: http, port: {port}, protocol: TCP}}]}}\n---\n\
                 apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {{name: echo, namespace: {DEMO_NS}}}\n"
            ),
        );
    }

    /// Writes the EndpointSlice of `demo/echo` listing `replicas` (on loopback), each ready or
    /// not, as kube-controller-manager would from their Pods.
    pub(crate) fn write_echo_slice(&self, replicas: &[(&str, bool)]) {
        let endpoints: Vec<String> = replicas
            .iter()
            .map(|(r, ready)| {
                format!(
                    "- addresses: [\"{}\"]\n  conditions: {{ready: {ready}}}\n  \
                     targetRef: {{kind: Pod, name: {r}, namespace: {DEMO_NS}}}\n",
                    host_ip()
                )
            })
            .collect();
        apply(
            self.kube,
            &format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: echo-local\n  \
                 namespace: {DEMO_NS}\n  labels: {{kubernetes.io/service-name: echo}}\naddressType: IPv4\n\
                 ports: [{{name: http, port: 80, protocol: TCP}}]\nendpoints:\n{}",
                endpoints.join("")
            ),
        );
    }

    /// Starts the client sidecar (ServiceAccount `demo/client`); returns its outbound proxy.
    pub(crate) async fn start_client(&mut self, controllers: &[&str]) -> SocketAddr {
        let token_file = self.write(
            "client.token",
            &token(self.kube, DEMO_NS, "client", Some("mesh")),
        );
        let mut argv = self.member_argv(controllers, &token_file, "client");
        argv.flag("id", "client-0")
            .flag("namespace", DEMO_NS)
            .flag("service-account", "client");
        let args = parse_flags(argv).expect("client flags");
        self.start("client", ComponentArgs::Sidecar(args)).await;
        self.addr("client", "outbound")
    }

    /// Starts a client sidecar that presents a token of ServiceAccount `token_of` but asks for
    /// the identity of `claims` (both in `demo`); returns how its start ended.
    pub(crate) async fn try_impersonating_sidecar(
        &self,
        controller: &str,
        token_of: &str,
        claims: &str,
    ) -> Result<Process, String> {
        let token_file = self.write(
            &format!("{token_of}-as-{claims}.token"),
            &token(self.kube, DEMO_NS, token_of, Some("mesh")),
        );
        let name = format!("impostor-{claims}");
        let mut argv = self.member_argv(&[controller], &token_file, &name);
        argv.flag("id", &name)
            .flag("namespace", DEMO_NS)
            .flag("service-account", claims);
        let mut process = Process::new(
            format!("{}/{name}", self.name),
            ComponentArgs::Sidecar(parse_flags(argv).expect("sidecar flags")),
            self.dir.join(format!("{name}.log")),
            self.dir.join(format!("{name}.ready.json")),
        );
        match process.start(&mesh_bin()).await {
            Ok(()) => Ok(process),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stops `process` (SIGKILL).
    pub(crate) async fn kill(&mut self, process: &str) {
        if let Some(p) = self.processes.get_mut(process) {
            p.kill().await;
        }
    }

    /// The tails of every process's log and the API server's.
    pub(crate) fn logs(&self) -> String {
        let mut out = String::new();
        for (name, p) in &self.processes {
            out.push_str(&format!(
                "--- {}/{name}\n{}\n",
                self.name,
                log_tail(&p.log, 20)
            ));
        }
        out
    }

    /// Stops every process.
    pub(crate) async fn stop(&mut self) {
        for p in self.processes.values_mut().rev() {
            p.stop().await;
        }
    }
}

/// Installs the chart in each of `clusters` (name, region, region priority; each on the test
/// API server of its name) and starts there the controller `replicas` (with `controller_flags`),
/// the gateway, and echo replica `echo-0`, exported and ready in its EndpointSlice.
pub(crate) async fn bring_up(
    env: &'static mesh_k8s_testenv::TestEnv,
    clusters: &[(&'static str, &'static str, &[&str])],
    replicas: &[&str],
    controller_flags: &[&str],
    dir: &Path,
) -> Vec<MeshCluster> {
    let mut up = Vec::new();
    for (name, region, priority) in clusters.iter().copied() {
        let kube = env.cluster(name).expect("test cluster");
        let mut c = MeshCluster::install(kube, name, region, priority, dir);
        for replica in replicas {
            c.start_controller(replica, priority, controller_flags)
                .await;
        }
        c.start_gateway(replicas).await;
        c.start_echo("echo-0", replicas).await;
        c.export_echo(80);
        c.write_echo_slice(&[("echo-0", true)]);
        up.push(c);
    }
    up
}

/// Each cluster's admin kubeconfig, as a `mesh` argument.
pub(crate) fn kubeconfigs(clusters: &[MeshCluster]) -> Vec<String> {
    clusters
        .iter()
        .map(|c| c.kube.kubeconfig().display().to_string())
        .collect()
}

/// `mesh link` or `mesh unlink` of two clusters by their kubeconfigs, with `extra` flags.
pub(crate) fn mesh_link(verb: &str, a: &str, b: &str, extra: &[&str]) -> Ran {
    let mut args = vec![verb, "--kubeconfig", a, "--kubeconfig", b];
    args.extend_from_slice(extra);
    mesh(&args)
}

/// `mesh args...`, its output.
pub(crate) fn mesh(args: &[&str]) -> Ran {
    let mut cmd = Command::new(mesh_bin());
    cmd.args(args);
    run(cmd, None)
}
