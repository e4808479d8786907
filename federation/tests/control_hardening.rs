//! The controller's control API against forged input, in-process on real sockets: breaker
//! reports from an identity the controller does not know as a workload, one identity
//! reporting under many workload ids, and a registration flood from one identity.

mod support;

use std::time::Duration;

use anyhow::ensure;
use http::{Method, StatusCode};
use mesh_core::api::{
    BreakerObservation, BreakerReport, ControllerStatus, PATH_BREAKER_REPORTS, PATH_DISCOVERY,
    PATH_WORKLOADS, SidecarSnapshot, WorkloadRegistration,
};
use mesh_core::breaker::BreakerState;
use mesh_core::identity::SpiffeId;

use support::control::{CallError, Client, Ndjson};
use support::{Harness, echo, next_until, registration, status_of};

const WAIT: Duration = Duration::from_secs(10);
const TD: &str = "us-east.mesh";

fn open_report(reporter: &str, state: BreakerState) -> BreakerReport {
    BreakerReport {
        reporter: reporter.into(),
        breakers: vec![BreakerObservation {
            service: echo(),
            cluster: "us-east".into(),
            state: state.into(),
        }],
    }
}

async fn put_report(client: &Client, report: &BreakerReport) -> Result<(), CallError> {
    client
        .send_json(Method::PUT, PATH_BREAKER_REPORTS, Some(report))
        .await
        .map(|_| ())
}

/// A client of identity `sa` that holds a discovery stream open (a known workload that only
/// calls out, like the demo's client sidecar).
async fn streaming_client(
    h: &Harness,
    sa: &str,
) -> anyhow::Result<(Client, Ndjson<SidecarSnapshot>)> {
    let client = h.client(&SpiffeId::workload(TD, "demo", sa)).await?;
    let stream = client
        .stream::<SidecarSnapshot>(&format!("{PATH_DISCOVERY}?services=echo.demo"))
        .await
        .map_err(CallError::into_anyhow)?;
    Ok((client, stream))
}

/// The breaker summary of echo.demo's own locality, and whether it failed over.
async fn local_breaker(h: &Harness) -> anyhow::Result<(u32, u32, bool)> {
    let (status, body) = h.admin_get("/v1/status").await?;
    ensure!(status == StatusCode::OK, "{status} {body}");
    let status: ControllerStatus = serde_json::from_str(&body)?;
    let svc = status
        .services
        .iter()
        .find(|s| s.service == echo())
        .ok_or_else(|| anyhow::anyhow!("echo.demo not in {status:?}"))?;
    let b = svc.breakers.iter().find(|b| b.cluster == "us-east");
    Ok((
        b.map_or(0, |b| b.open),
        b.map_or(0, |b| b.reporters),
        svc.failover_active,
    ))
}

