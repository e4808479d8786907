use super::*;
use crate::identity::ClusterCa;

fn bundle(cluster: &str, roots: &[&ClusterCa]) -> TrustBundle {
    TrustBundle {
        trust_domain: format!("{cluster}.mesh"),
        cluster: cluster.into(),
        ca_pem: roots.iter().map(|r| r.cert_pem()).collect(),
    }
}

fn fp(ca: &ClusterCa) -> String {
    ca.signing_fingerprint()
}

#[test]
fn fingerprints_are_sorted_hex_sha256_and_refuse_garbage() {
    let a = ClusterCa::generate("us-east.mesh").unwrap();
    let b = ClusterCa::generate("us-east.mesh").unwrap();
    let both = format!("{}{}", b.cert_pem(), a.cert_pem());
    let fps = bundle_fingerprints(&both).unwrap();
    assert_eq!(fps.len(), 2);
    assert!(fps[0] < fps[1]);
    assert!(fps.iter().all(|f| f.len() == 64));
    assert!(fps.contains(&fp(&a)) && fps.contains(&fp(&b)));
    assert_eq!(short(&fps[0]).len(), 16);
    assert!(bundle_fingerprints("no pem here").is_err());
    assert_eq!(pem_blocks(&both).len(), 2);
}

#[test]
fn steps_follow_the_phases_and_are_idempotent() {
    use RotationPhase::*;
    use RotationStep::*;
    let done: &[String] = &[];
    let busy = vec!["linked cluster eu-central to hold both roots".to_string()];
    assert_eq!(plan_step(None, done, Add), Ok(StepPlan::Apply));
    assert_eq!(
        plan_step(Some(Added), &busy, Add),
        Ok(StepPlan::AlreadyDone)
    );
    assert_eq!(plan_step(Some(Added), done, Switch), Ok(StepPlan::Apply));
    let err = plan_step(Some(Added), &busy, Switch).unwrap_err();
    assert!(
        matches!(&err, StepRefusal::Waiting { phase: "add", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("eu-central"), "{err}");
    assert_eq!(
        plan_step(Some(Switched), &busy, Switch),
        Ok(StepPlan::AlreadyDone)
    );
    assert_eq!(plan_step(Some(Switched), done, Retire), Ok(StepPlan::Apply));
    assert!(plan_step(Some(Switched), &busy, Retire).is_err());
    assert_eq!(
        plan_step(Some(Retired), &busy, Retire),
        Ok(StepPlan::AlreadyDone)
    );
    // Out of order.
    for (phase, step) in [
        (None, Switch),
        (None, Retire),
        (Some(Added), Retire),
        (Some(Switched), Add),
        (Some(Retired), Switch),
    ] {
        let err = plan_step(phase, done, step).unwrap_err();
        assert!(
            matches!(err, StepRefusal::OutOfOrder { .. }),
            "{phase:?} {step:?}: {err:?}"
        );
    }
    // A new rotation after a complete one, not before.
    assert_eq!(plan_step(Some(Retired), done, Add), Ok(StepPlan::Apply));
    assert!(plan_step(Some(Retired), &busy, Add).is_err());
    assert_eq!(RotationStep::next(Some(Added)), Some(Switch));
    assert_eq!(RotationStep::next(Some(Switched)), Some(Retire));
    assert_eq!(RotationStep::next(Some(Retired)), None);
}

fn inputs<'a>(
    phase: RotationPhase,
    trusted: &'a [String],
    peers: &'a [PeerRoots],
    issued: &'a [IssuedCounts],
    elapsed_ms: u64,
) -> RotationInputs<'a> {
    RotationInputs {
        phase: Some(phase),
        trusted,
        peers,
        issued,
        ledger_complete: true,
        now_ms: 10_000 + elapsed_ms,
        phase_since_ms: 10_000,
        settle: Duration::from_secs(2),
        cert_ttl: Duration::from_secs(60),
    }
}

#[test]
fn add_and_retire_wait_for_every_peer_and_the_settle_time() {
    let trusted = vec!["aa".repeat(32), "bb".repeat(32)];
    let peers = vec![
        PeerRoots {
            cluster: "eu-central".into(),
            held: Some(trusted.clone()),
        },
        PeerRoots {
            cluster: "us-west".into(),
            held: Some(vec!["aa".repeat(32)]),
        },
        PeerRoots {
            cluster: "ap-south".into(),
            held: None,
        },
    ];
    let waits = waiting_for(&inputs(RotationPhase::Added, &trusted, &peers, &[], 500));
    assert_eq!(waits.len(), 3, "{waits:?}");
    assert!(waits[0].contains("us-west") && waits[0].contains("1 root(s)"));
    assert!(waits[1].contains("ap-south") && waits[1].contains("link up"));
    assert!(waits[2].contains("1500 ms left"), "{waits:?}");
    let all_hold: Vec<PeerRoots> = peers
        .iter()
        .map(|p| PeerRoots {
            cluster: p.cluster.clone(),
            held: Some(trusted.clone()),
        })
        .collect();
    assert!(
        waiting_for(&inputs(
            RotationPhase::Added,
            &trusted,
            &all_hold,
            &[],
            2_000
        ))
        .is_empty()
    );
    // Retire: the peers still holding both are waited for.
    let new_only = vec!["bb".repeat(32)];
    let waits = waiting_for(&inputs(
        RotationPhase::Retired,
        &new_only,
        &all_hold,
        &[],
        5_000,
    ));
    assert_eq!(waits.len(), 3);
    assert!(waits[0].contains("only the new root"), "{waits:?}");
}

