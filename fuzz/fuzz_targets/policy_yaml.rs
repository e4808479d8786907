//! `cargo +nightly fuzz run policy_yaml`: see fuzz/README.md and the body in fuzz/src/policy_yaml.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::policy_yaml(data));
