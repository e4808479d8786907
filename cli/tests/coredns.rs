//! A real CoreDNS in front of a running cluster-set's DNS, configured with exactly the stanza
//! that `charts/mesh/README.md` tells operators to add to their Corefile (the address and port
//! changed to the test's): `dig @coredns echo.demo.svc.clusterset.local` gets the mesh's VIP
//! (over UDP and TCP), an unknown service in the zone gets the mesh's NXDOMAIN, and a name
//! outside the zone is answered by CoreDNS itself (its `hosts` plugin; there is no internet).
//!
//! CoreDNS is built from its Go module by `mesh-k8s-testenv` (`tools/k8s-testenv/coredns/`,
//! once, under a lock). Without Go, or without `dig`, the test is skipped with a message,
//! except under `CI=true`, where it fails.

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mesh_core::config::Topology;
use support::{Running, Scratch, dig};

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The CoreDNS binary, `None` (with a printed reason) when it cannot be built here and this
/// is not CI.
fn coredns() -> Option<PathBuf> {
    let found = std::process::Command::new("dig")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            !in_ci(),
            "`dig` is missing (install dnsutils); CI must run this test"
        );
        eprintln!("skipping: `dig` is not installed (apt-get install dnsutils)");
        return None;
    }
    match mesh_k8s_testenv::ensure_coredns() {
        Ok(path) => Some(path),
        Err(e) if !in_ci() && e.to_string().contains("no Go toolchain") => {
            eprintln!("skipping: CoreDNS cannot be built here: {e}");
            None
        }
        Err(e) => panic!("building CoreDNS: {e}"),
    }
}

/// The Corefile stanza of `charts/mesh/README.md` (the code block that starts with
/// `clusterset.local:53 {`).
fn documented_stanza() -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/mesh/README.md");
    let text = std::fs::read_to_string(&readme)
        .unwrap_or_else(|e| panic!("reading {}: {e}", readme.display()));
    let start = text
        .find("```\nclusterset.local:53 {")
        .unwrap_or_else(|| panic!("no Corefile stanza in {}", readme.display()))
        + 4;
    let len = text[start..].find("```").expect("the stanza's block ends");
    text[start..start + len].to_string()
}

/// A loopback port free for both UDP and TCP right now.
fn free_port() -> u16 {
    for _ in 0..32 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind UDP");
        let port = udp.local_addr().expect("UDP address").port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// A running CoreDNS, killed when dropped.
struct CoreDns {
    child: Child,
    log: PathBuf,
}

impl CoreDns {
    fn start(binary: &Path, dir: &Path, corefile: &str) -> Self {
        let conf = dir.join("Corefile");
        std::fs::write(&conf, corefile).expect("write the Corefile");
        let log = dir.join("coredns.log");
        let out = std::fs::File::create(&log).expect("create the CoreDNS log");
        let err = out.try_clone().expect("duplicate the log handle");
        let child = Command::new(binary)
            .arg("-conf")
            .arg(&conf)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CoreDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn coredns_forwards_the_clusterset_zone_to_the_mesh_and_answers_the_rest_itself() {
    let Some(binary) = coredns() else {
        return;
    };
    let mut run = Running::start("coredns", Topology::default_set()).await;
    let mesh = run
        .set
        .cluster("us-east")
        .and_then(|c| c.controller_dns())
        .expect("us-east controller DNS address");
    let scratch = Scratch::new("coredns");
    std::fs::create_dir_all(&scratch.0).expect("scratch folder");

    let port = free_port();
    let stanza = documented_stanza()
        .replace(
            "clusterset.local:53 {",
            &format!("clusterset.local:{port} {{\n    bind 127.0.0.1"),
        )
        .replace("<mesh-dns ClusterIP>:53", &mesh.to_string());
    assert!(stanza.contains(&format!("forward . {mesh}")), "{stanza}");
    let corefile = format!(
        "{stanza}\n.:{port} {{\n    bind 127.0.0.1\n    hosts {{\n        192.0.2.44 outside.example.test\n    }}\n}}\n"
    );
    let coredns = CoreDns::start(&binary, &scratch.0, &corefile);
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    // Ready when it answers the name it holds itself.
    let ready =
        mesh_test_support::wait_for("CoreDNS to answer", Duration::from_secs(30), async || {
            dig(server, &["outside.example.test"]).0 == "NOERROR"
        })
        .await;
    if let Err(e) = ready {
        panic!("{e}; Corefile:\n{corefile}\nlog:\n{}", coredns.log());
    }
    let (_, answers) = dig(server, &["outside.example.test"]);
    assert_eq!(answers, ["192.0.2.44"], "CoreDNS's own answer");

    // The zone goes to the mesh: the same VIP as the mesh's DNS gives, over UDP and TCP.
    let name = "echo.demo.svc.clusterset.local";
    let (status, direct) = dig(mesh, &[name]);
    assert_eq!(
        (status.as_str(), direct.len()),
        ("NOERROR", 1),
        "{direct:?}"
    );
    assert!(direct[0].starts_with("240.240."), "{direct:?}");
    for transport in [&[][..], &["+tcp"][..]] {
        let mut args = transport.to_vec();
        args.push(name);
        let (status, via) = dig(server, &args);
        assert_eq!(
            (status.as_str(), &via),
            ("NOERROR", &direct),
            "{args:?} through CoreDNS; log:\n{}",
            coredns.log()
        );
    }
    let pinned = dig(server, &["echo.demo.svc.eu-central.clusterset.local"]);
    assert_eq!(pinned.0, "NOERROR", "{pinned:?}");
    assert_eq!(
        pinned.1,
        dig(mesh, &["echo.demo.svc.eu-central.clusterset.local"]).1
    );
    assert_eq!(
        dig(server, &["nope.demo.svc.clusterset.local"]).0,
        "NXDOMAIN"
    );

    // Outside the zone, CoreDNS answers from its own plugins and the mesh, which refuses such
    // names, is not asked: an unknown name gets what `hosts` gives names it lacks (SERVFAIL:
    // a hosts file has no SOA for an NXDOMAIN), not the mesh's REFUSED.
    assert_eq!(dig(mesh, &["outside.example.test"]).0, "REFUSED");
    assert_eq!(dig(server, &["other.example.test"]).0, "SERVFAIL");
    drop(coredns);
    run.stop().await;
}
