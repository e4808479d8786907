//! Random `Host` values cannot grow the metrics.

use std::net::SocketAddr;

use http::Method;
use mesh_core::serve::ServeLimits;

use super::Setup;
use super::common::*;

/// `n` requests through the proxy, 16 at a time over HTTP/2, each with its own `Host`: a
/// name that is no mesh name, or a mesh service in a cluster that does not exist; and on each
/// of the 16 connections one service nobody exports (each waits the discovery wait, so a few).
async fn random_hosts(proxy: SocketAddr, from: usize, n: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        tasks.spawn(async move {
            let mut sender = h2c(proxy).await.unwrap();
            let service: u32 = rand::random();
            let mut hosts = vec![format!("svc-{service:x}.ns-{worker}")];
            for i in (from + worker..from + n).step_by(16) {
                let token: u64 = rand::random();
                hosts.push(if i % 2 == 0 {
                    format!("r{token:x}.example.com")
                } else {
                    format!("echo.demo.svc.c{token:x}.clusterset.local")
                });
            }
            for host in hosts {
                let uri = format!("http://{host}/");
                let answer = h2_send(&mut sender, Method::GET, &uri, vec![])
                    .await
                    .unwrap();
                assert!(
                    answer.status.is_client_error() || answer.status.is_server_error(),
                    "{host}: {answer:?}"
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

#[tokio::test]
async fn random_host_values_do_not_grow_the_metrics() {
    let setup = Setup::start(ServeLimits::default(), 64).await;
    random_hosts(setup.outbound, 0, 1_000).await;
    let after_1k = setup.metrics().await;
    random_hosts(setup.outbound, 1_000, 9_000).await;
    let after_10k = setup.metrics().await;
    // The counts' digits grow (1000 -> 10000); the label sets must not.
    assert!(
        after_10k.len() <= after_1k.len() + 256,
        "metrics grew from {} to {} bytes:\n{after_10k}",
        after_1k.len(),
        after_10k.len()
    );
    assert_eq!(
        after_1k.lines().count(),
        after_10k.lines().count(),
        "{after_10k}"
    );
    for series in [
        r#"service="unknown",cluster="-",status="503"} 32"#,
        r#"service="-",cluster="-",status="400"} 5000"#,
        r#"service="echo.demo",cluster="-",status="503"} 5000"#,
    ] {
        assert!(after_10k.contains(series), "{series} missing:\n{after_10k}");
    }
    assert!(!after_10k.contains(".example"), "{after_10k}");
}
