//! `cargo +nightly fuzz run control_api_json`: see fuzz/README.md and the body in fuzz/src/control_api_json.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::control_api_json(data));
