//! The controller's flags: parsing, rendering back and every refusal.
use clap::Parser;

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ControllerArgs,
}

fn parse(extra: &[&str]) -> Result<ControllerConfig, FederationError> {
    let mut argv = vec!["mesh", "--cluster", "us-east", "--state-dir", "/tmp/x"];
    argv.extend_from_slice(extra);
    ControllerConfig::from_args(Cli::parse_from(argv).args)
}

#[test]
fn defaults_are_sensible() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.region, "us-east");
    assert_eq!(c.control, "127.0.0.1:0".parse().unwrap());
    assert_eq!(c.lease_grace, Duration::from_secs(30));
    assert_eq!(c.registration_ttl, Duration::from_secs(3));
    assert_eq!(c.cert_ttl, Duration::from_secs(86_400));
    assert!(c.region_priority.is_empty());
}

#[test]
fn region_priority_is_a_comma_list_of_labels() {
    let c = parse(&["--region", "us", "--region-priority", "eu,ap"]).unwrap();
    assert_eq!(c.region_priority, ["eu", "ap"]);
    let err = parse(&["--region-priority", "eu,EU_1"]).unwrap_err();
    assert!(err.to_string().contains("--region-priority"), "{err}");
    let err = parse(&["--region-priority", "eu,eu"]).unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");
}

#[test]
fn bad_values_name_the_flag() {
    let err = ControllerConfig::from_args(ControllerArgs {
        cluster: "Us East".into(),
        ..Cli::parse_from(["mesh", "--cluster", "x", "--state-dir", "d"]).args
    })
    .unwrap_err();
    assert!(err.to_string().starts_with("invalid --cluster"), "{err}");
    let err = parse(&["--cert-ttl", "9s"]).unwrap_err();
    assert!(err.to_string().contains("--cert-ttl"), "{err}");
    assert!(err.to_string().contains("at least 10s"), "{err}");
    assert_eq!(
        parse(&["--cert-ttl", "10s"]).unwrap().cert_ttl,
        Duration::from_secs(10)
    );
    let err = parse(&["--registration-ttl", "0s"]).unwrap_err();
    assert!(err.to_string().contains("--registration-ttl"), "{err}");
    let err = parse(&["--lease-grace", "0ms"]).unwrap_err();
    assert!(err.to_string().contains("--lease-grace"), "{err}");
}

#[test]
fn dns_upstreams_are_addresses_in_order_and_never_this_server() {
    let c = parse(&["--dns-upstream", "10.96.0.10:53, 127.0.0.1:5300"]).unwrap();
    assert_eq!(
        c.dns.forward.upstreams,
        [
            "10.96.0.10:53".parse().unwrap(),
            "127.0.0.1:5300".parse().unwrap()
        ]
    );
    assert_eq!(c.dns.forward.timeout, Duration::from_secs(2));
    assert_eq!(c.dns.forward.max_inflight, 512);
    assert!(parse(&[]).unwrap().dns.forward.upstreams.is_empty());
    for (bad, says) in [
        (
            &["--dns-upstream", "kube-dns.kube-system.svc:53"][..],
            "kube-dns.kube-system.svc:53 names its host",
        ),
        (
            &["--dns-upstream", "10.0.0.1:0"],
            "10.0.0.1:0 is not an address",
        ),
        (
            &["--dns-upstream", "0.0.0.0:53"],
            "0.0.0.0:53 is not an address",
        ),
        (
            &["--dns-upstream", "10.0.0.1:53,10.0.0.1:53"],
            "listed twice",
        ),
        (
            &[
                "--dns",
                "127.0.0.1:5353",
                "--dns-upstream",
                "127.0.0.1:5353",
            ],
            "would loop",
        ),
        (&["--dns-forward-timeout", "10ms"], "--dns-forward-timeout"),
        (
            &["--dns-forward-max-inflight", "0"],
            "--dns-forward-max-inflight",
        ),
    ] {
        let err = parse(bad).unwrap_err().to_string();
        assert!(err.contains(says), "{bad:?}: {err}");
        if bad[0] == "--dns-upstream" || bad.get(2) == Some(&"--dns-upstream") {
            assert!(err.contains("--dns-upstream"), "{err}");
        }
    }
    // Not host:port at all: clap refuses it naming the flag.
    let err = Cli::try_parse_from([
        "mesh",
        "--cluster",
        "a",
        "--state-dir",
        "d",
        "--dns-upstream",
        "10.0.0.1",
    ])
    .err()
    .expect("no port");
    assert!(err.to_string().contains("--dns-upstream"), "{err}");
}

