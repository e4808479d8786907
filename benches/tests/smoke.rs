//! CI smoke run of the whole harness: every path, the QUIC link and the control plane at tiny
//! rates for about a second each, through the real `mesh` binary and the real nginx and
//! HAProxy. It checks that every part works and produces a report; it asserts no timing, so the
//! benchmark cannot silently rot without making CI flaky.

use std::path::PathBuf;
use std::process::Command;

use mesh_benches::report::RunReport;

/// The `mesh` binary beside `mesh-bench` in `target/<profile>/` (built by `cargo build`).
fn mesh_bin() -> PathBuf {
    let beside = PathBuf::from(env!("CARGO_BIN_EXE_mesh-bench")).with_file_name("mesh");
    if beside.exists() {
        return beside;
    }
    let fallback = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/mesh");
    assert!(
        fallback.exists(),
        "the mesh binary is missing (looked for {} and {}): run `cargo build -p mesh-cli` (CI \
         runs `cargo build --workspace` before the tests)",
        beside.display(),
        fallback.display()
    );
    fallback
}

#[test]
fn every_path_of_the_harness_works_at_tiny_rates() -> anyhow::Result<()> {
    for tool in ["nginx", "haproxy", "taskset"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()?
            .status
            .success();
        assert!(
            found,
            "`{tool}` is not installed: the harness compares against it (apt-get install nginx \
             haproxy util-linux; .ci/run installs them)"
        );
    }
    let scratch = std::env::temp_dir().join(format!("mesh-bench-smoke-{}", std::process::id()));
    let out = scratch.join("results");
    let status = Command::new(env!("CARGO_BIN_EXE_mesh-bench"))
        .args(["compare", "--mesh-bin"])
        .arg(mesh_bin())
        .arg("--out")
        .arg(&out)
        .arg("--work-dir")
        .arg(scratch.join("work"))
        .args([
            "--rates",
            "50",
            "--h2-rates",
            "50",
            "--connections",
            "2",
            "--warmup-ms",
            "200",
            "--duration-ms",
            "1000",
            "--rounds",
            "1",
            "--max-duration-ms",
            "500",
            "--max-connections",
            "2",
            "--link-mib",
            "1",
            "--link-setup-samples",
            "2",
            "--cp-sizes",
            "10",
            "--cp-trials",
            "1",
        ])
        .status()?;
    assert!(
        status.success(),
        "mesh-bench compare failed ({status}); process logs are under {}",
        scratch.join("work").display()
    );

    let report: RunReport = serde_json::from_slice(&std::fs::read(out.join("results.json"))?)?;
    let ids: Vec<&str> = report.paths.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "direct",
            "sidecar",
            "sidecar-routes",
            "sidecar-pair",
            "cross-cluster",
            "nginx",
            "haproxy"
        ]
    );
    for path in &report.paths {
        assert_eq!(
            path.runs.len(),
            2,
            "{}: one HTTP/1.1 and one HTTP/2 run",
            path.id
        );
        for run in &path.runs {
            assert!(
                run.ok > 0,
                "{} {:?}: nothing succeeded",
                path.id,
                run.protocol
            );
            assert_eq!(
                run.errors, 0,
                "{} {:?}: {:?}",
                path.id, run.protocol, run.first_error
            );
            assert_eq!(run.added_us.is_some(), path.id != "direct", "{}", path.id);
        }
        let max = path
            .max_throughput
            .as_ref()
            .expect("maximum throughput measured");
        assert!(max.rps > 0.0, "{}", path.id);
        assert!(
            path.processes.iter().all(|p| p.rss_idle_bytes > 0),
            "{}: {:?}",
            path.id,
            path.processes
        );
    }
    assert_eq!(
        report.path("cross-cluster").map(|p| p.processes.len()),
        Some(4)
    );
    let link = report.link.as_ref().expect("the link was measured");
    assert!(
        link.quic
            .iter()
            .chain(&link.tcp_tls)
            .all(|r| r.bytes > 0 && r.mib_per_s > 0.0)
    );
    assert_eq!(link.setup_quic_cold.count, 2);
    let cp = report
        .control_plane
        .as_ref()
        .expect("the control plane was measured");
    assert_eq!(cp.sizes.len(), 1);
    assert_eq!(cp.sizes[0].samples_ms.len(), 1);
    assert!(cp.sizes[0].controller_rss_bytes > 0);
    assert_eq!(report.targets.len(), 7);
    let md = std::fs::read_to_string(out.join("results.md"))?;
    assert!(md.contains("## Targets"), "{md}");
    let svg = std::fs::read_to_string(out.join("latency.svg"))?;
    assert!(svg.contains("<polyline"), "{svg}");
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
