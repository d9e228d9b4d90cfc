//! Replays the committed seeds of the `http_request` fuzz target (`fuzz/corpus/`,
//! ROBUSTNESS.md) through the function the target runs, with the same two fixture packages.

use crate::Packages;
use autoglm_serve::fuzzing::Harness;
use std::path::PathBuf;

#[test]
fn http_request_corpus_replays() {
    let packages = Packages::new();
    let harness = Harness::new(&packages.config()).unwrap();
    let dir = autoglm_testkit::workspace().join("fuzz/corpus/http_request");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    assert!(paths.len() >= 3, "{}: too few seeds", dir.display());
    for path in paths {
        let bytes = std::fs::read(&path).unwrap();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness.request(&bytes)));
        assert!(outcome.is_ok(), "http_request fails on {}", path.display());
    }
}
