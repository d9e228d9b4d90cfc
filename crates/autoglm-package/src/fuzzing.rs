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
