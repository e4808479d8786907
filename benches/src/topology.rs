//! The mesh side of the benchmark: two clusters (`bench-a`, `bench-b`) of real `mesh` processes
//! around one upstream, started in dependency order through `mesh-launcher`'s `Process` (ready
//! files, no port races) and linked:
//!
//! - `bench-a`: controller (static services file: the upstream as plaintext service
//!   `plain.bench`, plus synthetic endpoints for control-plane runs), gateway, an endpoint
//!   sidecar of `echo.bench` in front of the upstream, and client sidecars;
//! - `bench-b`: controller (static file: the tunnel sink as `sink.bench`), gateway, an endpoint
//!   sidecar of `echo.bench` in front of the same upstream, and client sidecars.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_core::identity::CA_CERT_FILE;
use mesh_core::member_args::ClusterMemberArgs;
use mesh_federation::ControllerArgs;
use mesh_gateway::GatewayArgs;
use mesh_launcher::ca::{JOIN_TOKEN_FILE, ensure_cluster_ca};
use mesh_launcher::cluster_set::{ComponentArgs, LaunchError, Process};
use mesh_launcher::link::link_pair;
use mesh_sidecar::SidecarArgs;

use crate::error::BenchError;
use crate::load::{Conn, Protocol, Target, connect, exchange, request};

/// The first cluster (clients, the in-cluster paths).
pub const CLUSTER_A: &str = "bench-a";
/// The second cluster (the cross-cluster endpoint).
pub const CLUSTER_B: &str = "bench-b";
/// Namespace of every benchmark service.
pub const NAMESPACE: &str = "bench";
/// Service of the plaintext upstream in `bench-a` (the one-hop path).
pub const PLAIN_SERVICE: &str = "plain.bench";
/// The same plaintext upstream as [`PLAIN_SERVICE`], governed by an `HTTPRoute` of
/// [`ROUTES`] rules (the policy stack's cost).
pub const ROUTED_SERVICE: &str = "routed.bench";
/// Rules of the routed service's route.
pub const ROUTES: usize = 100;
/// The path requests to the routed service use: it matches the middle rule.
pub const ROUTED_PATH: &str = "/r50/item";
/// Service of the endpoint sidecars in both clusters.
pub const ECHO_SERVICE: &str = "echo.bench";
/// Service of the tunnel sink in `bench-b`.
pub const SINK_SERVICE: &str = "sink.bench";
/// Service account of the endpoint sidecars.
pub const ECHO_ACCOUNT: &str = "echo";
/// How long the whole topology may take to route everywhere.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);

/// What to start.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Synthetic endpoints listed in `bench-a`'s static file (services of at most 100).
    pub synthetic_endpoints: usize,
    /// Start the tunnel sink and export it from `bench-b`.
    pub sink: bool,
    /// Start `bench-b`'s endpoint sidecar.
    pub endpoint_b: bool,
    /// Start a client sidecar in `bench-a`.
    pub client_a: bool,
    /// Start a client sidecar in `bench-b`.
    pub client_b: bool,
}

/// The running processes of the two clusters.
#[derive(Debug)]
pub struct MeshPair {
    dir: PathBuf,
    processes: Vec<(String, Process)>,
}

/// The mesh names the in-cluster and cross-cluster paths use.
pub fn authority(service: &str, cluster: Option<&str>) -> String {
    let (name, ns) = service.split_once('.').unwrap_or((service, NAMESPACE));
    match cluster {
        Some(c) => format!("{name}.{ns}.svc.{c}.clusterset.local"),
        None => format!("{name}.{ns}.svc.clusterset.local"),
    }
}

