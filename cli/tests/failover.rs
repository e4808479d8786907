//! End to end with real processes: failover of a service whose local replicas all die, under
//! steady load, and failback when they return.

mod support;

use std::time::{Duration, Instant};

use support::{Running, due_at, eventually, share_served_by, start_load, wait_served_by};

const HOST: &str = "echo.demo.svc.clusterset.local";
const RATE: u32 = 120;

#[tokio::test(flavor = "current_thread")]
async fn local_replicas_die_traffic_fails_over_in_priority_order_and_back() {
    let mut run = Running::default_set("failover").await;
    let proxy = run.proxy("us-east");
    let load = start_load(proxy, HOST, RATE);
    let started = load.started();
    eventually(
        Duration::from_secs(10),
        "a second of answered requests",
        || {
            let answered = load.snapshot().len();
            async move { answered >= RATE as usize }
        },
    )
    .await;
    let before = load.snapshot();
    assert!(
        before
            .iter()
            .all(|o| o.served_by.as_deref() == Some("us-east")),
        "steady state is local"
    );

    // Both us-east echo replicas die: app and sidecar processes, with SIGKILL.
    let fault = Instant::now();
    for r in ["echo-0", "echo-1"] {
        run.set.kill("us-east", r).await.unwrap();
        run.set
            .kill("us-east", &format!("sidecar-{r}"))
            .await
            .unwrap();
    }
    // Failover is observed, not assumed: traffic must reach us-west within 5 s of the fault,
    // then the fault lasts until 3 s of requests sent from 2 s after it have been answered.
    wait_served_by(
        &load,
        "us-west",
        0.99,
        Duration::from_secs(1),
        Duration::from_secs(5),
    )
    .await;
    let observed_from = fault + Duration::from_secs(2);
    eventually(
        Duration::from_secs(15),
        "3 s of answers during the fault",
        || {
            let answered = load
                .snapshot()
                .iter()
                .filter(|o| due_at(started, o) >= observed_from)
                .count();
            async move { answered >= RATE as usize * 3 }
        },
    )
    .await;

    // They come back.
    let heal = Instant::now();
    for r in ["echo-0", "echo-1"] {
        run.set.restart("us-east", r).await.unwrap();
        run.set
            .restart("us-east", &format!("sidecar-{r}"))
            .await
            .unwrap();
    }
    let back_at = mesh_test_support::wait_for(
        "the last second served by us-east again",
        Duration::from_secs(15),
        async || {
            let now = Instant::now();
            let (share, n) = share_served_by(
                &load.snapshot(),
                started,
                now - Duration::from_secs(1),
                now,
                "us-east",
            );
            n > 0 && share >= 0.99
        },
    )
    .await
    .ok();
    if let Some(took) = back_at {
        eprintln!("back on us-east {took:?} after the heal");
    }
    let outcomes = load.finish().await.outcomes;
    let status = serde_json::to_string_pretty(&run.status("us-east").await).unwrap();
    let client_admin = run
        .set
        .process("us-east", "client")
        .and_then(|p| p.ready.as_ref())
        .and_then(|r| r.addr("admin"))
        .unwrap();
    let metrics =
        mesh_launcher::admin_client::call(client_admin, http::Method::GET, "/metrics", None)
            .await
            .unwrap();
    let metrics: String = String::from_utf8_lossy(&metrics)
        .lines()
        .filter(|l| l.contains("breaker") || l.contains("requests_total"))
        .collect::<Vec<_>>()
        .join("\n");
    let logs = format!(
        "{}\nus-east status: {status}\nclient metrics:\n{metrics}",
        run.logs()
    );
    run.stop().await;

    let total = outcomes.len();
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.ok()).collect();
    assert!(total as u32 >= RATE * 5, "load ran: {total} requests");
    assert!(
        failed.len() as f64 <= total as f64 * 0.01,
        "{} of {total} requests failed (> 1%): {:?}\n{logs}",
        failed.len(),
        failed.iter().take(5).map(|o| &o.error).collect::<Vec<_>>()
    );
    let late_failures: Vec<_> = failed
        .iter()
        .filter(|o| (fault + Duration::from_secs(2)..heal).contains(&due_at(started, o)))
        .collect();
    assert!(
        late_failures.is_empty(),
        "failures more than 2 s after the fault: {:?}",
        late_failures.iter().map(|o| &o.error).collect::<Vec<_>>()
    );
    // From 2 s after the fault until the heal, everything is served by us-west (next in priority).
    let (share, n) = share_served_by(
        &outcomes,
        started,
        fault + Duration::from_secs(2),
        heal,
        "us-west",
    );
    assert!(
        n > 0 && share >= 0.99,
        "only {:.1}% of {n} requests served by us-west after failover\n{logs}",
        share * 100.0
    );
    assert!(
        back_at.is_some(),
        "traffic did not return to us-east within 15 s of the replicas' restart\n{logs}"
    );
}
