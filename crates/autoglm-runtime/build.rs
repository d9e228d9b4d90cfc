//! Hashes the runtime's sources (and the workspace's lock file) into
//! `AUTOGLM_RUNTIME_SOURCE_HASH`: the plan cache (src/plan_cache.rs) keys its files by it, so
//! a graph serialized by other code, or other versions of tract, is never read back.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let mut paths = Vec::new();
    files(&manifest.join("src"), &mut paths);
    paths.push(manifest.join("Cargo.toml"));
    paths.push(manifest.join("../../Cargo.lock"));
    paths.sort();
    // FNV-1a over names and contents: stable across compilers, unlike std's hasher.
    let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
    for path in &paths {
        println!("cargo:rerun-if-changed={}", path.display());
        if let Ok(bytes) = std::fs::read(path) {
            hash.write(
                path.strip_prefix(&manifest)
                    .unwrap_or(path)
                    .to_string_lossy()
                    .as_bytes(),
            );
            hash.write(&bytes);
        }
    }
    println!("cargo:rerun-if-changed={}", manifest.join("src").display());
    println!(
        "cargo:rustc-env=AUTOGLM_RUNTIME_SOURCE_HASH={:016x}",
        hash.finish()
    );
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}
