//! Arbitrary bytes as one int8 product, on every integer kernel this CPU runs, against the
//! definition. Needs `--features runtime` (builds tract).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| autoglm_runtime::fuzzing::int8_kernels(data));
