//! Compiled machine code kept as `.cwasm` files: compiling the component takes tens of
//! seconds, reading it back milliseconds.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use wasmtime::component::Component;
use wasmtime::Engine;

/// How the component's machine code was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiled {
    /// Read from this `.cwasm` in the cache.
    Cached(PathBuf),
    /// Compiled now, and written to this `.cwasm`.
    CompiledAndCached(PathBuf),
    /// Compiled now; no cache (disabled, or the directory was not writable).
    Compiled,
}

/// The cache directory: `AUTOGLM_WASM_CACHE`, else `$XDG_CACHE_HOME/autoglm-edge/wasm`, else
/// `~/.cache/autoglm-edge/wasm`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("AUTOGLM_WASM_CACHE") {
        return Some(dir.into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("autoglm-edge/wasm"))
}

/// The `.cwasm` for `bytes` under `cache`: read it if present and valid, else compile and write it.
pub(crate) fn compile_cached(
    engine: &Engine,
    bytes: &[u8],
    cache: Option<&Path>,
) -> wasmtime::Result<(Component, Compiled)> {
    let Some(dir) = cache else {
        return Ok((Component::new(engine, bytes)?, Compiled::Compiled));
    };
    let mut compat = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut compat);
    let key = format!(
        "autoglm-edge-{}-{:016x}.cwasm",
        &autoglm_package::sha256_hex(bytes)[..16],
        std::hash::Hasher::finish(&compat)
    );
    let file = dir.join(key);
    if file.is_file() {
        // SAFETY: wasmtime runs the bytes of a `.cwasm` as machine code, trusting that they are
        // its own output. This file is: it is named by the sha256 of the component it was
        // compiled from and by this engine's compatibility hash, it is written only below (to a
        // temporary name, renamed into place when complete), and the cache directory is the
        // user's own. wasmtime still checks its header and refuses other versions or settings;
        // then we compile afresh.
        #[allow(unsafe_code)]
        let cached = unsafe { Component::deserialize_file(engine, &file) };
        if let Ok(component) = cached {
            return Ok((component, Compiled::Cached(file)));
        }
    }
    let component = Component::new(engine, bytes)?;
    let written = component.serialize().ok().and_then(|code| {
        std::fs::create_dir_all(dir).ok()?;
        // Unique per process and call: two hosts compiling at once never share a temporary.
        static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{}-{n}.tmp", std::process::id()));
        std::fs::write(&tmp, code).ok()?;
        std::fs::rename(&tmp, &file).ok()
    });
    let compiled = match written {
        Some(()) => Compiled::CompiledAndCached(file),
        None => Compiled::Compiled,
    };
    Ok((component, compiled))
}
