//! Arbitrary bytes as a package's `model.onnx` (digest updated): load on tract, run if accepted.
//! Needs `--features runtime` (builds tract).
#![no_main]

use autoglm_export::fixture;
use autoglm_package::Package;
use std::sync::OnceLock;

static TEMPLATE: OnceLock<Package> = OnceLock::new();

fn template() -> Package {
    // libfuzzer-sys aborts on every panic, even one the code under test catches on purpose:
    // the runtime turns a panic inside tract into an error (`guarded` in backend.rs). Back to
    // the default hook, so that only panics that escape (a crash in the product) abort.
    let _ = std::panic::take_hook();
    let dir = tempfile::tempdir().expect("a temporary directory");
    fixture::classification_package(dir.path())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    autoglm_runtime::fuzzing::onnx_load(TEMPLATE.get_or_init(template), data)
});
