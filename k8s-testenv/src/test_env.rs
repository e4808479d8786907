//! A set of clusters started one after another, and the per-test-binary shared fixture.

use std::collections::HashSet;
use std::sync::OnceLock;

use crate::binaries::{Binaries, ensure_binaries, k8s_dir};
use crate::cluster::Cluster;
use crate::error::Error;
use crate::run_dir;

/// Running clusters. Dropping it stops them all and removes their folders, also when a test
/// panics (unwinding drops it).
#[derive(Debug)]
pub struct TestEnv {
    binaries: Binaries,
    clusters: Vec<Cluster>,
}

impl TestEnv {
    /// Builds the binaries if needed, then starts one cluster per name, one after another (the
    /// API servers' start-up is CPU-bound; starting them together on 2 cores only makes each
    /// slower). Names must be distinct DNS labels: they name kubeconfig contexts.
    pub fn start(names: &[&str]) -> Result<Self, Error> {
        let mut seen = HashSet::new();
        for name in names {
            let label_ok = !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !label_ok || !seen.insert(*name) {
                return Err(Error::Invalid(format!(
                    "cluster names must be distinct DNS labels, got {names:?}"
                )));
            }
        }
        let binaries = ensure_binaries()?;
        let run_root = k8s_dir().join("run");
        run_dir::sweep_stale(&run_root);
        let mut clusters = Vec::with_capacity(names.len());
        for name in names {
            let dir = run_dir::create(&run_root, name)?;
            // On error, the clusters already started are dropped, so stopped.
            clusters.push(Cluster::start(name, dir, &binaries)?);
        }
        Ok(Self { binaries, clusters })
    }

    /// The clusters, in the order of the names given to [`TestEnv::start`].
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name() == name)
    }

    /// The binaries the clusters run, and `kubectl` and `helm` of the same build.
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }
}

/// Clusters shared by every test of one test binary, started by the first caller: starting an
/// API server costs seconds of CPU, so a test binary should pay it once, not once per test.
///
/// Later callers must ask for the same names. Rust never drops statics, so these clusters are
/// not stopped by `Drop`: their processes die with the test process (see the spawner), and their
/// folders are removed by the next [`TestEnv::start`] on this machine.
///
/// # Panics
///
/// When the clusters cannot be started (with the reason and the logs' tails), or when called
/// with other names than the first call.
pub fn shared(names: &[&str]) -> &'static TestEnv {
    static SHARED: OnceLock<(Vec<String>, Result<TestEnv, String>)> = OnceLock::new();
    let (first_names, env) = SHARED.get_or_init(|| {
        let env = TestEnv::start(names).map_err(|e| e.to_string());
        (names.iter().map(|n| n.to_string()).collect(), env)
    });
    assert_eq!(
        first_names, names,
        "mesh_k8s_testenv::shared called with other cluster names than its first call"
    );
    match env {
        Ok(env) => env,
        Err(e) => panic!("starting the shared Kubernetes test clusters failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_duplicate_or_invalid_names_before_building_anything() {
        for names in [&["east", "east"][..], &["East"], &[""], &["a_b"]] {
            match TestEnv::start(names) {
                Err(Error::Invalid(msg)) => assert!(msg.contains("DNS labels"), "{msg}"),
                other => panic!("{names:?}: expected Error::Invalid, got {other:?}"),
            }
        }
    }
}
