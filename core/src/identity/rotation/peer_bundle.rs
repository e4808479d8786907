//! How a bundle a peer announces on its link may replace the one held for it.

use super::super::verify::{TrustBundle, TrustBundles};
use super::bundle_fingerprints;

/// Most roots a peer's announced bundle may hold (two during a rotation; a little slack).
const MAX_PEER_ROOTS: usize = 4;

/// What a peer's announced bundle does to the one held for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleUpdate {
    /// The same roots: nothing to store.
    Unchanged,
    /// Store this bundle for the peer.
    Replace(TrustBundle),
}

/// Judges a bundle `held.cluster` announced on its link against the one held for it: it may
/// only speak for its own trust domain, must name itself, parse, and keep at least one root
/// of the held bundle (a rotation adds a root, then retires one; a root replaced outright is
/// a new trust relationship, made with `mesh link`).
pub fn accept_peer_bundle(
    held: &TrustBundle,
    announced: &TrustBundle,
) -> Result<BundleUpdate, String> {
    if announced.trust_domain != held.trust_domain {
        return Err(format!(
            "cluster {} announced a bundle for trust domain {}, but its own is {}; only its own \
             domain's roots are taken from it",
            held.cluster, announced.trust_domain, held.trust_domain
        ));
    }
    if announced.cluster != held.cluster {
        return Err(format!(
            "a bundle of cluster {} arrived on the link to {}",
            announced.cluster, held.cluster
        ));
    }
    let new = bundle_fingerprints(&announced.ca_pem)
        .map_err(|e| format!("cluster {}'s announced bundle: {e}", held.cluster))?;
    if new.len() > MAX_PEER_ROOTS {
        return Err(format!(
            "cluster {}'s announced bundle holds {} roots (at most {MAX_PEER_ROOTS})",
            held.cluster,
            new.len()
        ));
    }
    TrustBundles::parse(std::slice::from_ref(announced))
        .map_err(|e| format!("cluster {}'s announced bundle: {e}", held.cluster))?;
    let old = bundle_fingerprints(&held.ca_pem).unwrap_or_default();
    if new == old {
        return Ok(BundleUpdate::Unchanged);
    }
    if !new.iter().any(|f| old.contains(f)) {
        return Err(format!(
            "cluster {}'s announced bundle shares no root with the one held for it; a root \
             replaced outright needs `mesh link` again",
            held.cluster
        ));
    }
    Ok(BundleUpdate::Replace(announced.clone()))
}
