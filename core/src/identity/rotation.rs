//! Root CA rotation: the phases, what each one waits for, and how a peer's announced trust
//! bundle may replace the one held for it. Pure: times are passed in, nothing here does I/O
//! (the files are [`super::rotation_store`]'s, the controller drives the steps).
//!
//! A rotation of a cluster's root goes through three steps, each waiting before the next:
//!
//! 1. [`RotationStep::Add`]: a new root is generated and trusted beside the old one. The cluster's
//!    bundle (both roots) reaches its sidecars and gateway in their snapshots and every linked
//!    peer in the catalog on the link; done when every peer reports holding both roots and the
//!    snapshots had time to settle.
//! 2. [`RotationStep::Switch`]: the new root signs. Done when no certificate of the old root can
//!    still be in use: every identity that held one was reissued by the new root (as counted
//!    by the controller, which knows what it signed), or every old certificate has expired.
//! 3. [`RotationStep::Retire`]: the old root is dropped from the bundle, everywhere the same way;
//!    done when every peer reports holding only the new root.

use std::collections::BTreeSet;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::verify::TrustBundle;

/// Admin API path of the rotation: `GET` its status, `POST` a [`RotationRequest`].
pub const PATH_CA_ROTATION: &str = "/v1/ca/rotation";

/// The hex SHA-256 of a certificate's DER: how roots are named on the wire and in status.
pub fn root_fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

/// The fingerprints of every certificate in `pem`, sorted and without duplicates; an error
/// when the PEM is malformed or holds none.
pub fn bundle_fingerprints(pem: &str) -> Result<Vec<String>, String> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("malformed PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the PEM".into());
    }
    let set: BTreeSet<String> = certs.iter().map(root_fingerprint).collect();
    Ok(set.into_iter().collect())
}

/// The short form of a fingerprint shown to people (16 hex digits).
pub fn short(fingerprint: &str) -> &str {
    fingerprint.get(..16).unwrap_or(fingerprint)
}

/// The PEM of the certificate in `bundle_pem` whose public key is `public_key`, if any.
pub(super) fn signing_root_of(
    bundle_pem: &str,
    public_key: &[u8],
) -> Result<Option<String>, String> {
    use x509_parser::prelude::FromDer;
    for block in pem_blocks(bundle_pem) {
        let Some(cert) = rustls_pemfile::certs(&mut block.as_bytes()).next() else {
            continue;
        };
        let cert = cert.map_err(|e| format!("malformed PEM: {e}"))?;
        let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref())
            .map_err(|e| format!("a certificate does not parse: {e}"))?;
        if parsed.public_key().subject_public_key.data.as_ref() == public_key {
            return Ok(Some(block));
        }
    }
    Ok(None)
}

/// Each certificate block of `pem`, as text ending in a newline.
pub(super) fn pem_blocks(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let stop = start + len + END.len();
        blocks.push(format!("{}\n", &rest[start..stop]));
        rest = &rest[stop..];
    }
    blocks
}

/// Whether `identity`'s certificate chains to the first root of `own` (its cluster's bundle,
/// which lists the signing root first).
pub fn signed_by_first_root(identity: &super::WorkloadIdentity, own: &TrustBundle) -> bool {
    let Some(first) = pem_blocks(&own.ca_pem).into_iter().next() else {
        return false;
    };
    let Ok(roots) = super::verify::TrustBundles::parse(&[TrustBundle {
        ca_pem: first,
        ..own.clone()
    }]) else {
        return false;
    };
    let Some((leaf, rest)) = identity.chain.split_first() else {
        return false;
    };
    let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    roots
        .verify_chain(leaf, rest, rustls::pki_types::UnixTime::now(), &algs)
        .is_ok()
}

