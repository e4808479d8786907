//! App namespaces: per cluster a network namespace that stands for a workload's pod, with
//! transparent capture (`mesh init`) and the cluster's mesh DNS as its resolver, joined to the
//! host by a veth pair. The cluster's processes bind the host end's address (so the namespace
//! reaches every one of them through its default route) and its client sidecar runs inside, as
//! the user capture exempts. `mesh up --transparent` and the transparent chaos scenario use it:
//! `ip netns exec mesh-<cluster> curl http://echo.demo.svc.clusterset.local/` then works with no
//! proxy setting.
//!
//! Names are fixed (`mesh-<cluster>`, veths `meshv<i>`/`mesha<i>`, `10.215.<i>.0/24`) so the
//! printed commands are short; leftovers of an earlier run are removed first, so two
//! transparent cluster-sets cannot run on one host at once.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use mesh_launcher::cluster_set::{ClientPlacement, Placement};

use super::shell::{argv, run};
use super::{NetError, kill_inside};

/// The uid client sidecars run as (`mesh init --proxy-uid`'s default, Istio's too).
pub const PROXY_UID: u32 = 1337;
/// The client sidecar's outbound port inside its namespace (`mesh init --outbound-port`).
pub const OUTBOUND_PORT: u16 = 15001;
/// The client sidecar's inbound port (`mesh init --inbound-port`).
pub const INBOUND_PORT: u16 = 15006;

/// One cluster's app namespace.
#[derive(Debug, Clone)]
pub struct AppNamespace {
    /// The cluster.
    pub cluster: String,
    /// The namespace, `mesh-<cluster>`.
    pub ns: String,
    /// The host end's address: the cluster's processes bind it, the namespace's default route
    /// and resolver point at it.
    pub host_ip: Ipv4Addr,
    /// The namespace end's address.
    pub app_ip: Ipv4Addr,
    host_if: String,
}

impl AppNamespace {
    /// Where the cluster's processes go: the host end's address, the DNS on port 53 there, the
    /// client sidecar inside the namespace as [`PROXY_UID`].
    pub fn placement(&self) -> Placement {
        let uid = PROXY_UID.to_string();
        Placement {
            bind_ip: IpAddr::V4(self.host_ip),
            exec_prefix: Vec::new(),
            dns: Some(SocketAddr::new(IpAddr::V4(self.host_ip), 53)),
            client: Some(ClientPlacement {
                exec_prefix: argv(&[
                    "ip",
                    "netns",
                    "exec",
                    &self.ns,
                    "setpriv",
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                    "--",
                ]),
                admin_ip: IpAddr::V4(self.app_ip),
                outbound: SocketAddr::from(([127, 0, 0, 1], OUTBOUND_PORT)),
                uid: Some(PROXY_UID),
            }),
        }
    }

    /// A command line that runs `args` inside the namespace, as printed for users.
    pub fn exec(&self, args: &str) -> String {
        format!("ip netns exec {} {args}", self.ns)
    }
}

/// The app namespaces of a cluster-set; removed by [`AppNamespaces::teardown`] and on drop.
#[derive(Debug, Default)]
pub struct AppNamespaces {
    /// One per cluster, in topology order.
    pub namespaces: Vec<AppNamespace>,
}

impl AppNamespaces {
    /// Creates one namespace per cluster, with capture set up by `mesh_bin init`.
    pub fn create(clusters: &[String], mesh_bin: &Path) -> Result<Self, NetError> {
        let mut set = Self::default();
        for (i, cluster) in clusters.iter().enumerate() {
            let index = u8::try_from(i).map_err(|_| NetError::NoSubnet)?;
            let app = AppNamespace {
                cluster: cluster.clone(),
                ns: format!("mesh-{cluster}"),
                host_ip: Ipv4Addr::new(10, 215, index, 1),
                app_ip: Ipv4Addr::new(10, 215, index, 2),
                host_if: format!("meshv{i}"),
            };
            remove(&app);
            // Recorded before it exists, so a half-made one is removed too.
            set.namespaces.push(app.clone());
            if let Err(e) = build(&app, i, mesh_bin) {
                set.teardown();
                return Err(e);
            }
        }
        Ok(set)
    }

    /// Placements of every cluster, for the launcher.
    pub fn placements(&self) -> BTreeMap<String, Placement> {
        self.namespaces
            .iter()
            .map(|a| (a.cluster.clone(), a.placement()))
            .collect()
    }

    /// The namespace of `cluster`.
    pub fn get(&self, cluster: &str) -> Option<&AppNamespace> {
        self.namespaces.iter().find(|a| a.cluster == cluster)
    }

    /// Removes every namespace, its veth and its resolver file (idempotent).
    pub fn teardown(&mut self) {
        for app in self.namespaces.drain(..) {
            remove(&app);
        }
    }
}

impl Drop for AppNamespaces {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn build(app: &AppNamespace, i: usize, mesh_bin: &Path) -> Result<(), NetError> {
    let ns = app.ns.as_str();
    let app_if = format!("mesha{i}");
    let host_cidr = format!("{}/24", app.host_ip);
    let app_cidr = format!("{}/24", app.app_ip);
    let host = app.host_ip.to_string();
    for cmd in [
        argv(&["ip", "netns", "add", ns]),
        argv(&[
            "ip",
            "link",
            "add",
            &app.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &app_if,
        ]),
        argv(&["ip", "link", "set", &app_if, "netns", ns]),
        argv(&["ip", "addr", "add", &host_cidr, "dev", &app.host_if]),
        argv(&["ip", "link", "set", &app.host_if, "up"]),
        argv(&["ip", "-n", ns, "addr", "add", &app_cidr, "dev", &app_if]),
        argv(&["ip", "-n", ns, "link", "set", &app_if, "up"]),
        argv(&["ip", "-n", ns, "link", "set", "lo", "up"]),
        argv(&["ip", "-n", ns, "route", "add", "default", "via", &host]),
    ] {
        run(&cmd)?;
    }
    // `ip netns exec` mounts this over /etc/resolv.conf for everything run in the namespace.
    let dir = Path::new("/etc/netns").join(ns);
    let resolv = format!("# mesh up --transparent: the cluster's mesh DNS\nnameserver {host}\n");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("resolv.conf"), resolv))
        .map_err(|e| NetError::Command {
            command: format!("writing {}/resolv.conf", dir.display()),
            message: e.to_string(),
        })?;
    let bin = mesh_bin.display().to_string();
    run(&argv(&[
        "ip",
        "netns",
        "exec",
        ns,
        &bin,
        "init",
        "--outbound-port",
        &OUTBOUND_PORT.to_string(),
        "--inbound-port",
        &INBOUND_PORT.to_string(),
        "--proxy-uid",
        &PROXY_UID.to_string(),
    ]))?;
    Ok(())
}

fn remove(app: &AppNamespace) {
    kill_inside(&app.ns);
    let _ = run(&argv(&["ip", "netns", "del", &app.ns]));
    let _ = run(&argv(&["ip", "link", "del", &app.host_if]));
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&app.ns));
}
