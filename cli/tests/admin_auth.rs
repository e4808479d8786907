//! The controller's admin API authentication through the real binary: the token file each
//! controller creates (0600) in its state directory, mutating calls refused without it or
//! with a wrong one (401 naming the header and the file, nothing changed), read-only routes
//! open, `mesh link` / `mesh unlink` working out of the box with the state directory, and
//! a controller refusing to start with an admin listener nobody could authenticate on.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use http::{Method, StatusCode};
use mesh_core::api::{LinkInfo, PATH_LINK_INFO, PATH_LINKS};
use mesh_core::config::Topology;
use mesh_launcher::admin_client::{self, ADMIN_TOKEN_FILE, AdminError, AdminToken};
use support::{Running, mesh_bin};

/// Two clusters with one echo replica each: enough to link and unlink.
fn two_clusters() -> Topology {
    let mut topology = Topology::default_set();
    topology.clusters.truncate(2);
    for (c, other) in topology.clusters.iter_mut().zip(["us-west", "us-east"]) {
        c.echo_replicas = 1;
        c.region_priority = vec![other.to_string()];
    }
    topology
}

async fn links(admin: std::net::SocketAddr) -> Vec<String> {
    let links: Vec<LinkInfo> = admin_client::get_json(admin, PATH_LINKS)
        .await
        .expect("GET /v1/links needs no token");
    links.into_iter().map(|l| l.cluster).collect()
}

/// The 401's JSON body, checked to name the header and the token file.
fn assert_refused(result: Result<bytes::Bytes, AdminError>, token_file: &Path) {
    let err = result.expect_err("refused");
    let AdminError::Status { status, body, .. } = &err else {
        panic!("not an answer: {err}");
    };
    assert_eq!(*status, StatusCode::UNAUTHORIZED, "{body}");
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON error");
    assert_eq!(v["header"], "Authorization", "{v}");
    assert_eq!(v["token_file"], token_file.display().to_string(), "{v}");
    let error = v["error"].as_str().unwrap_or_default();
    assert!(error.contains(&token_file.display().to_string()), "{v}");
}

fn mesh(args: &[&str], state_dir: &Path) -> std::process::Output {
    Command::new(mesh_bin())
        .args(args)
        .arg("--state-dir")
        .arg(state_dir)
        .output()
        .expect("mesh runs")
}

#[tokio::test(flavor = "current_thread")]
async fn mutating_admin_calls_need_the_token_and_mesh_link_has_it() {
    let run = Running::start("admin-auth", two_clusters()).await;
    let state = run.scratch.0.clone();
    let (east, west) = (run.admin("us-east"), run.admin("us-west"));
    // The launcher linked the set with the tokens the controllers created, private.
    assert_eq!(links(east).await, ["us-west"]);
    let east_token_file = state.join("us-east").join(ADMIN_TOKEN_FILE);
    for cluster in ["us-east", "us-west"] {
        let file = state.join(cluster).join(ADMIN_TOKEN_FILE);
        let mode = std::fs::metadata(&file)
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        AdminToken::read(&file).expect("a usable token");
    }

    // Read-only routes stay open.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/status",
        PATH_LINK_INFO,
    ] {
        admin_client::call(east, Method::GET, path, None)
            .await
            .unwrap_or_else(|e| panic!("GET {path} without a token: {e}"));
    }

    // The check is by method, in front of every route: a route that does not exist (yet)
    // answers 401 to a change without the token, and only then 404.
    assert_refused(
        admin_client::call(east, Method::POST, "/v1/not-yet-a-route", None).await,
        &east_token_file,
    );
    let token = AdminToken::read(&east_token_file).unwrap();
    let err = admin_client::call_with(
        east,
        Some(&token),
        Method::POST,
        "/v1/not-yet-a-route",
        None,
    )
    .await
    .expect_err("no such route");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND), "{err}");

    // Unlinking without the token, or with a wrong one: 401, the link stays.
    let unlink_west = format!("{PATH_LINKS}/us-west");
    assert_refused(
        admin_client::call(east, Method::DELETE, &unlink_west, None).await,
        &east_token_file,
    );
    let wrong = AdminToken::parse("not-the-token-of-this-cluster").unwrap();
    assert_refused(
        admin_client::call_with(east, Some(&wrong), Method::DELETE, &unlink_west, None).await,
        &east_token_file,
    );
    assert_eq!(
        links(east).await,
        ["us-west"],
        "a refused call changed links"
    );

    // `mesh unlink` reads the tokens from the state directory.
    let (e, w) = (east.to_string(), west.to_string());
    let out = mesh(&["unlink", &e, &w], &state);
    assert!(
        out.status.success(),
        "mesh unlink: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(links(east).await.is_empty() && links(west).await.is_empty());

    // Linking without the token or with a wrong one: 401, still no link.
    let west_info: LinkInfo = admin_client::get_json(west, PATH_LINK_INFO).await.unwrap();
    let body = serde_json::to_vec(&west_info).unwrap();
    assert_refused(
        admin_client::call(east, Method::POST, PATH_LINKS, Some(body.clone())).await,
        &east_token_file,
    );
    assert_refused(
        admin_client::call_with(east, Some(&wrong), Method::POST, PATH_LINKS, Some(body)).await,
        &east_token_file,
    );
    assert!(links(east).await.is_empty(), "a refused call linked");

    // A token file elsewhere is named on the command line; a missing one says which.
    let out = Command::new(mesh_bin())
        .args(["link", &e, &w, "--state-dir"])
        .arg(&state)
        .arg("--admin-token-file")
        .arg(state.join("nowhere"))
        .output()
        .expect("mesh runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("nowhere") && stderr.contains("us-east"),
        "{stderr}"
    );
    assert!(links(east).await.is_empty());

    // With the state directory, `mesh link` links both sides.
    let out = mesh(&["link", &e, &w], &state);
    assert!(
        out.status.success(),
        "mesh link: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(links(east).await, ["us-west"]);
    assert_eq!(links(west).await, ["us-east"]);
}

#[test]
fn an_admin_listener_nobody_can_authenticate_on_is_refused_at_start() {
    // Kubernetes mode keeps no state on disk: off loopback, the token file is required.
    let out = Command::new(mesh_bin())
        .args([
            "controller",
            "--kubernetes",
            "--cluster",
            "us-east",
            "--admin",
            "0.0.0.0:0",
        ])
        .output()
        .expect("mesh runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--admin-token-file") && stderr.contains("0.0.0.0:0"),
        "{stderr}"
    );

    // A token file that cannot be created or read is refused naming the flag, on any address.
    let scratch = support::Scratch::new("admin-token-refused");
    let cluster_dir = scratch.0.join("us-east");
    mesh_launcher::ca::ensure_cluster_ca("us-east", &cluster_dir, false).expect("CA");
    let missing = scratch.0.join("no-such-dir").join("token");
    let out = Command::new(mesh_bin())
        .args(["controller", "--cluster", "us-east", "--state-dir"])
        .arg(&cluster_dir)
        .arg("--admin-token-file")
        .arg(&missing)
        .output()
        .expect("mesh runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--admin-token-file") && stderr.contains("no-such-dir"),
        "{stderr}"
    );
}