#[test]
fn argv_round_trips_through_parsing() {
    let customised = Cli::parse_from([
        "mesh",
        "--cluster",
        "us-east",
        "--region",
        "us",
        "--state-dir",
        "/state/us-east",
        "--region-priority",
        "eu,ap",
        "--lease-grace",
        "1m 30s",
        "--services-file",
        "/state/services.yaml",
        "--ready-file",
        "/state/run/controller.json",
        "--dns-upstream",
        "10.96.0.10:53,[fd00::10]:53",
        "--dns-forward-timeout",
        "1500ms",
    ])
    .args;
    let defaults = Cli::parse_from(["mesh", "--cluster", "a", "--state-dir", "d"]).args;
    for args in [customised, defaults] {
        let argv = std::iter::once("mesh".to_string()).chain(args.to_argv().into_vec());
        assert_eq!(Cli::try_parse_from(argv).unwrap().args, args);
    }
}

#[test]
fn the_webhook_needs_kubernetes_and_its_settings_file() {
    let k8s = ["mesh", "--cluster", "c", "--kubernetes", "--pod-name", "p"];
    let parse_k8s = |extra: &[&str]| {
        let argv: Vec<&str> = k8s.iter().chain(extra).copied().collect();
        Cli::try_parse_from(argv).map(|c| c.args)
    };
    let args = parse_k8s(&[
        "--webhook",
        "0.0.0.0:15017",
        "--webhook-san",
        "192.0.2.7,injector.example.org",
        "--injection-config",
        "/etc/mesh/injection/settings.yaml",
    ])
    .unwrap();
    let argv = std::iter::once("mesh".to_string()).chain(args.to_argv().into_vec());
    assert_eq!(Cli::try_parse_from(argv).unwrap().args, args);
    let webhook = ControllerConfig::from_args(args).unwrap().webhook.unwrap();
    assert_eq!(
        webhook.ips,
        ["192.0.2.7".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(webhook.dns_names, ["injector.example.org"]);
    assert_eq!(webhook.configuration, "mesh-sidecar-injector");

    let err =
        ControllerConfig::from_args(parse_k8s(&["--webhook", "0.0.0.0:1"]).unwrap()).unwrap_err();
    assert!(err.to_string().contains("--injection-config"), "{err}");
    let err = ControllerConfig::from_args(
        parse_k8s(&[
            "--webhook",
            "0.0.0.0:1",
            "--injection-config",
            "f",
            "--webhook-san",
            "Not A Name",
        ])
        .unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--webhook-san"), "{err}");
    // Not without Kubernetes mode.
    let err = parse(&["--webhook", "0.0.0.0:1", "--injection-config", "f"]).unwrap_err();
    assert!(err.to_string().starts_with("invalid --webhook"), "{err}");
}

#[test]
fn durations_are_written_as_durations() {
    let c = parse(&["--lease-grace", "1m 30s", "--registration-ttl", "500ms"]).unwrap();
    assert_eq!(c.lease_grace, Duration::from_secs(90));
    assert_eq!(c.registration_ttl, Duration::from_millis(500));
    let err = Cli::try_parse_from([
        "mesh",
        "--cluster",
        "a",
        "--state-dir",
        "d",
        "--lease-grace",
        "30 parsecs",
    ])
    .err()
    .expect("a bad duration is refused");
    assert!(err.to_string().contains("--lease-grace"), "{err}");
    assert!(
        Cli::try_parse_from([
            "mesh",
            "--cluster",
            "a",
            "--state-dir",
            "d",
            "--lease-grace-ms",
            "1"
        ])
        .is_err()
    );
}
