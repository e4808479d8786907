//! `mesh up`: the embedded default. Runs a whole cluster-set as local processes, links it, waits
//! until traffic flows, prints what to try, and stops everything cleanly on Ctrl-C.

use std::path::PathBuf;

use mesh_core::config::{ConfigError, Topology};

use mesh_chaos::netns::{self, AppNamespaces, NetworkMode};
use mesh_launcher::cluster_set::{ClusterSet, LaunchError, read_manifest};

/// Arguments of `mesh up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Topology file (YAML) naming the clusters, their regions and failover priorities. Without
    /// it: us-east, us-west and eu-central, client proxies on ports 15001, 15101 and 15201.
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Where CA material, logs and run files go. Reusable across runs; remove it to start afresh.
    #[arg(long, default_value = ".mesh")]
    pub state_dir: PathBuf,
    /// Let every listener, client proxies included, pick a free port (several cluster-sets on
    /// one machine, tests).
    #[arg(long)]
    pub ephemeral_ports: bool,
    /// Run each cluster's client in a network namespace of its own (`mesh-<cluster>`, root
    /// needed) with transparent capture and the cluster's mesh DNS as its resolver, so that
    /// `ip netns exec mesh-<cluster> curl http://echo.demo.svc.clusterset.local/` works with no
    /// proxy setting.
    #[arg(long)]
    pub transparent: bool,
    /// Traffic policy files (YAML: `HTTPRoute`s and the mesh's policy kinds), repeated or
    /// comma-separated, given to every cluster's controller, which watches them: edit a file
    /// and the change applies within a second; a change that does not validate is refused
    /// (see the controller's log or `GET /v1/policy` on its admin address) and the last good
    /// policy stays.
    #[arg(long = "policy", value_delimiter = ',')]
    pub policy: Vec<PathBuf>,
    /// Lifetime of the certificates every cluster's controller signs (its `--cert-ttl`; 24h
    /// when not given, at least 10s, a minute being the practical floor). Every component
    /// renews at 2/3 of it.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub cert_ttl: Option<std::time::Duration>,
}

/// Errors of `mesh up`.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The topology file is broken.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Something failed while starting.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// Another `mesh up` runs in the same state directory.
    #[error(
        "a cluster-set is already running from {0} (mesh up pid {1}); stop it first or use another --state-dir"
    )]
    AlreadyRunning(PathBuf, u32),
    /// The running binary could not be found.
    #[error("cannot find the mesh binary to start components: {0}")]
    Binary(std::io::Error),
    /// A policy file does not validate.
    #[error("policy files refused:\n  {}", .0.join("\n  "))]
    Policy(Vec<String>),
    /// `--transparent` cannot be had here.
    #[error("--transparent needs network namespaces: {0}")]
    Transparent(String),
}

/// Runs `mesh up` until SIGINT or SIGTERM.
pub async fn run(args: UpArgs) -> Result<(), UpError> {
    let mut topology = match &args.topology {
        Some(path) => Topology::load(path)?,
        None => Topology::default_set(),
    };
    if args.ephemeral_ports {
        topology = topology.with_ephemeral_ports();
    }
    if let Ok(m) = read_manifest(&args.state_dir)
        && m.pid != std::process::id()
        && std::path::Path::new(&format!("/proc/{}", m.pid)).exists()
    {
        return Err(UpError::AlreadyRunning(args.state_dir.clone(), m.pid));
    }
    // Policy files are checked before anything starts (syntax, kinds, fields); references to
    // services are resolved by the controllers once the services run.
    let policy: Vec<PathBuf> = args
        .policy
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    mesh_federation::policy_files::check_files(&policy).map_err(UpError::Policy)?;
    let mesh_bin = std::env::current_exe().map_err(UpError::Binary)?;
    eprintln!(
        "mesh: starting {} clusters ({}), state in {}",
        topology.clusters.len(),
        topology
            .clusters
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        args.state_dir.display()
    );
    let mut apps = AppNamespaces::default();
    if args.transparent {
        if let NetworkMode::Loopback { reason } = netns::detect() {
            return Err(UpError::Transparent(reason));
        }
        let names: Vec<String> = topology.clusters.iter().map(|c| c.name.clone()).collect();
        apps = AppNamespaces::create(&names, &mesh_bin)
            .map_err(|e| UpError::Transparent(e.to_string()))?;
    }
    let placements = apps.placements();
    let mut set = ClusterSet::plan_placed(&topology, &args.state_dir, &mesh_bin, &placements);
    set.set_policy_files(&policy);
    if let Some(ttl) = args.cert_ttl {
        set.set_cert_ttl(ttl);
    }
    let mut set = set.launch().await?;
    println!("{}", instructions(&set, &apps, &args.state_dir));
    mesh_core::telemetry::shutdown_signal().await;
    eprintln!("mesh: stopping every process");
    set.stop().await;
    apps.teardown();
    eprintln!("mesh: stopped; state kept in {}", args.state_dir.display());
    Ok(())
}

fn instructions(set: &ClusterSet, apps: &AppNamespaces, state_dir: &std::path::Path) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("mesh: the cluster-set is up and linked.\n");
    let first = set
        .clusters
        .first()
        .map(|c| c.spec.name.clone())
        .unwrap_or_default();
    let last = set
        .clusters
        .last()
        .map(|c| c.spec.name.clone())
        .unwrap_or_default();
    for c in &set.clusters {
        let proxy = c
            .client_proxy()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "?".into());
        let admin = c
            .controller_admin()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "?".into());
        let _ = writeln!(
            out,
            "\n{} (region {}), controller admin http://{admin} (token for changes: {})",
            c.spec.name,
            c.spec.region,
            state_dir
                .join(&c.spec.name)
                .join(mesh_launcher::admin_client::ADMIN_TOKEN_FILE)
                .display()
        );
        let curl = |target: &str| match apps.get(&c.spec.name) {
            Some(app) => app.exec(&format!("curl {target}")),
            None => format!("curl -x http://{proxy} {target}"),
        };
        let _ = writeln!(out, "  {}", curl("http://echo.demo.svc.clusterset.local/"));
        let _ = writeln!(
            out,
            "  {}",
            curl(&format!("http://echo.demo.svc.{last}.clusterset.local/"))
        );
        if let Some(dns) = c.controller_dns() {
            let _ = writeln!(
                out,
                "  dig @{} -p {} echo.demo.svc.clusterset.local",
                dns.ip(),
                dns.port()
            );
        }
    }
    let pids: Vec<String> = set
        .cluster(&first)
        .map(|c| {
            c.processes
                .iter()
                .filter(|(n, _)| n.starts_with("echo-"))
                .filter_map(|(_, p)| p.pid())
                .map(|p| p.to_string())
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "\nSee failover: kill {first}'s echo replicas (kill {}) and repeat the first curl of {first}:\n\
         the answer now comes from the next region. `mesh status --state-dir {}` shows links,\n\
         endpoints, breakers and failovers. Logs are in {}/logs. Ctrl-C stops everything.",
        pids.join(" "),
        state_dir.display(),
        state_dir.display()
    );
    out
}
