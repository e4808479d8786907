//! `cargo +nightly fuzz run catalog_frame`: see fuzz/README.md and the body in fuzz/src/catalog_frame.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::catalog_frame(data));
