//! Arbitrary bytes as `manifest.json`: parse and validate must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| autoglm_package::fuzzing::manifest_json(data));
