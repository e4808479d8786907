//! The small servers the harness runs as separate processes of `mesh-bench` (so they do not
//! share a runtime with the load generator): the upstream every path ends at, the TCP sink at
//! the end of tunnels, and the TLS relays of the TCP+TLS tunnel baseline. Each writes a
//! `ReadyFile` once bound, like the mesh components, so `mesh-launcher` can start them.

pub mod relay;
pub mod sink;
pub mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use mesh_core::api::ReadyFile;

use crate::error::BenchError;

/// Writes the ready file of a helper server bound at `addr`.
pub fn write_ready(
    component: &str,
    addr: SocketAddr,
    path: Option<&Path>,
) -> Result<(), BenchError> {
    let Some(path) = path else { return Ok(()) };
    ReadyFile {
        component: component.to_string(),
        cluster: "bench".to_string(),
        addrs: BTreeMap::from([("listen".to_string(), addr)]),
        pid: std::process::id(),
    }
    .write(path)
    .map_err(|e| BenchError::io(path, e))
}