async fn metric_line(h: &Harness, needle: &str) -> anyhow::Result<bool> {
    let (_, metrics) = h.admin_get("/metrics").await?;
    Ok(metrics.lines().any(|l| l == needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_breaker_reports_do_not_fail_a_locality_over() -> anyhow::Result<()> {
    let h = Harness::start("forged-breakers", "us-east").await?;
    // echo.demo has a healthy local endpoint, kept alive by heartbeats.
    let echo_id = SpiffeId::workload(TD, "demo", "echo");
    let server = h.client(&echo_id).await?;
    let reg = registration(&echo_id)?;
    let heartbeat = {
        let server = server.clone();
        let path = format!("{PATH_WORKLOADS}echo-0");
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(200));
            loop {
                every.tick().await;
                let _ = server.send_json(Method::PUT, &path, Some(&reg)).await;
            }
        })
    };
    let (honest, mut stream) = streaming_client(&h, "client").await?;
    next_until(&mut stream, WAIT, "echo.demo served locally", |s| {
        s.services
            .get(&echo())
            .is_some_and(|r| r.localities.first().is_some_and(|l| l.entry.health > 0.0))
    })
    .await?;

    // An identity with no registered workload and no stream: ignored, counted, and told why.
    let stranger = h
        .client(&SpiffeId::workload(TD, "evil", "stranger"))
        .await?;
    let refused = put_report(&stranger, &open_report("stranger-0", BreakerState::Open)).await;
    ensure!(
        status_of(&refused) == Some(StatusCode::FORBIDDEN),
        "{refused:?}"
    );
    let body = refused.as_ref().err().map(CallError::body).unwrap_or("");
    ensure!(body.contains("no registered workload"), "{body}");
    ensure!(
        local_breaker(&h).await? == (0, 0, false),
        "a stranger's report counted"
    );
    ensure!(
        metric_line(
            &h,
            "mesh_controller_breaker_reports_ignored_total{reason=\"unknown_identity\"} 1"
        )
        .await?,
        "the ignored report is counted"
    );

    // A known identity reporting open under 20 workload ids, against one honest identity
    // seeing it closed: one vote each, no quorum, no failover.
    let (noisy, _noisy_stream) = streaming_client(&h, "noisy").await?;
    for i in 0..20 {
        put_report(
            &noisy,
            &open_report(&format!("noisy-{i}"), BreakerState::Open),
        )
        .await
        .map_err(CallError::into_anyhow)?;
    }
    put_report(&honest, &open_report("client", BreakerState::Closed))
        .await
        .map_err(CallError::into_anyhow)?;
    ensure!(
        local_breaker(&h).await? == (1, 2, false),
        "20 ids of one identity must be one vote: {:?}",
        local_breaker(&h).await?
    );

    // A second identity seeing it open makes a real quorum (2 of 3): the locality fails over,
    // so the votes above were counted, just not multiplied.
    let (witness, _witness_stream) = streaming_client(&h, "witness").await?;
    put_report(&witness, &open_report("witness-0", BreakerState::Open))
        .await
        .map_err(CallError::into_anyhow)?;
    next_until(&mut stream, WAIT, "the local breaker quorum", |s| {
        s.services.get(&echo()).is_some_and(|r| {
            r.localities[0]
                .entry
                .reason
                .contains("breaker open (2/3 identities)")
        })
    })
    .await?;
    ensure!(local_breaker(&h).await? == (2, 3, true));

    heartbeat.abort();
    h.ctl.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_flood_from_one_identity_gets_429() -> anyhow::Result<()> {
    let h = Harness::start("registration-flood", "us-east").await?;
    let id = SpiffeId::workload(TD, "demo", "echo");
    let flooder = h.client(&id).await?;
    let reg = registration(&id)?;
    let path = format!("{PATH_WORKLOADS}echo-0");
    let mut limited = None;
    for i in 0..5_000 {
        match flooder.send_json(Method::PUT, &path, Some(&reg)).await {
            Ok(_) => {}
            Err(e) if e.status() == Some(StatusCode::TOO_MANY_REQUESTS) => {
                limited = Some((i, e.body().to_string()));
                break;
            }
            Err(e) => return Err(e.into_anyhow()),
        }
    }
    let Some((accepted, body)) = limited else {
        anyhow::bail!("5000 registrations in a row were all accepted");
    };
    ensure!(
        accepted >= 100,
        "the burst is 100, limited after {accepted}"
    );
    ensure!(
        body.contains(&id.to_string()) && body.contains("retry in"),
        "{body}"
    );
    // Another identity is not limited by it.
    let other_id = SpiffeId::workload(TD, "demo", "other");
    let other = h.client(&other_id).await?;
    let other_reg = WorkloadRegistration {
        id: "other-0".into(),
        identity: other_id.to_string(),
        ..reg
    };
    other
        .send_json(
            Method::PUT,
            &format!("{PATH_WORKLOADS}other-0"),
            Some(&other_reg),
        )
        .await
        .map_err(CallError::into_anyhow)?;
    ensure!(
        metric_line(&h, "mesh_controller_registrations_rate_limited_total 1").await?,
        "the refusal is counted"
    );
    h.ctl.shutdown().await;
    Ok(())
}