/// The in-band "reissue now" hint of a root rotation: a cluster's bundle lists its signing
/// root first, so when a component's certificate does not chain to the first root of its own
/// cluster's bundle (the switch step put the new root first), it asks its renewal loop to renew
/// now instead of at 2/3 of the lifetime. Returns whether it asked.
pub fn renew_if_signing_root_changed(
    identity: &super::RotatingIdentity,
    own: &TrustBundle,
) -> bool {
    if own.trust_domain != identity.id().trust_domain
        || pem_blocks(&own.ca_pem).len() < 2
        || signed_by_first_root(&identity.current(), own)
    {
        return false;
    }
    identity.request_renewal();
    true
}

/// Where a rotation stands, as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationPhase {
    /// Both roots trusted, the old one signs.
    Added,
    /// Both roots trusted, the new one signs.
    Switched,
    /// Only the new root is trusted (the rotation's last step was taken).
    Retired,
}

/// A step of `mesh ca rotate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RotationStep {
    /// Generate the new root and trust both.
    Add,
    /// Sign with the new root.
    Switch,
    /// Drop the old root.
    Retire,
}

impl RotationStep {
    /// The phase this step leads to.
    pub fn phase(self) -> RotationPhase {
        match self {
            RotationStep::Add => RotationPhase::Added,
            RotationStep::Switch => RotationPhase::Switched,
            RotationStep::Retire => RotationPhase::Retired,
        }
    }

    /// The step a rotation in `phase` takes next; `None` when the rotation is over (or none
    /// started). A complete retire ends it: the next `add` starts another rotation.
    pub fn next(phase: Option<RotationPhase>) -> Option<RotationStep> {
        match phase {
            Some(RotationPhase::Added) => Some(RotationStep::Switch),
            Some(RotationPhase::Switched) => Some(RotationStep::Retire),
            Some(RotationPhase::Retired) | None => None,
        }
    }

    /// The word used in flags and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RotationStep::Add => "add",
            RotationStep::Switch => "switch",
            RotationStep::Retire => "retire",
        }
    }
}

/// What taking a step would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPlan {
    /// Take it.
    Apply,
    /// It was already taken (steps are idempotent): nothing to do.
    AlreadyDone,
}

/// Why a step cannot be taken now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepRefusal {
    /// The step does not follow the phase.
    #[error("cannot {step} now: {reason}")]
    OutOfOrder {
        /// The step asked for.
        step: &'static str,
        /// Why, and what to do instead.
        reason: String,
    },
    /// The previous step is still waiting for something.
    #[error("cannot {step} yet: the {phase} step still waits for: {}", waiting_for.join("; "))]
    Waiting {
        /// The step asked for.
        step: &'static str,
        /// The step that is not done.
        phase: &'static str,
        /// What it waits for.
        waiting_for: Vec<String>,
    },
}

fn phase_step(phase: RotationPhase) -> &'static str {
    match phase {
        RotationPhase::Added => "add",
        RotationPhase::Switched => "switch",
        RotationPhase::Retired => "retire",
    }
}

/// Whether `step` may be taken in `phase`, given what the current phase still waits for
/// (`waiting_for` empty: it is complete). Taking a step twice is [`StepPlan::AlreadyDone`].
pub fn plan_step(
    phase: Option<RotationPhase>,
    waiting_for: &[String],
    step: RotationStep,
) -> Result<StepPlan, StepRefusal> {
    let out_of_order = |reason: &str| StepRefusal::OutOfOrder {
        step: step.as_str(),
        reason: reason.to_string(),
    };
    let wait = |phase: RotationPhase| -> Result<StepPlan, StepRefusal> {
        if waiting_for.is_empty() {
            Ok(StepPlan::Apply)
        } else {
            Err(StepRefusal::Waiting {
                step: step.as_str(),
                phase: phase_step(phase),
                waiting_for: waiting_for.to_vec(),
            })
        }
    };
    if phase == Some(step.phase()) {
        return Ok(StepPlan::AlreadyDone);
    }
    match (step, phase) {
        (RotationStep::Add, None) => Ok(StepPlan::Apply),
        (RotationStep::Add, Some(RotationPhase::Retired)) => wait(RotationPhase::Retired),
        (RotationStep::Add, Some(_)) => Err(out_of_order(
            "a rotation is in progress; finish it with switch and retire",
        )),
        (RotationStep::Switch, Some(RotationPhase::Added)) => wait(RotationPhase::Added),
        (RotationStep::Switch, _) => Err(out_of_order(
            "no new root was added; start the rotation with add",
        )),
        (RotationStep::Retire, Some(RotationPhase::Switched)) => wait(RotationPhase::Switched),
        (RotationStep::Retire, Some(RotationPhase::Added)) => Err(out_of_order(
            "the old root still signs every certificate; switch first",
        )),
        (RotationStep::Retire, _) => Err(out_of_order(
            "no rotation is in progress; start one with add",
        )),
    }
}

