//! A root rotation through the controller on real sockets: a peer's bundle change arriving in
//! its catalog (as the gateway delivers it) updates trust without `mesh link`, for that peer's
//! domain only, and reaches the sidecars' and the gateway's snapshots and `links.json`; this
//! cluster's own `add` step reaches them and the catalog it exports, and `switch` waits until
//! the peer acknowledges both roots.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::ensure;
use http::{Method, StatusCode};
use mesh_core::api::{
    GatewaySnapshot, LinkInfo, PATH_DISCOVERY, PATH_FEDERATION, PATH_GATEWAY_REPORT,
    PATH_GATEWAY_STREAM, SidecarSnapshot,
};
use mesh_core::catalog::{CatalogMessage, CatalogTrust};
use mesh_core::identity::rotation::{
    PATH_CA_ROTATION, RotationPhase, RotationRequest, RotationStatus, RotationStep,
    bundle_fingerprints,
};
use mesh_core::identity::{ClusterCa, SpiffeId, TrustBundle};

use support::control::CallError;
use support::{Harness, gateway_report, next_until, peer_catalog, peer_link_info};

const WAIT: Duration = Duration::from_secs(10);

fn fingerprints(pem: &str) -> Vec<String> {
    bundle_fingerprints(pem).expect("a PEM bundle")
}

