//! Arbitrary bytes as a package directory (the members of a tar written as files): opening it
//! with `Package::open` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| autoglm_package::fuzzing::package_dir(data));
