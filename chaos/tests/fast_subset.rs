//! The fast subset of the chaos suite (scenarios marked `fast: true`: 1, 2, both halves of 4,
//! 6, 8 and 12, scenario 1 with transparent clients) and issue 12's certificate-expiry and
//! root-rotation scenarios, run inside `cargo test` against the built `mesh` binary, in network
//! namespaces. As root (CI) they must use namespaces and fail if they cannot; not as root they
//! say loudly that they skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One chaos run at a time: on two cores, parallel cluster-sets would measure each other's load
/// rather than the mesh.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `mesh` binary of this build (`target/<profile>/mesh`); integration tests of this crate
/// cannot use `CARGO_BIN_EXE_mesh`, which belongs to `mesh-cli`.
fn mesh_bin() -> PathBuf {
    let from_exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(|d| d.join("mesh")));
    let from_manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/mesh");
    match from_exe
        .into_iter()
        .chain([from_manifest])
        .find(|p| p.is_file())
    {
        Some(p) => p,
        None => panic!(
            "the mesh binary was not found next to this test or in target/debug: run `cargo build` first (CI's .ci/run builds everything before testing)"
        ),
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-chaos-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `mesh chaos run <selection>` on the shipped scenarios as root in network namespaces
/// and checks that every scenario in `expected` ran and every one that ran passed within
/// `max_wall_s`. Not as root: fails under `CI=true`, else says loudly that it skipped.
fn run_in_namespaces(tag: &str, selection: &[&str], expected: &[&str], max_wall_s: f64) {
    let in_ci = std::env::var_os("CI").is_some();
    if !is_root() {
        assert!(
            !in_ci,
            "CI runs as root: the chaos suite must run in network namespaces there"
        );
        eprintln!(
            "\n*** SKIPPED chaos scenarios {expected:?}: not root, so no network namespaces (run as root to include them) ***\n"
        );
        return;
    }
    let _one = exclusive();
    let out = scratch(tag);
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let run = Command::new(mesh_bin())
        .args(["chaos", "run"])
        .args(selection)
        .args(["--require-namespaces", "--out"])
        .arg(&out)
        .arg(&scenarios)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "chaos scenarios {expected:?} failed:\n{stdout}\n{stderr}\nreport and logs in {}",
        out.display()
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let ran: Vec<&str> = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for name in expected {
        assert!(ran.contains(name), "{name} did not run: {ran:?}");
    }
    for s in report["scenarios"].as_array().unwrap() {
        assert_eq!(s["network"], "namespaces", "{}", s["name"]);
        assert_eq!(s["status"], "passed", "{}", s["name"]);
        let wall = s["wall_s"].as_f64().unwrap();
        assert!(
            wall < max_wall_s,
            "{} took {wall:.0} s; it must stay under {max_wall_s:.0} s",
            s["name"]
        );
        assert!(
            out.join(format!("{}.svg", s["name"].as_str().unwrap()))
                .is_file()
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn the_fast_subset_passes_its_slos_in_network_namespaces() {
    run_in_namespaces(
        "fast",
        &["--fast"],
        &[
            "replicas-die",
            "remote-gateway-killed",
            "partition-two-way",
            "partition-one-way",
            "controller-killed",
            "slow-region",
            "capture-replicas-die",
        ],
        40.0,
    );
}

/// Issue 12's two scenarios: a gateway's certificate expiring under traffic (the link goes down
/// with its reason, traffic fails over, renewal heals it) and a root rotation under load with
/// no failed request. Longer than the fast subset (60 s of traffic each), so run on their own.
#[test]
fn the_certificate_expiry_and_root_rotation_scenarios_pass_in_network_namespaces() {
    run_in_namespaces(
        "zero-trust",
        &["--only", "certificate-expiry,root-rotation"],
        &["certificate-expiry", "root-rotation"],
        120.0,
    );
}

#[test]
fn a_bad_scenario_is_refused_before_anything_starts_with_file_line_and_reason() {
    let dir = scratch("bad");
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "name: bad\nsummary: x\ntopology:\n  clusters:\n    - name: us-east\nload: { client: us-east, rate: 10 }\nduration: 5s\ntimeline:\n  - { at: 1s, fault: explode, id: x, targets: [us-east/gateway] }\nslos:\n  - { kind: lost_requests, max_count: 0 }\n",
    )
    .unwrap();
    let run = Command::new(mesh_bin())
        .args(["chaos", "run", "--out"])
        .arg(dir.join("out"))
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("bad.yaml: line 9: field `fault`: unknown action `explode`"),
        "{stderr}"
    );
    assert!(
        !dir.join("out").exists(),
        "nothing may start for a refused scenario"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn list_shows_one_line_per_shipped_scenario() {
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let run = Command::new(mesh_bin())
        .args(["chaos", "list"])
        .arg(&scenarios)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(out.lines().count(), 15, "{out}");
    for needs_namespaces in ["partition-two-way", "capture-replicas-die"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(needs_namespaces) && l.contains("namespaces")),
            "{needs_namespaces}: {out}"
        );
    }
}

/// The SLOs can fail: scenario 1 with failover made impossible (every request pinned to
/// us-east by its cluster-specific name, as if failover were disabled) must fail, and say why.
#[test]
fn scenario_1_fails_clearly_when_failover_cannot_happen() {
    fails_clearly_when_pinned("01-replicas-die.yaml", "replicas-die", "us-east");
}

/// The same for scenario 2: pinned to us-west, whose gateway is killed, traffic cannot fail over
/// to eu-central.
#[test]
fn scenario_2_fails_clearly_when_failover_cannot_happen() {
    fails_clearly_when_pinned(
        "02-remote-gateway-killed.yaml",
        "remote-gateway-killed",
        "us-west",
    );
}

/// Runs the shipped scenario `file` with its load pinned to `cluster` by the cluster-specific
/// name, and checks the report fails `name` on its failover time ("never") and failed requests.
fn fails_clearly_when_pinned(file: &str, name: &str, cluster: &str) {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: the chaos suite must run in network namespaces there"
        );
        eprintln!("\n*** SKIPPED the broken-failover chaos check of {file}: not root ***\n");
        return;
    }
    let _one = exclusive();
    let dir = scratch(&format!("broken-{name}"));
    let original = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scenarios")
            .join(file),
    )
    .unwrap();
    let pinned = original.replace(
        "  client: us-east\n",
        &format!("  client: us-east\n  host: echo.demo.svc.{cluster}.clusterset.local\n"),
    );
    assert_ne!(
        pinned, original,
        "the load section of {file} changed; update this test"
    );
    let pinned_file = dir.join("pinned.yaml");
    std::fs::write(&pinned_file, pinned).unwrap();
    let run = Command::new(mesh_bin())
        .args(["chaos", "run", "--require-namespaces", "--out"])
        .arg(dir.join("out"))
        .arg(&pinned_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        !run.status.success(),
        "a run of {file} without failover passed:\n{stdout}"
    );
    assert!(stdout.contains(&format!("{name} [FAILED]")), "{stdout}");
    let slo_line = |kind: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(kind))
            .unwrap_or_default()
            .to_owned()
    };
    let failover = slo_line("failover_time");
    assert!(
        failover.contains("never") && failover.contains("FAIL"),
        "{stdout}"
    );
    assert!(slo_line("failed_requests").contains("FAIL"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
