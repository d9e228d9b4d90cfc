//! Replays the committed seed corpora of the `package_tar` and `manifest_json` fuzz targets
//! (`fuzz/corpus/<target>/`) through the same functions the targets run, on stable: every file
//! must go through without a panic (ROBUSTNESS.md).

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = autoglm_testkit::workspace()
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{}: too few seeds", dir.display());
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{target} panics on {}", path.display());
    }
}

#[test]
fn package_tar_corpus_replays() {
    replay("package_tar", autoglm_package::fuzzing::package_tar);
}

/// The directory reader, on the same seeds as the tar reader (their members become files).
#[test]
fn package_dir_corpus_replays() {
    replay("package_tar", autoglm_package::fuzzing::package_dir);
}

#[test]
fn manifest_json_corpus_replays() {
    replay("manifest_json", autoglm_package::fuzzing::manifest_json);
}

/// The corpora hold at least one input that is accepted, so the round trips are exercised too.
#[test]
fn corpus_includes_valid_inputs() {
    assert!(corpus("package_tar")
        .iter()
        .any(|(_, b)| autoglm_package::Package::from_tar(b).is_ok()));
    // The same seed also opens as a directory, so the directory round trip is exercised.
    let tmp = tempfile::tempdir().unwrap();
    let (_, valid) = corpus("package_tar")
        .into_iter()
        .find(|(p, _)| p.ends_with("valid_fixture.tar"))
        .unwrap();
    let pkg = autoglm_package::Package::from_tar(&valid).unwrap();
    pkg.write_dir(&tmp.path().join("p")).unwrap();
    assert_eq!(
        autoglm_package::Package::open(tmp.path().join("p")).unwrap(),
        pkg
    );
    assert!(corpus("manifest_json")
        .iter()
        .any(|(_, b)| autoglm_package::Manifest::from_json(b).is_ok()));
}
