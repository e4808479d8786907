//! The bodies of the mesh's fuzz targets: each takes libFuzzer's input bytes, runs them through
//! the same public functions the product uses on bytes from a peer or a file, and panics only
//! on a bug (a panic inside the product, or a broken invariant asserted here).
//!
//! This file is compiled twice: as the library of the `mesh-fuzz` crate, whose binaries in
//! `fuzz_targets/` are one call each, and as a module of the workspace test
//! `cli/tests/fuzz_corpus.rs`, which runs every body over its committed seed corpus. A change
//! to a product API that breaks a target therefore fails the workspace's own build and tests.

mod catalog_frame;
mod connect_request;
mod control_api_json;
mod policy_yaml;
mod poll;
mod scenario_yaml;
mod stream_header;
mod topology_yaml;
mod yaml_error;

pub use catalog_frame::catalog_frame;
pub use connect_request::connect_request;
pub use control_api_json::control_api_json;
pub use policy_yaml::policy_yaml;
pub use scenario_yaml::scenario_yaml;
pub use stream_header::stream_header;
pub use topology_yaml::topology_yaml;

/// A fuzz target's body.
pub type Body = fn(&[u8]);

/// Every target: its name (the binary in `fuzz_targets/`, the folder under `corpus/`) and body.
pub const TARGETS: &[(&str, Body)] = &[
    ("stream_header", stream_header),
    ("connect_request", connect_request),
    ("catalog_frame", catalog_frame),
    ("control_api_json", control_api_json),
    ("topology_yaml", topology_yaml),
    ("scenario_yaml", scenario_yaml),
    ("policy_yaml", policy_yaml),
];
