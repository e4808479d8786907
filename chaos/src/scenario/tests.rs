use std::path::Path;
use std::time::Duration;

use super::*;

const GOOD: &str = "\
name: replicas-die
summary: all local replicas die, then return
fast: true
topology:
  clusters:
    - name: us-east
      region_priority: [us-west]
    - name: us-west
      region_priority: [us-east]
load:
  client: us-east
  rate: 100
duration: 20s
timeline:
  - at: 10s
    heal: replicas
  - at: 4s
    fault: kill
    id: replicas
    targets: [us-east/sidecar-echo-*, us-east/echo-*]
slos:
  - kind: failover_time
    fault: replicas
    cluster: us-west
    max: 2s
  - kind: failed_requests
    max_share: 0.01
  - kind: p99_latency
    phase: after
    fault: replicas
    settle: 2s
    max: 50ms
";

fn err(text: &str) -> String {
    parse(text, Path::new("s.yaml")).unwrap_err().to_string()
}

fn with(old: &str, new: &str) -> String {
    assert!(GOOD.contains(old), "{old}");
    GOOD.replacen(old, new, 1)
}

#[test]
fn a_good_scenario_loads_sorted_with_defaults() {
    let s = parse(GOOD, Path::new("s.yaml")).unwrap();
    assert_eq!(s.name, "replicas-die");
    assert!(s.fast);
    assert_eq!(s.load.protocol, Protocol::Mixed);
    assert_eq!(s.load.method, http::Method::PUT);
    assert_eq!(s.load.body_bytes, 1024);
    assert_eq!(s.load.host, "echo.demo.svc.clusterset.local");
    assert_eq!(s.timeline.len(), 2);
    assert_eq!(s.timeline[0].at, Duration::from_secs(4));
    let Action::Fault {
        id,
        fault: Fault::Kill { targets },
    } = &s.timeline[0].action
    else {
        panic!("{:?}", s.timeline[0]);
    };
    assert_eq!(id, "replicas");
    let names: Vec<String> = targets.iter().map(|t| t.process.clone()).collect();
    assert_eq!(
        names,
        ["echo-0", "sidecar-echo-0", "echo-1", "sidecar-echo-1"]
    );
    assert_eq!(s.heal_at("replicas"), Some(Duration::from_secs(10)));
    assert_eq!(s.slos.len(), 3);
    assert_eq!(s.slos[0].line, 22);
    assert!(
        matches!(&s.slos[2].kind, SloKind::P99Latency { phase: Phase::After { settle, .. }, .. } if *settle == Duration::from_secs(2))
    );
    assert!(!s.needs_namespaces());
}

#[test]
fn an_unknown_action_is_refused_with_its_line() {
    let e = err(&with("fault: kill", "fault: explode"));
    assert!(
        e.starts_with("s.yaml: line 18: field `fault`: unknown action `explode`"),
        "{e}"
    );
    assert!(e.contains("kill, freeze"), "{e}");
}

#[test]
fn an_unknown_field_is_refused_with_its_line() {
    let e = err(&with(
        "    max_share: 0.01\n",
        "    max_share: 0.01\n    colour: red\n",
    ));
    assert!(
        e.starts_with("s.yaml:") && e.contains("line 28") && e.contains("colour"),
        "{e}"
    );
}

#[test]
fn a_target_missing_from_the_topology_is_refused() {
    let e = err(&with("us-east/echo-*]", "us-east/echo-9]"));
    assert!(
        e.contains("line 20: field `targets`") && e.contains("matches no process"),
        "{e}"
    );
    let e = err(&with("us-east/echo-*]", "mars/echo-*]"));
    assert!(e.contains("cluster `mars` is not in the topology"), "{e}");
    let e = err(&with("cluster: us-west", "cluster: mars"));
    assert!(e.contains("line 24: field `cluster`"), "{e}");
}

