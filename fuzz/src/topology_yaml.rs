//! The cluster-set topology file (`mesh up --topology`), read by `Topology::parse`.

use mesh_core::config::Topology;

use super::yaml_error::{FILE, assert_locates};

/// Parses `data` (when it is text, as a file read for the loader must be) as a topology;
/// a refusal names the file and the line.
pub fn topology_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Topology::parse(text, FILE) {
        Ok(topology) => {
            assert!(!topology.clusters.is_empty(), "{topology:?}");
            let _ = topology.with_ephemeral_ports();
        }
        Err(e) => assert_locates(&e.to_string()),
    }
}