impl MeshPair {
    /// No processes yet, their files under `dir`: for a part that starts its own
    /// ([`MeshPair::spawn`]) and stops them with [`MeshPair::stop`].
    pub fn empty(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            processes: Vec::new(),
        }
    }

    /// Starts the two clusters under `dir` with `mesh_bin`, the helper servers with `bench_bin`,
    /// links them and waits until the clients route every path.
    pub async fn start(
        dir: &Path,
        mesh_bin: &Path,
        bench_bin: &Path,
        layout: &Layout,
    ) -> Result<Self, BenchError> {
        if !mesh_bin.exists() {
            return Err(BenchError::MissingMeshBinary(mesh_bin.to_path_buf()));
        }
        let mut pair = Self {
            dir: dir.to_path_buf(),
            processes: Vec::new(),
        };
        match pair.start_all(mesh_bin, bench_bin, layout).await {
            Ok(()) => Ok(pair),
            Err(e) => {
                pair.stop().await;
                Err(e)
            }
        }
    }

    async fn start_all(
        &mut self,
        mesh_bin: &Path,
        bench_bin: &Path,
        layout: &Layout,
    ) -> Result<(), BenchError> {
        for cluster in [CLUSTER_A, CLUSTER_B] {
            ensure_cluster_ca(cluster, &self.dir.join(cluster), false)
                .map_err(LaunchError::from)?;
        }
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let helper =
            |words: &[&str]| ComponentArgs::Other(words.iter().map(|w| w.to_string()).collect());
        let any_text = any.to_string();
        self.spawn(
            bench_bin,
            "upstream",
            helper(&["upstream", "--listen", &any_text]),
        )
        .await?;
        let upstream = self.need("upstream", "listen")?;
        if layout.sink {
            self.spawn(
                bench_bin,
                "sink",
                helper(&["tcp-sink", "--listen", &any_text]),
            )
            .await?;
        }
        let services_a = self.dir.join("services-a.yaml");
        write_file(
            &services_a,
            &services_a_yaml(upstream, layout.synthetic_endpoints),
        )?;
        let policy_a = self.dir.join("policy-a.yaml");
        write_file(&policy_a, &routes_yaml(ROUTES))?;
        let services_b = self.dir.join("services-b.yaml");
        let sink = self.addr("sink", "listen");
        write_file(&services_b, &services_b_yaml(sink))?;

        for (cluster, services, policy) in [
            (CLUSTER_A, &services_a, vec![policy_a.clone()]),
            (CLUSTER_B, &services_b, Vec::new()),
        ] {
            let controller = ControllerArgs {
                control: any,
                admin: any,
                services_file: Some(services.clone()),
                policy_files: policy,
                ..ControllerArgs::new(cluster, &self.dir.join(cluster))
            };
            self.spawn(
                mesh_bin,
                &format!("controller-{cluster}"),
                ComponentArgs::Controller(controller),
            )
            .await?;
            let gateway = GatewayArgs {
                quic: any,
                tunnel: any,
                ..GatewayArgs::new(self.member(cluster)?)
            };
            self.spawn(
                mesh_bin,
                &format!("gateway-{cluster}"),
                ComponentArgs::Gateway(gateway),
            )
            .await?;
        }
        let admin_a = self.need(&format!("controller-{CLUSTER_A}"), "admin")?;
        let admin_b = self.need(&format!("controller-{CLUSTER_B}"), "admin")?;
        let tokens = mesh_launcher::admin_client::AdminTokens::in_state_dir(&self.dir);
        link_pair(admin_a, admin_b, &tokens, Duration::from_secs(30))
            .await
            .map_err(|e| LaunchError::Link {
                a: CLUSTER_A.into(),
                b: CLUSTER_B.into(),
                reason: e.to_string(),
            })?;

        let mut endpoints = vec![CLUSTER_A];
        if layout.endpoint_b {
            endpoints.push(CLUSTER_B);
        }
        for cluster in endpoints {
            let sidecar =
                SidecarArgs {
                    namespace: NAMESPACE.into(),
                    service: Some(ECHO_SERVICE.parse().map_err(|e| {
                        BenchError::NotReady(format!("service {ECHO_SERVICE}: {e}"))
                    })?),
                    service_account: Some(ECHO_ACCOUNT.into()),
                    app: Some(upstream),
                    inbound: any,
                    outbound: any,
                    ..SidecarArgs::new(self.member(cluster)?, format!("echo-{cluster}"))
                };
            self.spawn(
                mesh_bin,
                &format!("sidecar-echo-{cluster}"),
                ComponentArgs::Sidecar(sidecar),
            )
            .await?;
        }
        let clients = [(CLUSTER_A, layout.client_a), (CLUSTER_B, layout.client_b)];
        for (cluster, _) in clients.iter().filter(|(_, on)| *on) {
            let client = SidecarArgs {
                namespace: NAMESPACE.into(),
                service_account: Some("client".into()),
                outbound: any,
                ..SidecarArgs::new(self.member(cluster)?, format!("client-{cluster}"))
            };
            self.spawn(
                mesh_bin,
                &format!("client-{cluster}"),
                ComponentArgs::Sidecar(client),
            )
            .await?;
        }
        Ok(())
    }

    /// The shared flags of a member of `cluster`: its controller (started already) and its
    /// credentials.
    fn member(&self, cluster: &str) -> Result<ClusterMemberArgs, BenchError> {
        let state = self.dir.join(cluster);
        Ok(ClusterMemberArgs {
            cluster: cluster.to_string(),
            controller: self
                .need(&format!("controller-{cluster}"), "control")?
                .into(),
            ca_file: state.join(CA_CERT_FILE),
            token_file: state.join(JOIN_TOKEN_FILE),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            ready_file: None,
        })
    }

    /// Starts one more process `name` from `bin` (its ready file is set here), stopped with the
    /// rest.
    pub async fn spawn(
        &mut self,
        bin: &Path,
        name: &str,
        mut args: ComponentArgs,
    ) -> Result<(), BenchError> {
        let ready_path = self.dir.join("run").join(format!("{name}.json"));
        if let Some(parent) = ready_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| BenchError::io(parent, e))?;
        }
        args.set_ready_file(ready_path.clone());
        let mut process = Process::new(
            format!("bench/{name}"),
            args,
            self.dir.join("logs").join(format!("{name}.log")),
            ready_path,
        );
        let started = process.start(bin).await;
        // Kept even when it failed, so `stop` reaps it.
        self.processes.push((name.to_string(), process));
        started.map_err(BenchError::from)
    }

    /// The process named `name` (`upstream`, `controller-bench-a`, `client-bench-a`, ...).
    pub fn process(&self, name: &str) -> Option<&Process> {
        self.processes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    }

    /// The pid of process `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.process(name)?.pid()
    }

    /// An address process `name` bound for `role`.
    pub fn addr(&self, name: &str, role: &str) -> Option<SocketAddr> {
        self.process(name)?.ready.as_ref()?.addr(role)
    }

    /// Like [`addr`](Self::addr), an error when missing.
    pub fn need(&self, name: &str, role: &str) -> Result<SocketAddr, BenchError> {
        self.addr(name, role)
            .ok_or_else(|| BenchError::NotReady(format!("{name} has no {role} address")))
    }

    /// The state directory of `cluster` (CA certificate, join token).
    pub fn state_dir(&self, cluster: &str) -> PathBuf {
        self.dir.join(cluster)
    }

    /// The log of process `name`.
    pub fn log(&self, name: &str) -> Option<&Path> {
        self.process(name).map(|p| p.log.as_path())
    }

    /// Waits until `proxy` answers 200 for each authority.
    pub async fn wait_routes(
        &self,
        proxy: SocketAddr,
        authorities: &[String],
    ) -> Result<(), BenchError> {
        for authority in authorities {
            wait_route(proxy, authority, CONVERGE_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Stops every process, newest first.
    pub async fn stop(&mut self) {
        for (_, p) in self.processes.iter_mut().rev() {
            p.stop().await;
        }
    }
}

/// Waits until a GET of `authority` through the proxy at `proxy` answers 200.
pub async fn wait_route(
    proxy: SocketAddr,
    authority: &str,
    timeout: Duration,
) -> Result<(), BenchError> {
    let target = Target {
        addr: proxy,
        authority: authority.to_string(),
        path: "/".into(),
        absolute_form: true,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    let mut conn: Option<Conn> = None;
    loop {
        if conn.as_ref().is_none_or(Conn::is_closed) {
            conn = connect(proxy, Protocol::Http1).await.ok();
        }
        if let Some(c) = conn.as_mut() {
            match exchange(c, request(&target, Protocol::Http1, bytes::Bytes::new())).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(BenchError::NotReady(format!(
                "{authority} through {proxy} did not answer 200 within {timeout:?}: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|e| BenchError::io(path, e))
}

/// `bench-a`'s static services: the plaintext upstream and `synthetic` endpoints that nobody
/// dials (they only give the catalog its size), in services of 100.
pub fn services_a_yaml(upstream: SocketAddr, synthetic: usize) -> String {
    let mut out = format!(
        "- service: {PLAIN_SERVICE}\n  address: {upstream}\n  plaintext: true\n\
         - service: {ROUTED_SERVICE}\n  address: {upstream}\n  plaintext: true\n"
    );
    for i in 0..synthetic {
        // 127.10.x.y: loopback addresses nothing listens on; never dialled.
        let (hi, lo) = ((i / 250) % 250 + 1, i % 250 + 1);
        out.push_str(&format!(
            "- service: synth-{}.{NAMESPACE}\n  address: 127.10.{hi}.{lo}:{}\n  identity: spiffe://{CLUSTER_A}.mesh/ns/{NAMESPACE}/sa/synth\n",
            i / 100,
            10_000 + i / 62_500,
        ));
    }
    out
}

/// An `HTTPRoute` of `rules` path-prefix rules `/r<i>` and a catch-all, all to the routed
/// service, as a policy file of `bench-a`'s controller.
pub fn routes_yaml(rules: usize) -> String {
    let name = ROUTED_SERVICE.split('.').next().unwrap_or_default();
    let mut out = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: bench-routes, namespace: {NAMESPACE}}}\n\
         spec:\n  parentRefs: [{{kind: Service, name: {name}}}]\n  rules:\n"
    );
    for i in 0..rules {
        out.push_str(&format!(
            "  - matches: [{{path: {{type: PathPrefix, value: /r{i}}}}}]\n    backendRefs: [{{name: {name}}}]\n"
        ));
    }
    out.push_str(&format!(
        "  - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n    backendRefs: [{{name: {name}}}]\n"
    ));
    out
}

/// `bench-b`'s static services: the tunnel sink, when there is one.
pub fn services_b_yaml(sink: Option<SocketAddr>) -> String {
    match sink {
        Some(sink) => format!(
            "- service: {SINK_SERVICE}\n  address: {sink}\n  identity: spiffe://{CLUSTER_B}.mesh/ns/{NAMESPACE}/sa/sink\n"
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_static_files_follow_the_layout() {
        assert_eq!(
            authority(ECHO_SERVICE, Some(CLUSTER_B)),
            "echo.bench.svc.bench-b.clusterset.local"
        );
        assert_eq!(
            authority(PLAIN_SERVICE, None),
            "plain.bench.svc.clusterset.local"
        );
        let up: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let yaml = services_a_yaml(up, 10_000);
        assert_eq!(yaml.matches("- service:").count(), 10_002);
        let routes = routes_yaml(ROUTES);
        let objects = mesh_core::policy::documents::parse_documents(&routes, "policy-a.yaml", 0)
            .expect("the bench's route parses");
        let known = |_: &mesh_core::names::ServiceKey| true;
        let compiled = mesh_core::policy::compile::compile(&objects, &known);
        assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
        let routed = compiled
            .services
            .values()
            .next()
            .expect("the routed service");
        assert_eq!(routed.rules.len(), ROUTES + 1);
        assert!(
            yaml.starts_with(
                "- service: plain.bench\n  address: 127.0.0.1:9000\n  plaintext: true\n"
            )
        );
        assert!(yaml.contains("synth-99.bench"), "services of 100 endpoints");
        let addrs: std::collections::HashSet<&str> = yaml
            .lines()
            .filter(|l| l.contains("address: 127.10."))
            .collect();
        assert_eq!(addrs.len(), 10_000, "synthetic addresses are distinct");
        assert_eq!(services_b_yaml(None), "");
        assert!(services_b_yaml(Some(up)).contains("sink.bench"));
    }
}
