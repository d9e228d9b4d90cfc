//! What can go wrong on the host's side of the component, and the component's own errors.

use crate::bindings::wit;
use std::path::PathBuf;
use std::time::Duration;

/// Why the host could not run the component, or the component refused a call.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The component's `error.invalid-package`: not a package, corrupt, digest mismatch, ...
    #[error("invalid package: {0}")]
    InvalidPackage(String),
    /// The component's `error.invalid-input`.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The component's `error.runtime`.
    #[error("model: {0}")]
    Runtime(String),
    #[error("the component needs more memory than its cap of {limit} bytes (it asked for {requested}); raise the memory limit")]
    MemoryLimit { limit: usize, requested: usize },
    #[error("the call ran past its deadline of {0:?} and was stopped")]
    Deadline(Duration),
    #[error("the call used up its fuel ({0} units) and was stopped")]
    OutOfFuel(u64),
    /// A [`crate::Limits`] field set on a host compiled without its checks.
    #[error("Limits::{limit} needs a host with HostOptions::{option} (its checks are compiled in only when asked for)")]
    LimitNotCompiled {
        limit: &'static str,
        option: &'static str,
    },
    /// Any other trap: a bug in the component (a panic), reported with its wasm backtrace.
    #[error("the component trapped: {0}")]
    Trap(String),
    /// The component file could not be read, compiled or instantiated.
    #[error("component {path}: {message}")]
    Component { path: PathBuf, message: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl WasmError {
    /// Whether the component's instance was stopped (limit or trap) rather than the call refused.
    pub fn stopped_instance(&self) -> bool {
        matches!(
            self,
            WasmError::MemoryLimit { .. }
                | WasmError::Deadline(_)
                | WasmError::OutOfFuel(_)
                | WasmError::Trap(_)
        )
    }
}

impl From<wit::Error> for WasmError {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::InvalidPackage(m) => WasmError::InvalidPackage(m),
            wit::Error::InvalidInput(m) => WasmError::InvalidInput(m),
            wit::Error::Runtime(m) => WasmError::Runtime(m),
        }
    }
}

pub type Result<T, E = WasmError> = std::result::Result<T, E>;
