//! Root CA rotation on the controller: the admin API's `GET /v1/ca/rotation` (where the
//! rotation stands, what its phase waits for) and `POST /v1/ca/rotation` (take a step). The
//! phases and their waits are [`mesh_core::identity::rotation`]'s; the files are
//! [`mesh_core::identity::CaDirectory`]'s; the swappable signing CA and its ledger of issued
//! certificates are [`signer`]'s.
//!
//! A step puts the new CA in force at once: the CA service signs with its root, the
//! controller's own trust store and the cluster's bundle (published to sidecars and the gateway
//! in snapshots, and to every peer in the catalog on the link) hold its trusted roots.

pub(crate) mod ledger;
pub(crate) mod signer;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::identity::rotation::{
    RootView, RotationInputs, RotationPhase, RotationStatus, RotationStep, StepPlan,
    bundle_fingerprints, plan_step, waiting_for,
};
use mesh_core::identity::{CaDirectory, RotationRecord, default_trust_domain};

use crate::controller::Controller;
use crate::error::{ApiError, FederationError};

/// Time given to snapshots to carry a new bundle to this cluster's sidecars and gateway (they
/// are pushed at once; this covers a slow consumer).
const SETTLE: Duration = Duration::from_secs(3);

/// Now, in Unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The controller's root rotation.
#[derive(Debug)]
pub(crate) struct CaRotation {
    cluster: String,
    /// The cluster's state directory; `None` in Kubernetes mode, where the CA is a Secret and
    /// rotation is not built.
    dir: Option<PathBuf>,
    record: Mutex<Option<RotationRecord>>,
    /// Held while a step is checked and taken: one step at a time.
    steps: Mutex<()>,
}

impl CaRotation {
    /// The rotation of `cluster` whose CA lives in `dir` (as recorded there), or of a
    /// Kubernetes-mode controller (`None`).
    pub(crate) fn load(cluster: &str, dir: Option<&Path>) -> Result<Self, FederationError> {
        let record = match dir {
            Some(dir) => {
                CaDirectory::new(dir, &default_trust_domain(cluster))
                    .load()?
                    .1
            }
            None => None,
        };
        Ok(Self {
            cluster: cluster.to_string(),
            dir: dir.map(Path::to_path_buf),
            record: Mutex::new(record),
            steps: Mutex::new(()),
        })
    }

    fn record(&self) -> Option<RotationRecord> {
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where the rotation stands.
    pub(crate) fn status(&self, controller: &Controller) -> RotationStatus {
        let record = self.record();
        let signer = controller.ca().signer();
        let ca = signer.current();
        let trusted = bundle_fingerprints(ca.trusted_pem()).unwrap_or_default();
        let signing = ca.signing_fingerprint();
        let peers = controller.read(|s, _| s.peer_roots());
        let now_ms = unix_ms();
        let cert_ttl = controller.ca().cert_ttl();
        let ledger = signer.ledger();
        let issued = match &record {
            Some(r) if r.phase == RotationPhase::Switched => {
                ledger.counts(&r.old_root, &r.new_root, r.phase_since_unix_ms, now_ms)
            }
            _ => Vec::new(),
        };
        let phase = record.as_ref().map(|r| r.phase);
        let waits = waiting_for(&RotationInputs {
            phase,
            trusted: &trusted,
            peers: &peers,
            issued: &issued,
            ledger_complete: ledger.complete(now_ms, cert_ttl),
            now_ms,
            phase_since_ms: record.as_ref().map_or(0, |r| r.phase_since_unix_ms),
            settle: SETTLE,
            cert_ttl,
        });
        RotationStatus {
            cluster: self.cluster.clone(),
            trust_domain: signer.trust_domain().to_string(),
            phase,
            phase_since_unix_ms: record.as_ref().map(|r| r.phase_since_unix_ms),
            roots: trusted
                .iter()
                .map(|f| RootView {
                    fingerprint: f.clone(),
                    signing: *f == signing,
                })
                .collect(),
            old_root: record.as_ref().map(|r| r.old_root.clone()),
            new_root: record.as_ref().map(|r| r.new_root.clone()),
            peers,
            issued,
            next_step: if waits.is_empty() {
                RotationStep::next(phase)
            } else {
                None
            },
            waiting_for: waits,
        }
    }

    /// Takes `step` if the rotation is ready for it (idempotent: a step already taken answers
    /// the status); a refusal says what to do or what the previous step waits for.
    pub(crate) fn step(
        &self,
        controller: &Controller,
        step: RotationStep,
    ) -> Result<RotationStatus, ApiError> {
        let _one_at_a_time = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        let Some(dir) = &self.dir else {
            return Err(ApiError::Conflict(
                "root rotation is not available in Kubernetes mode (the CA is the \
                 mesh-ca Secret); rotate it by replacing the Secret and linking the \
                 clusters again"
                    .into(),
            ));
        };
        let status = self.status(controller);
        match plan_step(status.phase, &status.waiting_for, step) {
            Ok(StepPlan::AlreadyDone) => return Ok(status),
            Ok(StepPlan::Apply) => {}
            Err(e) => return Err(ApiError::Conflict(e.to_string())),
        }
        let cad = CaDirectory::new(dir, &default_trust_domain(&self.cluster));
        let now = unix_ms();
        let (ca, taken) = match step {
            RotationStep::Add => cad.add(now),
            RotationStep::Switch => cad.switch(now),
            RotationStep::Retire => cad.retire(now),
        }
        .map_err(|e| ApiError::Internal(format!("root rotation, step {}: {e}", step.as_str())))?;
        let bundle = signer::bundle_of(&ca, &self.cluster);
        controller
            .ca()
            .signer()
            .replace(ca, &self.cluster)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        controller.update(|state, _| state.set_own_bundle(bundle));
        tracing::info!(
            step = step.as_str(),
            old_root = %taken.old_root,
            new_root = %taken.new_root,
            "root rotation step taken"
        );
        *self.record.lock().unwrap_or_else(|p| p.into_inner()) = Some(taken);
        Ok(self.status(controller))
    }
}
