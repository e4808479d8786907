//! The rotation's status as the admin API shows it (`GET /v1/ca/rotation`) and the request of a
//! step (`POST`). Wire messages: unknown fields are ignored.

use serde::{Deserialize, Serialize};

use super::{RotationPhase, RotationStep};

/// What a linked peer reports holding for this cluster's trust domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRoots {
    /// The peer cluster.
    pub cluster: String,
    /// The fingerprints of the roots it holds for this cluster, sorted; `None` when it has not
    /// said (no catalog from it yet, or a release that does not report them).
    pub held: Option<Vec<String>>,
}

/// Certificates issued to one identity that are still valid, by root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCounts {
    /// The SPIFFE ID.
    pub identity: String,
    /// Valid certificates signed by the old root.
    pub old_root: u32,
    /// Certificates signed by the new root.
    pub new_root: u32,
}

/// A root as `GET /v1/ca/rotation` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootView {
    /// SHA-256 fingerprint.
    pub fingerprint: String,
    /// Signs new certificates.
    pub signing: bool,
}

/// `POST /v1/ca/rotation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationRequest {
    /// The step to take.
    pub step: RotationStep,
}

/// `GET /v1/ca/rotation`: where the cluster's root rotation stands. A wire message: unknown
/// fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationStatus {
    /// The cluster.
    pub cluster: String,
    /// Its trust domain.
    pub trust_domain: String,
    /// The phase; `None` when no rotation was ever started.
    pub phase: Option<RotationPhase>,
    /// When the phase began (Unix milliseconds).
    #[serde(default)]
    pub phase_since_unix_ms: Option<u64>,
    /// The roots trusted now.
    pub roots: Vec<RootView>,
    /// The old root of the rotation, when one was started.
    #[serde(default)]
    pub old_root: Option<String>,
    /// The new root of the rotation, when one was started.
    #[serde(default)]
    pub new_root: Option<String>,
    /// What every linked peer holds for this cluster.
    pub peers: Vec<PeerRoots>,
    /// Valid certificates per identity, by root (during a rotation).
    pub issued: Vec<IssuedCounts>,
    /// What the phase still waits for; empty when it is complete.
    pub waiting_for: Vec<String>,
    /// The step to take next, when the phase is complete.
    pub next_step: Option<RotationStep>,
}

impl RotationStatus {
    /// Whether the phase is complete.
    pub fn complete(&self) -> bool {
        self.waiting_for.is_empty()
    }
}
