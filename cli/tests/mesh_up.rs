//! The real binary end to end: `mesh up` starts, a request through `curl -x` is answered, SIGINT
//! stops every process; broken input fails with messages naming the problem.

mod support;

use std::process::Stdio;
use std::time::Duration;

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
    mesh_test_support::eventually(
        "mesh up to become ready (its manifest)",
        Duration::from_secs(90),
        async || {
            assert!(up.try_wait().unwrap().is_none(), "mesh up exited early");
            read_manifest(&scratch.0).is_ok()
        },
    )
    .await;
    let manifest = read_manifest(&scratch.0).expect("manifest");
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

    // The printed `dig` line works as printed (skipped without dig, except under CI=true).
    let stdout = up.stdout.take().expect("piped stdout");
    let dig_line = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim_start().starts_with("dig @") {
                return Some(line.trim().to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("mesh up prints a dig line");
    let have_dig = std::process::Command::new("dig").arg("-v").output().is_ok();
    assert!(
        have_dig || std::env::var("CI").as_deref() != Ok("true"),
        "`dig` is missing (install dnsutils)"
    );
    if have_dig {
        let mut words = dig_line.split_whitespace().skip(1);
        let out = std::process::Command::new("dig")
            .args(words.by_ref())
            .args(["+short", "+time=2", "+tries=1"])
            .output()
            .expect("dig runs");
        let answer = String::from_utf8_lossy(&out.stdout);
        assert!(
            answer.trim().starts_with("240.240."),
            "{dig_line}: {answer}"
        );
    }

    // `mesh check` finds the running set healthy, then names a link removed on one side only.
    let check = |json: bool| {
        let mut cmd = std::process::Command::new(mesh_bin());
        cmd.args(["check", "--state-dir"]).arg(&scratch.0);
        if json {
            cmd.arg("--json");
        }
        cmd.output().expect("mesh check runs")
    };
    let healthy = check(false);
    let report = String::from_utf8_lossy(&healthy.stdout).into_owned();
    assert!(
        healthy.status.success(),
        "mesh check of a healthy set:\n{report}"
    );
    assert!(
        report.contains("link us-west") && report.contains("trust eu-central"),
        "{report}"
    );
    let east_admin = manifest.clusters[0].controller_admin.unwrap();
    let token = mesh_launcher::admin_client::AdminTokens::in_state_dir(&scratch.0)
        .token_for(east_admin, "us-east")
        .expect("mesh up's admin token");
    mesh_launcher::admin_client::call_with(
        east_admin,
        Some(&token),
        http::Method::DELETE,
        "/v1/links/us-west",
        None,
    )
    .await
    .expect("unlink one side");
    let broken = check(true);
    assert!(!broken.status.success());
    let findings: serde_json::Value = serde_json::from_slice(&broken.stdout).expect("JSON");
    let failed: Vec<&serde_json::Value> = findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["ok"] == false)
        .collect();
    assert!(
        failed.iter().any(|f| f["cluster"] == "us-west"
            && f["check"] == "link us-east"
            && f["detail"]
                .as_str()
                .unwrap()
                .contains("us-west links to us-east, but us-east has no link back")),
        "{findings:#}"
    );

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
