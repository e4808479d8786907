//! `cargo +nightly fuzz run topology_yaml`: see fuzz/README.md and the body in fuzz/src/topology_yaml.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::topology_yaml(data));