/// Everything the wait of a phase is judged on.
#[derive(Debug, Clone)]
pub struct RotationInputs<'a> {
    /// The phase.
    pub phase: Option<RotationPhase>,
    /// Fingerprints of the roots this cluster trusts now, sorted.
    pub trusted: &'a [String],
    /// The linked peers' reports.
    pub peers: &'a [PeerRoots],
    /// Valid certificates per identity (from the controller's ledger).
    pub issued: &'a [IssuedCounts],
    /// Whether the ledger saw every certificate that may still be valid (false when the
    /// controller started less than a certificate lifetime ago: earlier ones are unknown).
    pub ledger_complete: bool,
    /// Now (Unix milliseconds).
    pub now_ms: u64,
    /// When the phase began (Unix milliseconds).
    pub phase_since_ms: u64,
    /// Time given to snapshots to carry a new bundle to the cluster's own sidecars and
    /// gateway, which report nothing back.
    pub settle: Duration,
    /// The longest lifetime of a certificate: after the switch plus this, no certificate of
    /// the old root is valid anywhere.
    pub cert_ttl: Duration,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the current phase still waits for, in words a person can act on; empty when it is
/// complete.
pub fn waiting_for(inputs: &RotationInputs<'_>) -> Vec<String> {
    let mut waits = Vec::new();
    let Some(phase) = inputs.phase else {
        return waits;
    };
    let elapsed = inputs.now_ms.saturating_sub(inputs.phase_since_ms);
    match phase {
        RotationPhase::Added | RotationPhase::Retired => {
            let want = if phase == RotationPhase::Added {
                "both roots"
            } else {
                "only the new root"
            };
            for peer in inputs.peers {
                match &peer.held {
                    Some(held) if held.as_slice() == inputs.trusted => {}
                    Some(held) => waits.push(format!(
                        "linked cluster {} to hold {want} (it holds {} root(s): {})",
                        peer.cluster,
                        held.len(),
                        held.iter().map(|f| short(f)).collect::<Vec<_>>().join(", ")
                    )),
                    None => waits.push(format!(
                        "linked cluster {} to report the roots it holds (is its link up?)",
                        peer.cluster
                    )),
                }
            }
            if elapsed < ms(inputs.settle) {
                waits.push(format!(
                    "the bundle to reach this cluster's sidecars and gateway ({} ms left)",
                    ms(inputs.settle) - elapsed
                ));
            }
        }
        RotationPhase::Switched => {
            if elapsed >= ms(inputs.cert_ttl) {
                // Every certificate of the old root has expired, whatever the ledger says.
                return waits;
            }
            for counts in inputs.issued {
                if counts.old_root > counts.new_root {
                    waits.push(format!(
                        "{} to be reissued by the new root ({} valid certificate(s) of the old \
                         root, {} of the new)",
                        counts.identity, counts.old_root, counts.new_root
                    ));
                }
            }
            if !inputs.ledger_complete {
                waits.push(format!(
                    "certificates issued before this controller started to expire (at most {} \
                     ms)",
                    ms(inputs.cert_ttl) - elapsed
                ));
            }
        }
    }
    waits
}

mod peer_bundle;
mod status;
#[cfg(test)]
mod tests;

pub use peer_bundle::{BundleUpdate, accept_peer_bundle};
pub use status::{IssuedCounts, PeerRoots, RootView, RotationRequest, RotationStatus};
