//! Two real API servers, started once for this test binary, each answering a real client.
//!
//! These tests never skip: when the binaries cannot be built (no Go toolchain) they fail with the
//! reason. CI installs Go.

use std::process::{Command, Output};

use mesh_k8s_testenv::{Cluster, TestEnv};

const CLUSTERS: [&str; 2] = ["east", "west"];

fn env() -> &'static TestEnv {
    mesh_k8s_testenv::shared(&CLUSTERS)
}

/// Runs `cmd`, failing the test with its output and the cluster's logs when it fails.
fn run(cluster: &Cluster, mut cmd: Command, stdin: Option<&str>) -> String {
    use std::io::Write;
    use std::process::Stdio;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes()).expect("writing stdin");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("waiting for the client");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    );
    assert!(
        status.success(),
        "{cmd:?} failed ({status}) against cluster {}:\nstdout: {stdout}\nstderr: {stderr}\n{}",
        cluster.name(),
        cluster.log_tails()
    );
    stdout
}

#[test]
fn each_cluster_answers_readyz_through_its_own_kubeconfig() {
    let env = env();
    assert_eq!(env.clusters().len(), CLUSTERS.len());
    for cluster in env.clusters() {
        let mut cmd = cluster.kubectl();
        cmd.args(["get", "--raw", "/readyz"]);
        assert_eq!(run(cluster, cmd, None).trim(), "ok");
    }
}

#[test]
fn clusters_are_separate_and_report_the_stamped_version() {
    let env = env();
    let [east, west] = env.clusters() else {
        panic!("expected two clusters");
    };
    assert_ne!(east.server(), west.server());
    let mut cmd = east.kubectl();
    cmd.args(["get", "--raw", "/version"]);
    let version = run(east, cmd, None);
    // Without the -ldflags stamps the server would say v0.0.0-master, which Helm's kubeVersion
    // checks reject.
    assert!(
        version.contains("\"gitVersion\": \"v1.") && !version.contains("v0.0.0"),
        "unexpected /version: {version}"
    );
}

#[test]
fn configmap_applied_to_one_cluster_exists_only_there() {
    let env = env();
    let [east, west] = env.clusters() else {
        panic!("expected two clusters");
    };
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: testenv-probe\n  \
                    namespace: default\ndata:\n  cluster: east\n";
    let mut apply = east.kubectl();
    apply.args(["apply", "--server-side", "-f", "-"]);
    run(east, apply, Some(manifest));

    let mut get = east.kubectl();
    get.args([
        "get",
        "configmap",
        "testenv-probe",
        "-n",
        "default",
        "-o",
        "jsonpath={.data.cluster}",
    ]);
    assert_eq!(run(east, get, None), "east");

    let mut absent = west.kubectl();
    absent.args([
        "get",
        "configmap",
        "-n",
        "default",
        "--field-selector",
        "metadata.name=testenv-probe",
        "-o",
        "name",
    ]);
    assert_eq!(
        run(west, absent, None).trim(),
        "",
        "west must not see east's objects"
    );
}

#[test]
fn helm_reaches_each_cluster() {
    let env = env();
    for cluster in env.clusters() {
        let mut version = cluster.helm();
        version.args(["version", "--short"]);
        let out = run(cluster, version, None);
        assert!(
            out.starts_with("v3.") || out.starts_with("v4."),
            "helm version: {out}"
        );
        // `helm list` talks to the API server (it reads release Secrets).
        let mut list = cluster.helm();
        list.args(["list", "--all-namespaces", "-q"]);
        assert_eq!(run(cluster, list, None).trim(), "");
    }
}