#[test]
fn switch_waits_for_reissues_or_the_old_certificates_expiry() {
    let trusted = vec!["aa".repeat(32), "bb".repeat(32)];
    let issued = vec![
        IssuedCounts {
            identity: "spiffe://us-east.mesh/gateway".into(),
            old_root: 1,
            new_root: 1,
        },
        IssuedCounts {
            identity: "spiffe://us-east.mesh/ns/demo/sa/echo".into(),
            old_root: 2,
            new_root: 1,
        },
    ];
    let waits = waiting_for(&inputs(
        RotationPhase::Switched,
        &trusted,
        &[],
        &issued,
        1_000,
    ));
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert!(waits[0].contains("sa/echo"), "{waits:?}");
    let mut reissued = issued.clone();
    reissued[1].new_root = 2;
    assert!(
        waiting_for(&inputs(
            RotationPhase::Switched,
            &trusted,
            &[],
            &reissued,
            1_000
        ))
        .is_empty()
    );
    // A ledger that started late cannot vouch for older certificates ...
    let mut late = inputs(RotationPhase::Switched, &trusted, &[], &reissued, 1_000);
    late.ledger_complete = false;
    let waits = waiting_for(&late);
    assert!(waits[0].contains("59000 ms"), "{waits:?}");
    // ... but once a lifetime has passed since the switch, every old certificate has expired.
    let expired = inputs(RotationPhase::Switched, &trusted, &[], &issued, 60_000);
    assert!(waiting_for(&expired).is_empty());
}

#[test]
fn a_peer_bundle_replaces_only_its_own_domain_and_keeps_continuity() {
    let old = ClusterCa::generate("eu-central.mesh").unwrap();
    let new = ClusterCa::generate("eu-central.mesh").unwrap();
    let held = bundle("eu-central", &[&old]);
    assert_eq!(
        accept_peer_bundle(&held, &held),
        Ok(BundleUpdate::Unchanged)
    );
    let both = bundle("eu-central", &[&old, &new]);
    assert_eq!(
        accept_peer_bundle(&held, &both),
        Ok(BundleUpdate::Replace(both.clone()))
    );
    let retired = bundle("eu-central", &[&new]);
    assert_eq!(
        accept_peer_bundle(&both, &retired),
        Ok(BundleUpdate::Replace(retired.clone()))
    );
    // Straight from the old root to an unrelated one: refused.
    let err = accept_peer_bundle(&held, &retired).unwrap_err();
    assert!(err.contains("mesh link"), "{err}");
    // Another domain's roots are never taken from this peer.
    let mut other_domain = both.clone();
    other_domain.trust_domain = "us-east.mesh".into();
    let err = accept_peer_bundle(&held, &other_domain).unwrap_err();
    assert!(err.contains("us-east.mesh") && err.contains("own"), "{err}");
    let mut other_cluster = both.clone();
    other_cluster.cluster = "ap-south".into();
    assert!(accept_peer_bundle(&held, &other_cluster).is_err());
    let mut garbage = both.clone();
    garbage.ca_pem = "garbage".into();
    assert!(accept_peer_bundle(&held, &garbage).is_err());
    let many: Vec<ClusterCa> = (0..5)
        .map(|_| ClusterCa::generate("eu-central.mesh").unwrap())
        .collect();
    let mut refs: Vec<&ClusterCa> = many.iter().collect();
    refs.push(&old);
    let err = accept_peer_bundle(&held, &bundle("eu-central", &refs)).unwrap_err();
    assert!(err.contains("at most"), "{err}");
}

#[test]
fn a_ca_loads_from_a_bundle_with_the_root_of_its_key() {
    let old = ClusterCa::generate("us-east.mesh").unwrap();
    let new = ClusterCa::generate("us-east.mesh").unwrap();
    let both = format!("{}{}", old.cert_pem(), new.cert_pem());
    let ca = ClusterCa::from_pem(&both, &new.key_pem(), "us-east.mesh", ("crt", "key")).unwrap();
    assert_eq!(ca.cert_pem(), new.cert_pem());
    assert_eq!(ca.trusted_pem(), both);
    let stranger = ClusterCa::generate("us-east.mesh").unwrap();
    let err = ClusterCa::from_pem(&both, &stranger.key_pem(), "us-east.mesh", ("crt", "key"))
        .unwrap_err();
    assert!(
        err.to_string().contains("belongs to the key in key"),
        "{err}"
    );
}

#[tokio::test]
async fn a_certificate_not_of_the_first_root_asks_for_a_renewal() {
    use crate::identity::{RotatingIdentity, SpiffeId};
    let old = ClusterCa::generate("us-east.mesh").unwrap();
    let new = ClusterCa::generate("us-east.mesh").unwrap();
    let id = SpiffeId::workload("us-east.mesh", "demo", "echo");
    let identity = RotatingIdentity::new(old.issue(&id, Duration::from_secs(60)).unwrap()).unwrap();
    let added = bundle("us-east", &[&old, &new]);
    let switched = bundle("us-east", &[&new, &old]);
    assert!(signed_by_first_root(&identity.current(), &added));
    assert!(!renew_if_signing_root_changed(&identity, &added), "add");
    assert!(!renew_if_signing_root_changed(
        &identity,
        &bundle("us-east", &[&old])
    ));
    assert!(!renew_if_signing_root_changed(
        &identity,
        &bundle("us-west", &[&new, &old])
    ));
    assert!(
        renew_if_signing_root_changed(&identity, &switched),
        "switch"
    );
    tokio::time::timeout(Duration::from_secs(1), identity.renewal_requested())
        .await
        .expect("the request is kept for the renewal loop");
    identity
        .replace(new.issue(&id, Duration::from_secs(60)).unwrap())
        .unwrap();
    assert!(
        !renew_if_signing_root_changed(&identity, &switched),
        "renewed"
    );
}
