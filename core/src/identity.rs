//! Workload identity: SPIFFE IDs, the per-cluster certificate authority, trust bundles of linked
//! clusters, and the rustls configurations built from them.
//!
//! Each cluster is its own trust domain (`<cluster>.mesh` by default) with its own root. A peer
//! certificate is accepted only if its SPIFFE trust domain is one we know *and* its chain leads
//! to that trust domain's own root; errors name the trust domain and what to run to fix it.

mod ca;
mod rotating;
pub mod rotation;
mod rotation_store;
mod spiffe;
mod tls;
mod verify;

pub use ca::{CA_CERT_FILE, CaError, ClusterCa, WorkloadCsr, WorkloadIdentity};
pub use rotating::{IdentitySource, RotatingIdentity, Validity, not_after};
pub use rotation_store::{CaDirectory, ROTATION_FILE, RotationRecord};
pub use spiffe::{
    SpiffeError, SpiffeId, certificate_expiry, default_trust_domain, peer_spiffe_id,
    spiffe_id_of_cert,
};
pub use tls::{TlsError, client_config, server_config};
pub use verify::{TrustBundle, TrustBundles, TrustStore};
