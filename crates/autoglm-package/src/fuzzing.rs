//! The bodies of the fuzz targets in `fuzz/` (cargo-fuzz, nightly) and of the corpus replay
//! tests (`tests/fuzz_corpus.rs`, stable): one function per target, so that what the fuzzer
//! explores and what `cargo test` replays are the same code. Not a public API.
//!
//! Each function takes arbitrary bytes and must never panic: bad input is an `Err`, and an
//! input that is accepted must survive a write/read round trip unchanged.

use crate::{Manifest, Package};

/// Target `package_tar`: the bytes of a `.tar` package. An archive that verifies must write
/// back (`to_tar`) to an archive that verifies to the same package.
pub fn package_tar(bytes: &[u8]) {
    let Ok(pkg) = Package::from_tar(bytes) else {
        return;
    };
    let again = Package::from_tar(&pkg.to_tar())
        .unwrap_or_else(|e| panic!("a verified package does not read back from its own tar: {e}"));
    assert_eq!(again, pkg, "tar round trip changed the package");
}

/// Target `manifest_json`: the bytes of a `manifest.json` (parse and validate). A manifest that
/// is accepted must serialize to JSON that is accepted and parses to the same manifest.
pub fn manifest_json(bytes: &[u8]) {
    let Ok(manifest) = Manifest::from_json(bytes) else {
        return;
    };
    let json = manifest.to_json();
    let again = Manifest::from_json(&json).unwrap_or_else(|e| {
        panic!("an accepted manifest does not parse back from its own JSON: {e}")
    });
    assert_eq!(again, manifest, "JSON round trip changed the manifest");
}

/// Target `package_dir`: the members of a `.tar` (read leniently: plain names only, at most 16
/// members of at most 1 MiB, nothing verified) written as the files of a directory, then the
/// directory opened as a package, the path `Package::open` takes for a folder. A directory that
/// verifies must write back (`write_dir`) to one that opens to the same package. The directory
/// is this process's own scratch folder under the system temporary directory, emptied first.
pub fn package_dir(bytes: &[u8]) {
    use std::io::Read;
    let scratch = std::env::temp_dir().join(format!("autoglm-fuzz-dir-{}", std::process::id()));
    let dir = scratch.join("in");
    let _ = std::fs::remove_dir_all(&scratch);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let mut archive = tar::Archive::new(bytes);
    if let Ok(entries) = archive.entries() {
        for entry in entries.take(16) {
            let Ok(entry) = entry else { break };
            let Ok(name) = entry.path().map(|p| p.to_string_lossy().into_owned()) else {
                continue;
            };
            let plain = !name.is_empty()
                && !name.starts_with('.')
                && name.len() <= 100
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            let mut data = Vec::new();
            if plain && entry.take(1 << 20).read_to_end(&mut data).is_ok() {
                let _ = std::fs::write(dir.join(&name), &data);
            }
        }
    }
    if let Ok(pkg) = Package::open(&dir) {
        let out = scratch.join("out");
        pkg.write_dir(&out)
            .unwrap_or_else(|e| panic!("a verified package cannot be written back: {e}"));
        let again = Package::open(&out)
            .unwrap_or_else(|e| panic!("a written package does not open again: {e}"));
        assert_eq!(again, pkg, "directory round trip changed the package");
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
