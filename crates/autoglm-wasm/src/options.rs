//! Engine-wide settings and per-model limits.

use std::path::PathBuf;
use std::time::Duration;

/// Engine-wide settings, fixed when the component is compiled.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Compile epoch checks in (at every function entry and loop), so that
    /// [`Limits::deadline`] can be enforced. Off unless asked for: they made the machine code
    /// 20 % larger and the first compile 0.8 s longer (BENCHMARKS.md, wave 26).
    pub deadlines: bool,
    /// Compile fuel checks in, so that [`Limits::fuel`] can be enforced (slower code).
    pub fuel: bool,
    /// Where compiled `.cwasm` files are kept; `None`: [`default_cache_dir`]. An unwritable
    /// directory only means no cache.
    pub cache_dir: Option<PathBuf>,
    /// Do not read or write the cache (always compile).
    pub no_cache: bool,
    /// Keys every package must be signed by, checked by the host before the component sees
    /// the package; empty: no signature required (the digests alone are checked).
    pub trust: autoglm_package::TrustedKeys,
    /// Let the component compute the digests of a package given as bytes (its `load`)
    /// instead of the host, natively, before it (`load-verified`, the default: sha256 runs
    /// ~10x faster here, with the CPU's instructions). A package directory opened without
    /// `trust` is always verified by the component, as it reads it.
    pub verify_in_guest: bool,
}

/// Per-model limits, enforced on every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of linear memory the component may hold (package, weights, activations).
    pub memory: usize,
    /// Longest wall-clock time one call (load included) may take; `None`: no limit. Needs
    /// [`HostOptions::deadlines`].
    pub deadline: Option<Duration>,
    /// Most fuel one call may use (needs [`HostOptions::fuel`]); `None`: no limit.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    /// 1 GiB, no deadline, no fuel limit: enough for MiniLM-size packages with batches of 32
    /// texts at 512 tokens.
    fn default() -> Self {
        Limits {
            memory: 1 << 30,
            deadline: None,
            fuel: None,
        }
    }
}