async fn rotation(h: &Harness) -> anyhow::Result<RotationStatus> {
    let (status, body) = h.admin_get(PATH_CA_ROTATION).await?;
    ensure!(status == StatusCode::OK, "{status} {body}");
    Ok(serde_json::from_str(&body)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_travel_in_the_catalog_and_the_switch_waits_for_the_peer() -> anyhow::Result<()> {
    let h = Harness::start("rotation", "us-east").await?;
    let sidecar = h.workload_client("echo").await?;
    let gateway = h.gateway_client().await?;
    let report = gateway_report(0.01)?;
    let reporter = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(300));
            loop {
                every.tick().await;
                let _ = gateway
                    .send_json(Method::PUT, PATH_GATEWAY_REPORT, Some(&report))
                    .await;
            }
        })
    };
    let peer = peer_link_info()?;
    let (status, body) = h.admin(Method::POST, "/v1/links", Some(&peer)).await?;
    ensure!(status == StatusCode::CREATED, "link: {status} {body}");
    let mut snapshots = sidecar
        .stream::<SidecarSnapshot>(&format!("{PATH_DISCOVERY}?services=echo.demo"))
        .await
        .map_err(CallError::into_anyhow)?;
    let mut gw_snapshots = gateway
        .stream::<GatewaySnapshot>(PATH_GATEWAY_STREAM)
        .await
        .map_err(CallError::into_anyhow)?;

    // The peer rotates: its catalog announces both its roots and the one it holds for us.
    let eu_new = ClusterCa::generate("eu-central.mesh")?;
    let eu_both = TrustBundle {
        ca_pem: format!("{}{}", peer.trust_bundle.ca_pem, eu_new.cert_pem()),
        ..peer.trust_bundle.clone()
    };
    let own_root = fingerprints(h.ca.cert_pem());
    let mut catalog = peer_catalog(3)?;
    catalog.trust = Some(CatalogTrust {
        bundle: Some(eu_both.clone()),
        held_roots: BTreeMap::from([("us-east.mesh".to_string(), own_root.clone())]),
    });
    let federation = format!("{PATH_FEDERATION}eu-central");
    gateway
        .send_json(
            Method::POST,
            &federation,
            Some(&CatalogMessage::Snapshot {
                catalog: catalog.clone(),
            }),
        )
        .await
        .map_err(CallError::into_anyhow)?;
    next_until(
        &mut snapshots,
        WAIT,
        "the peer's two roots in the sidecar's trust",
        |s| s.trust_bundles.contains(&eu_both),
    )
    .await?;
    next_until(
        &mut gw_snapshots,
        WAIT,
        "the peer's two roots for the gateway",
        |g| g.peers.iter().any(|p| p.trust_bundle == eu_both),
    )
    .await?;
    let (_, body) = h.admin_get("/v1/links").await?;
    let links: Vec<LinkInfo> = serde_json::from_str(&body)?;
    ensure!(
        links.len() == 1 && links[0].trust_bundle == eu_both,
        "{links:?}"
    );
    let saved = std::fs::read_to_string(h.state.path().join("links.json"))?;
    let saved_pem = eu_new.cert_pem().lines().nth(1).unwrap_or_default();
    ensure!(saved.contains(saved_pem), "links.json keeps the new root");

    // A bundle for another domain than the peer's own is not taken from it.
    let mut forged = catalog.clone();
    forged.version = 4;
    forged.trust = Some(CatalogTrust {
        bundle: Some(TrustBundle {
            trust_domain: "us-east.mesh".into(),
            cluster: "eu-central".into(),
            ca_pem: eu_new.cert_pem().into(),
        }),
        held_roots: BTreeMap::from([("us-east.mesh".to_string(), own_root.clone())]),
    });
    gateway
        .send_json(
            Method::POST,
            &federation,
            Some(&CatalogMessage::Snapshot {
                catalog: forged.clone(),
            }),
        )
        .await
        .map_err(CallError::into_anyhow)?;
    let (_, body) = h.admin_get("/v1/links").await?;
    let links: Vec<LinkInfo> = serde_json::from_str(&body)?;
    ensure!(links[0].trust_bundle == eu_both, "{links:?}");

    // Our own rotation: steps need the admin token.
    let add = RotationRequest {
        step: RotationStep::Add,
    };
    let (status, _) = support::admin(
        h.ctl.admin_addr,
        Method::POST,
        PATH_CA_ROTATION,
        Some(serde_json::to_vec(&add)?),
    )
    .await?;
    ensure!(
        status == StatusCode::UNAUTHORIZED,
        "unauthenticated add: {status}"
    );
    let (status, body) = h.admin(Method::POST, PATH_CA_ROTATION, Some(&add)).await?;
    ensure!(status == StatusCode::OK, "add: {status} {body}");
    let added: RotationStatus = serde_json::from_str(&body)?;
    ensure!(
        added.phase == Some(RotationPhase::Added) && added.roots.len() == 2,
        "{added:?}"
    );
    let both = added
        .roots
        .iter()
        .map(|r| r.fingerprint.clone())
        .collect::<Vec<_>>();
    // The bundle reaches the sidecars, the gateway, and the catalog the gateway sends peers.
    next_until(
        &mut snapshots,
        WAIT,
        "our two roots in the sidecar's trust",
        |s| {
            s.trust_bundles
                .iter()
                .any(|b| b.cluster == "us-east" && fingerprints(&b.ca_pem) == both)
        },
    )
    .await?;
    next_until(
        &mut gw_snapshots,
        WAIT,
        "our two roots announced to peers",
        |g| {
            fingerprints(&g.trust_bundle.ca_pem) == both
                && g.exports.trust.as_ref().and_then(|t| t.bundle.as_ref()) == Some(&g.trust_bundle)
        },
    )
    .await?;
    // Idempotent; and the switch waits for the peer to hold both.
    let (status, _) = h.admin(Method::POST, PATH_CA_ROTATION, Some(&add)).await?;
    ensure!(status == StatusCode::OK, "add again: {status}");
    let switch = RotationRequest {
        step: RotationStep::Switch,
    };
    let (status, body) = h
        .admin(Method::POST, PATH_CA_ROTATION, Some(&switch))
        .await?;
    ensure!(
        status == StatusCode::CONFLICT
            && body.contains("linked cluster eu-central to hold both roots"),
        "early switch: {status} {body}"
    );
    // The peer acknowledges in its next catalog; after the settle time the switch is taken.
    let mut ack = forged.clone();
    ack.version = 5;
    ack.trust = Some(CatalogTrust {
        bundle: Some(eu_both.clone()),
        held_roots: BTreeMap::from([("us-east.mesh".to_string(), both.clone())]),
    });
    gateway
        .send_json(
            Method::POST,
            &federation,
            Some(&CatalogMessage::Delta {
                delta: forged.diff(&ack),
            }),
        )
        .await
        .map_err(CallError::into_anyhow)?;
    mesh_test_support::eventually("the add step complete", WAIT, async || {
        rotation(&h).await.is_ok_and(|s| s.complete())
    })
    .await;
    let (status, body) = h
        .admin(Method::POST, PATH_CA_ROTATION, Some(&switch))
        .await?;
    ensure!(status == StatusCode::OK, "switch: {status} {body}");
    let switched = rotation(&h).await?;
    ensure!(
        switched.phase == Some(RotationPhase::Switched)
            && switched
                .roots
                .iter()
                .any(|r| r.signing && Some(&r.fingerprint) == switched.new_root.as_ref()),
        "{switched:?}"
    );
    // A certificate issued now chains to the new root.
    let fresh = h
        .client(&SpiffeId::workload("us-east.mesh", "demo", "fresh"))
        .await;
    ensure!(fresh.is_ok(), "a client bootstrapped after the switch");
    ensure!(
        !rotation(&h).await?.issued.is_empty(),
        "the ledger counts what was issued"
    );
    reporter.abort();
    Ok(())
}
