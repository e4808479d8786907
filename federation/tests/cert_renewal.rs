//! Certificate renewal through the controller's CA path, in-process on real sockets: a caller
//! authenticated by its client certificate (no join token) renews exactly its own identity,
//! is refused another one with a clear 403, and a caller that loops gets 429 with
//! `Retry-After`.

mod support;

use std::sync::Arc;

use anyhow::{Context, ensure};
use http::StatusCode;
use mesh_core::control_client::{ControlClient, ControlError};
use mesh_core::identity::{RotatingIdentity, SpiffeId};

use support::{Harness, TOKEN};

const TD: &str = "us-east.mesh";

async fn bootstrap(
    h: &Harness,
    id: &SpiffeId,
) -> anyhow::Result<(Arc<ControlClient>, RotatingIdentity)> {
    let (client, identity, _) = ControlClient::bootstrap(
        h.ctl.control_addr.into(),
        &h.cluster,
        h.ca.cert_pem(),
        TOKEN,
        id,
    )
    .await
    .context("bootstrap with the join token")?;
    Ok((client, identity))
}

fn status(e: &ControlError) -> Option<(StatusCode, &str)> {
    match e {
        ControlError::Status { status, body, .. } => Some((*status, body.as_str())),
        _ => None,
    }
}

#[tokio::test]
async fn a_certificate_renews_its_own_identity_only_and_a_loop_is_limited() -> anyhow::Result<()> {
    let h = Harness::start("cert-renewal", "us-east").await?;
    let echo = SpiffeId::workload(TD, "demo", "echo");
    let (client, identity) = bootstrap(&h, &echo).await?;

    // Renewal: no token, the client certificate authenticates; the new certificate is swapped
    // in and the next connection presents it.
    let first = identity.current();
    let renewed = client.renew(&echo).await.context("renewal")?;
    ensure!(renewed.id == echo, "renewed {}", renewed.id);
    ensure!(renewed.chain != first.chain, "a new certificate was issued");
    identity.replace(renewed.clone())?;
    let fresh = client.with_addr(h.ctl.control_addr.into());
    let again = fresh
        .renew(&echo)
        .await
        .context("renewal with the renewed certificate")?;
    ensure!(again.id == echo);

    // Another identity than the certificate's: 403 naming both.
    let admin = SpiffeId::workload(TD, "demo", "admin");
    let err = client.renew(&admin).await.expect_err("another identity");
    let (code, body) = status(&err).with_context(|| format!("{err}"))?;
    ensure!(code == StatusCode::FORBIDDEN, "{code}: {body}");
    ensure!(
        body.contains("spiffe://us-east.mesh/ns/demo/sa/echo's")
            && body.contains("not spiffe://us-east.mesh/ns/demo/sa/admin"),
        "{body}"
    );
    let err = client
        .renew(&SpiffeId::gateway(TD))
        .await
        .expect_err("the gateway's identity");
    ensure!(
        status(&err).map(|s| s.0) == Some(StatusCode::FORBIDDEN),
        "{err}"
    );

    // A client that loops: 429 with Retry-After, naming the identity and the limit.
    let mut limited = None;
    for _ in 0..40 {
        match client.renew(&echo).await {
            Ok(_) => {}
            Err(e) => {
                limited = Some(e);
                break;
            }
        }
    }
    let err = limited.context("40 renewals in a row were never limited")?;
    let (code, body) = status(&err).with_context(|| format!("{err}"))?;
    ensure!(code == StatusCode::TOO_MANY_REQUESTS, "{code}: {body}");
    ensure!(
        body.contains("certificate requests of spiffe://us-east.mesh/ns/demo/sa/echo")
            && body.contains("per second"),
        "{body}"
    );
    // Another identity is not held back by echo's loop.
    let (gateway, _) = bootstrap(&h, &SpiffeId::gateway(TD)).await?;
    gateway
        .renew(&SpiffeId::gateway(TD))
        .await
        .context("the gateway renews while echo is limited")?;
    h.ctl.shutdown().await;
    Ok(())
}
