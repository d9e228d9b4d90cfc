//! Arbitrary bytes as an HTTP request (first byte: route; rest: body) through `serve`'s router,
//! with the fixture packages `cls` and `emb` loaded. Needs `--features serve` (builds tract).
#![no_main]

use autoglm_export::{export, fixture, ExportOptions};
use autoglm_serve::fuzzing::Harness;
use autoglm_serve::{Config, ModelSpec};
use std::sync::OnceLock;

static HARNESS: OnceLock<(Harness, tempfile::TempDir)> = OnceLock::new();

fn harness() -> (Harness, tempfile::TempDir) {
    // libfuzzer-sys aborts on every panic, even one the code under test catches on purpose:
    // the runtime turns a panic inside tract into an error (`guarded` in backend.rs). Back to
    // the default hook, so that only panics that escape (a crash in the product) abort.
    let _ = std::panic::take_hook();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let write = |options: ExportOptions, name: &str| {
        let path = dir.path().join(name);
        export(&options).expect("fixture exports").write(&path).expect("writable");
        ModelSpec::parse(&format!("{name}={}", path.display())).expect("a valid spec")
    };
    let cls = write(fixture::options(dir.path(), true), "cls");
    let emb = write(fixture::options(dir.path(), false), "emb");
    let config = Config::new(vec![cls, emb]);
    (Harness::new(&config).expect("the fixture packages serve"), dir)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| HARNESS.get_or_init(harness).0.request(data));
