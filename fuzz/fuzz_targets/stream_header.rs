//! `cargo +nightly fuzz run stream_header`: see fuzz/README.md and the body in fuzz/src/stream_header.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mesh_fuzz::stream_header(data));
