//! Process selectors of fault targets (`us-east/gateway`, `us-east/echo-*`, `*/gateway`),
//! resolved against the processes the launcher starts for a topology.

use mesh_core::config::Topology;

use super::model::ProcessRef;

/// Every process of a topology, in launcher start order.
#[derive(Debug, Clone)]
pub struct ProcessCatalog {
    topology: Topology,
    processes: Vec<ProcessRef>,
}

impl ProcessCatalog {
    /// The processes the launcher starts for `topology` (controller, gateway, each replica's
    /// demo app then its sidecar, the client sidecar).
    pub fn of(topology: &Topology) -> Self {
        let mut processes = Vec::new();
        for c in &topology.clusters {
            let mut add = |p: String| {
                processes.push(ProcessRef {
                    cluster: c.name.clone(),
                    process: p,
                })
            };
            add("controller".into());
            add("gateway".into());
            for r in 0..c.echo_replicas {
                add(format!("echo-{r}"));
                add(format!("sidecar-echo-{r}"));
            }
            add("client".into());
        }
        Self {
            topology: topology.clone(),
            processes,
        }
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Processes matching `selector` (`<cluster>/<process>`; the cluster may be `*`, the process
    /// may end with `*`), or why none can.
    pub fn select(&self, selector: &str) -> Result<Vec<ProcessRef>, String> {
        let Some((cluster, process)) = selector.split_once('/') else {
            return Err(format!(
                "`{selector}` is not `<cluster>/<process>` (e.g. `us-east/gateway`, `us-east/echo-*`)"
            ));
        };
        if cluster != "*" && !self.topology.clusters.iter().any(|c| c.name == cluster) {
            let known: Vec<&str> = self
                .topology
                .clusters
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            return Err(format!(
                "cluster `{cluster}` is not in the topology (clusters: {})",
                known.join(", ")
            ));
        }
        let matches_process = |name: &str| match process.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == process,
        };
        let found: Vec<ProcessRef> = self
            .processes
            .iter()
            .filter(|p| (cluster == "*" || p.cluster == cluster) && matches_process(&p.process))
            .cloned()
            .collect();
        if found.is_empty() {
            let names: Vec<&str> = self
                .processes
                .iter()
                .filter(|p| cluster == "*" || p.cluster == cluster)
                .map(|p| p.process.as_str())
                .collect();
            let mut names = names;
            names.dedup();
            return Err(format!(
                "`{selector}` matches no process of the topology (processes: {})",
                names.join(", ")
            ));
        }
        Ok(found)
    }

    /// `targets` sorted in start order (an app before its sidecar, so a restarted sidecar finds
    /// its app).
    pub fn start_order(&self, mut targets: Vec<ProcessRef>) -> Vec<ProcessRef> {
        targets.sort_by_key(|t| {
            self.processes
                .iter()
                .position(|p| p == t)
                .unwrap_or(usize::MAX)
        });
        targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_resolve_exact_names_prefix_globs_and_any_cluster() {
        let cat = ProcessCatalog::of(&Topology::default_set());
        let names = |s: &str| -> Vec<String> {
            cat.select(s)
                .unwrap()
                .iter()
                .map(|p| p.to_string())
                .collect()
        };
        assert_eq!(names("us-east/gateway"), ["us-east/gateway"]);
        assert_eq!(
            names("us-west/echo-*"),
            ["us-west/echo-0", "us-west/echo-1"]
        );
        assert_eq!(
            names("*/gateway"),
            ["us-east/gateway", "us-west/gateway", "eu-central/gateway"]
        );
        assert_eq!(names("us-east/*").len(), 7);
        let e = cat.select("mars/gateway").unwrap_err();
        assert!(e.contains("`mars` is not in the topology"), "{e}");
        let e = cat.select("us-east/echo-7").unwrap_err();
        assert!(
            e.contains("matches no process") && e.contains("echo-1"),
            "{e}"
        );
        assert!(
            cat.select("gateway")
                .unwrap_err()
                .contains("<cluster>/<process>")
        );
    }

    #[test]
    fn start_order_puts_apps_before_their_sidecars() {
        let cat = ProcessCatalog::of(&Topology::default_set());
        let mut t = cat.select("us-east/sidecar-echo-*").unwrap();
        t.extend(cat.select("us-east/echo-*").unwrap());
        let ordered: Vec<String> = cat
            .start_order(t)
            .iter()
            .map(|p| p.process.clone())
            .collect();
        assert_eq!(
            ordered,
            ["echo-0", "sidecar-echo-0", "echo-1", "sidecar-echo-1"]
        );
    }
}