#[test]
fn a_heal_before_its_fault_is_refused() {
    let e = err(&with("at: 10s", "at: 3s"));
    assert!(
        e.contains("line 15: field `at`") && e.contains("comes before its fault"),
        "{e}"
    );
    let e = err(&with("heal: replicas", "heal: other"));
    assert!(e.contains("no fault has id `other`"), "{e}");
}

#[test]
fn an_slo_without_a_bound_is_refused() {
    let e = err(&with("    max_share: 0.01\n", ""));
    assert!(
        e.contains("line 26: field `kind`") && e.contains("has no bound"),
        "{e}"
    );
    let e = err(&with("    max: 2s\n", ""));
    assert!(
        e.contains("line 22") && e.contains("has no bound: set max"),
        "{e}"
    );
}

#[test]
fn parameters_that_do_not_apply_are_refused() {
    let e = err(&with(
        "    id: replicas\n",
        "    id: replicas\n    jitter: 5ms\n",
    ));
    assert!(e.contains("action `kill` takes no `jitter`"), "{e}");
    let e = err(&with(
        "    heal: replicas\n",
        "    heal: replicas\n    targets: [us-east/gateway]\n",
    ));
    assert!(e.contains("a heal takes no parameters"), "{e}");
}

#[test]
fn other_semantic_errors_name_line_and_field() {
    let e = err(&with("rate: 100", "rate: 0"));
    assert!(e.contains("line 12: field `rate`"), "{e}");
    let e = err(&with("client: us-east", "client: mars"));
    assert!(e.contains("line 11: field `client`"), "{e}");
    let e = err(&with("at: 4s", "at: 40s"));
    assert!(
        e.contains("field `at`") && e.contains("not inside the run"),
        "{e}"
    );
    let e = err(&with("    id: replicas\n", ""));
    assert!(e.contains("needs an `id`"), "{e}");
    let e = err(&with("phase: after", "phase: later"));
    assert!(e.contains("`later` is not one of"), "{e}");
    let e = err(&with("kind: failover_time", "kind: uptime"));
    assert!(
        e.contains("line 22: field `kind`: unknown SLO kind `uptime`"),
        "{e}"
    );
    let e = err(&with("max_share: 0.01", "max_share: 2"));
    assert!(e.contains("between 0 and 1"), "{e}");
}

#[test]
fn namespace_faults_are_recognised_and_relays_planned() {
    let text = with(
        "    fault: kill\n    id: replicas\n    targets: [us-east/sidecar-echo-*, us-east/echo-*]\n",
        "    fault: partition\n    id: replicas\n    clusters: [us-east, us-west]\n    direction: one_way\n",
    );
    let s = parse(&text, Path::new("s.yaml")).unwrap();
    assert!(s.needs_namespaces());
    let text = with(
        "    fault: kill\n    id: replicas\n    targets: [us-east/sidecar-echo-*, us-east/echo-*]\n",
        "    fault: impair\n    id: replicas\n    clusters: [us-west, us-east]\n    delay: 150ms\n    loss: 0.05\n",
    );
    let s = parse(&text, Path::new("s.yaml")).unwrap();
    assert!(!s.needs_namespaces());
    assert_eq!(
        s.relayed_pairs(),
        [("us-east".to_string(), "us-west".to_string())]
    );
}

