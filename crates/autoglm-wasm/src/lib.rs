//! Runs the AutoGLM Edge WASI component (`wit/autoglm-edge.wit`, built by
//! `tools/build/component.sh`) on wasmtime, inside limits the host sets.
//!
//! * **Memory**: a cap on the component's linear memory ([`Limits::memory`]); growing past it stops
//!   the call with [`WasmError::MemoryLimit`].
//! * **Time** (optional, [`HostOptions::deadlines`]): a wall-clock deadline per call
//!   ([`Limits::deadline`]) by epoch interruption: a background thread ticks the engine's epoch
//!   every [`TICK`]; past the deadline the call stops with [`WasmError::Deadline`]. The checks
//!   are compiled in, so they are off unless asked for.
//! * **Fuel** (optional, [`HostOptions::fuel`]): a count of executed wasm operations per call;
//!   compiled code checks it, so it costs speed and is off unless asked for.
//!
//! A limit whose checks the host did not compile in is refused
//! ([`WasmError::LimitNotCompiled`]), never silently ignored.
//!
//! A call stopped by a limit (or any trap) leaves the component instance unusable; the next call
//! on the same [`WasmModel`] starts a fresh instance and loads the package again. The host process
//! is never at risk.
//!
//! Compiling the component with Cranelift takes seconds; [`Host::new`] keeps the machine
//! code in a cache directory (`.cwasm`, keyed by the component's sha256 and wasmtime's
//! compatibility hash), so later starts take milliseconds.
//!
//! ```no_run
//! use autoglm_wasm::{Host, HostOptions, Limits, WasmModel};
//! let host = Host::new("autoglm-edge.wasm".as_ref(), &HostOptions::default()).unwrap();
//! let mut model = WasmModel::load_path(&host, "models/sentiment-int8.tar".as_ref(), Limits::default()).unwrap();
//! for p in model.classify(&["I loved this film"]).unwrap() {
//!     println!("{} {:?}", p.label, p.scores);
//! }
//! ```

mod bindings;
mod cache;
pub mod cpu;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod host;
mod model;
mod options;
mod store;
mod ticker;

pub use bindings::wit::{ModelInfo, ModelKind, Prediction, Task, TaskPrediction};
pub use cache::{default_cache_dir, Compiled};
pub use error::{Result, WasmError};
pub use host::{find_component, Host, COMPONENT_FILE};
pub use model::WasmModel;
pub use options::{HostOptions, Limits};
pub use ticker::TICK;
