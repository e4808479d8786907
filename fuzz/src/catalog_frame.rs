//! Catalog frames on a control stream (`mesh_gateway::read_frame`: a `u32` length, then JSON
//! `CatalogMessage`), each applied as the controller applies what the gateway forwards
//! (`mesh_core::peer_catalogs::PeerCatalogs::apply`, which applies deltas with
//! `ExportCatalog::apply`).

use std::time::Duration;

use mesh_core::catalog::{CatalogMessage, ExportCatalog};
use mesh_core::peer_catalogs::PeerCatalogs;
use mesh_gateway::{encode_frame, read_frame};

use super::poll::ready;

/// The peer at the other end of the stream (the seeds' catalogs name it).
const PEER: &str = "eu-central";
/// Frames read from one input at most.
const MAX_FRAMES: usize = 64;

/// Reads frames from `data` until it ends or a frame is refused, applying each message;
/// every message must survive re-framing, and a delta computed by `diff` must apply.
pub fn catalog_frame(data: &[u8]) {
    let mut stream = data;
    let mut peers = PeerCatalogs::new(Duration::from_secs(30));
    for _ in 0..MAX_FRAMES {
        let msg = match ready(read_frame(&mut stream)) {
            Ok(Some(msg)) => msg,
            Ok(None) => return,
            Err(e) => {
                let _ = (e.label(), e.to_string());
                return;
            }
        };
        let _ = msg.kind_label();
        let frame = encode_frame(&msg).expect("a decoded message can be framed again");
        let again = ready(read_frame(&mut frame.as_slice()));
        assert_eq!(again.ok().flatten().as_ref(), Some(&msg), "re-framing");
        let before = peers.get(PEER).map(|p| p.catalog.clone());
        match peers.apply(PEER, &msg) {
            Ok(()) => {
                if let CatalogMessage::Delta { delta } = &msg {
                    let after = &peers.get(PEER).expect("applied to a held catalog").catalog;
                    assert_eq!(after.version, delta.to_version);
                }
            }
            Err(e) => {
                let _ = e.to_string();
                assert_eq!(
                    peers.get(PEER).map(|p| &p.catalog),
                    before.as_ref(),
                    "a refused message changes nothing"
                );
            }
        }
        if let (Some(old), Some(new)) = (before, peers.get(PEER).map(|p| &p.catalog)) {
            diff_applies(&old, new);
        }
    }
}

/// What the owning side sends: the delta from `old` to `new` turns `old` into `new`.
fn diff_applies(old: &ExportCatalog, new: &ExportCatalog) {
    if old.cluster != new.cluster {
        return;
    }
    let delta = old.diff(new);
    let mut patched = old.clone();
    patched.apply(&delta).expect("a delta made by diff applies");
    assert_eq!(&patched, new, "diff then apply");
}
