//! The real binary end to end: `mesh up` starts, a request through `curl -x` is answered, SIGINT
//! stops every process; broken input fails with messages naming the problem.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use mesh_launcher::cluster_set::{Signal, read_manifest, send_signal};
use support::{Scratch, eventually, mesh_bin};

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purposes; /proc shows its state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split(' ').nth(2).is_none_or(|s| s != "Z"),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn mesh_up_serves_curl_and_stops_everything_on_sigint() {
    let scratch = Scratch::new("up");
    let mut up = tokio::process::Command::new(mesh_bin())
        .args(["up", "--ephemeral-ports", "--state-dir"])
        .arg(&scratch.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = Instant::now();
    let manifest = loop {
        if let Ok(m) = read_manifest(&scratch.0) {
            break m;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "mesh up did not become ready"
        );
        assert!(up.try_wait().unwrap().is_none(), "mesh up exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let proxy = manifest.clusters[0].client_proxy.unwrap();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "-x"])
        .arg(format!("http://{proxy}"))
        .arg("http://echo.demo.svc.clusterset.local/")
        .output()
        .await
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("x-mesh-cluster: us-east"),
        "{text}"
    );
    assert!(text.contains("cluster=us-east"), "{text}");

    let pids: Vec<u32> = manifest
        .clusters
        .iter()
        .flat_map(|c| c.processes.values().filter_map(|p| p.pid))
        .collect();
    assert!(pids.len() >= 18, "{} processes", pids.len());
    send_signal(up.id().unwrap(), Signal::Int).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait())
        .await
        .expect("mesh up exits")
        .unwrap();
    assert!(status.success(), "{status}");
    eventually(Duration::from_secs(5), "no child left", || async {
        pids.iter().all(|p| !alive(*p))
    })
    .await;
    assert!(
        read_manifest(&scratch.0).is_err(),
        "manifest removed on stop"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_broken_topology_names_file_line_and_field() {
    let scratch = Scratch::new("topo");
    let file = scratch.0.join("topology.yaml");
    std::fs::write(&file, "clusters:\n  - name: us-east\n    replicas: 2\n").unwrap();
    let out = tokio::process::Command::new(mesh_bin())
        .args(["up", "--state-dir"])
        .arg(&scratch.0)
        .arg("--topology")
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("topology.yaml") && err.contains("line 3") && err.contains("replicas"),
        "{err}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_port_in_use_is_reported_with_component_and_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = tokio::process::Command::new(mesh_bin())
        .args([
            "demo-app",
            "--cluster",
            "us-east",
            "--replica",
            "echo-0",
            "--listen",
        ])
        .arg(addr.to_string())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("demo-app")
            && err.contains(&addr.to_string())
            && err.contains("already in use"),
        "{err}"
    );
}
