//! Arbitrary bytes as a `.tar` package: `Package::from_tar` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| autoglm_package::fuzzing::package_tar(data));