#[test]
fn a_directory_loads_every_file_and_refuses_duplicate_names() {
    let dir = std::env::temp_dir().join(format!("mesh-chaos-scn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    assert!(matches!(load_path(&dir), Err(ScenarioError::Empty(_))));
    std::fs::write(dir.join("a.yaml"), GOOD).unwrap();
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    assert_eq!(load_path(&dir).unwrap().len(), 1);
    std::fs::write(dir.join("b.yaml"), GOOD).unwrap();
    let e = load_path(&dir).unwrap_err().to_string();
    assert!(e.contains("b.yaml") && e.contains("already used by"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn served_share_can_name_a_demo_replica_of_the_cluster() {
    let slo =
        "  - kind: served_share\n    cluster: us-east\n    replica: echo-1\n    min_share: 0.9\n";
    let s = parse(&format!("{GOOD}{slo}"), Path::new("s.yaml")).unwrap();
    assert!(
        matches!(&s.slos[3].kind, SloKind::ServedShare { replica: Some(r), .. } if r == "echo-1")
    );
    let e = err(&format!("{GOOD}{}", slo.replace("echo-1", "echo-5")));
    assert!(
        e.contains("field `replica`") && e.contains("not a demo replica"),
        "{e}"
    );
    let e = err(&format!("{GOOD}{}", slo.replace("echo-1", "gateway")));
    assert!(e.contains("field `replica`"), "{e}");
}

#[test]
fn times_are_durations_and_a_bad_one_is_located() {
    let s = parse(
        &with("duration: 20s", "duration: 1m 30s"),
        Path::new("s.yaml"),
    )
    .unwrap();
    assert_eq!(s.duration, Duration::from_secs(90));
    let e = err(&with("at: 4s", "at: 4 parsecs"));
    assert!(
        e.starts_with("s.yaml: line 17") && e.contains("at: 4 parsecs"),
        "{e}"
    );
    // The old millisecond fields are unknown fields now, refused with their line.
    let e = err(&with("duration: 20s", "duration_ms: 20000"));
    assert!(
        e.contains("line 13") && e.contains("unknown field `duration_ms`"),
        "{e}"
    );
}

#[test]
fn capture_is_off_by_default_and_needs_namespaces_when_on() {
    let s = parse(GOOD, Path::new("s.yaml")).unwrap();
    assert!(!s.load.capture);
    assert!(!s.needs_namespaces());
    let captured = with("  rate: 100\n", "  rate: 100\n  capture: true\n");
    let s = parse(&captured, Path::new("s.yaml")).unwrap();
    assert!(s.load.capture);
    assert!(s.needs_namespaces(), "the load enters from a namespace");
    let bad = with("  rate: 100\n", "  rate: 100\n  capture: maybe\n");
    assert!(err(&bad).contains("capture"), "{}", err(&bad));
}

#[test]
fn a_certificate_lifetime_is_optional_and_has_a_floor() {
    let s = parse(GOOD, Path::new("good.yaml")).unwrap();
    assert_eq!(s.cert_ttl, None, "the controllers' default");
    let short = with(
        "      region_priority: [us-east]\n",
        "      region_priority: [us-east]\n  cert_ttl: 15s\n",
    );
    let s = parse(&short, Path::new("short.yaml")).unwrap();
    assert_eq!(s.cert_ttl, Some(Duration::from_secs(15)));
    let too_short = with(
        "      region_priority: [us-east]\n",
        "      region_priority: [us-east]\n  cert_ttl: 5s\n",
    );
    let e = err(&too_short);
    assert!(
        e.starts_with("s.yaml: line 10: field `cert_ttl`") && e.contains("at least 10s"),
        "{e}"
    );
}

#[test]
fn a_root_rotation_names_a_cluster_of_the_topology_and_needs_no_heal() {
    let rotation = "  - at: 12s\n    fault: rotate_root\n    id: rotation\n    cluster: us-east\n";
    let s = parse(
        &with("slos:\n", &format!("{rotation}slos:\n")),
        Path::new("s.yaml"),
    )
    .unwrap();
    let fault = &s.timeline.last().unwrap().action;
    assert!(
        matches!(fault, Action::Fault { fault: Fault::RotateRoot { cluster }, .. } if cluster == "us-east"),
        "{fault:?}"
    );
    let e = err(&with(
        "slos:\n",
        "  - at: 12s\n    fault: rotate_root\n    id: rotation\nslos:\n",
    ));
    assert!(
        e.contains("field `cluster`") && e.contains("needs `cluster`"),
        "{e}"
    );
    let e = err(&with(
        "slos:\n",
        &format!("{}slos:\n", rotation.replace("us-east", "ap-south")),
    ));
    assert!(e.contains("ap-south"), "{e}");
    let e = err(&with(
        "slos:\n",
        &format!("{rotation}  - at: 15s\n    heal: rotation\nslos:\n"),
    ));
    assert!(e.contains("rotation"), "{e}");
}
