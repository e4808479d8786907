//! `cargo +nightly fuzz run connect_request`: see fuzz/README.md and the body in fuzz/src/connect_request.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::connect_request(data));
