//! `cargo +nightly fuzz run scenario_yaml`: see fuzz/README.md and the body in fuzz/src/scenario_yaml.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::scenario_yaml(data));
