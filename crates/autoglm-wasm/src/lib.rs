//! Runs the AutoGLM Edge WASI component (`wit/autoglm-edge.wit`, built by
//! `tools/build-component.sh`) on wasmtime, inside limits the host sets.
//!
//! * **Memory**: a cap on the component's linear memory ([`Limits::memory`]); growing past it stops
//!   the call with [`WasmError::MemoryLimit`].
//! * **Time**: a wall-clock deadline per call ([`Limits::deadline`]) by epoch interruption: a
//!   background thread ticks the engine's epoch every [`TICK`]; past the deadline the call stops
//!   with [`WasmError::Deadline`].
//! * **Fuel** (optional, [`HostOptions::fuel`]): a count of executed wasm operations per call;
//!   compiled code checks it, so it costs speed and is off unless asked for.
//!
//! A call stopped by a limit (or any trap) leaves the component instance unusable; the next call
//! on the same [`WasmModel`] starts a fresh instance and loads the package again. The host process
//! is never at risk.
//!
//! Compiling the component with Cranelift takes tens of seconds; [`Host::new`] keeps the machine
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

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

pub mod cpu;
#[doc(hidden)]
pub mod fuzzing;

mod bindings {
    wasmtime::component::bindgen!({
        world: "edge",
        path: "../../wit",
    });
}

use bindings::exports::autoglm::edge::runtime as wit;
pub use wit::{ModelInfo, ModelKind, Prediction};

/// How often the epoch advances: the resolution of deadlines.
pub const TICK: Duration = Duration::from_millis(5);

/// The component's file name, as `tools/build-component.sh` installs it next to `autoglm`.
pub const COMPONENT_FILE: &str = "autoglm-edge.wasm";

/// Where the guest sees a package directory opened with [`WasmModel::load_path`].
const GUEST_PACKAGE_DIR: &str = "/package";

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

/// Engine-wide settings, fixed when the component is compiled.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Compile fuel checks in, so that [`Limits::fuel`] can be enforced (slower code).
    pub fuel: bool,
    /// Where compiled `.cwasm` files are kept; `None`: [`default_cache_dir`]. An unwritable
    /// directory only means no cache.
    pub cache_dir: Option<PathBuf>,
    /// Do not read or write the cache (always compile).
    pub no_cache: bool,
}

/// Per-model limits, enforced on every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of linear memory the component may hold (package, weights, activations).
    pub memory: usize,
    /// Longest wall-clock time one call (load included) may take; `None`: no limit.
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

/// Epoch ticker: advances the engine's epoch every [`TICK`] until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("autoglm-wasm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        Ticker { stop, thread }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A compiled component, ready to instantiate for any number of models.
pub struct Host {
    engine: Engine,
    pre: bindings::EdgePre<State>,
    fuel: bool,
    compiled: Compiled,
    compile_time: Duration,
    _ticker: Ticker,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("fuel", &self.fuel)
            .field("compiled", &self.compiled)
            .field("compile_time", &self.compile_time)
            .finish_non_exhaustive()
    }
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

/// Finds the component: `explicit` (a flag), else `AUTOGLM_COMPONENT`, else [`COMPONENT_FILE`]
/// next to the running executable.
pub fn find_component(explicit: Option<&Path>) -> Result<PathBuf> {
    let candidate = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("AUTOGLM_COMPONENT").map(PathBuf::from))
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join(COMPONENT_FILE)))
        })
        .unwrap_or_else(|| PathBuf::from(COMPONENT_FILE));
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(WasmError::Component {
            path: candidate,
            message: "not found; build it with tools/build-component.sh (it installs \
                      autoglm-edge.wasm next to the autoglm binary), or name it with \
                      --component or AUTOGLM_COMPONENT"
                .into(),
        })
    }
}

impl Host {
    /// Loads the component at `path`: its compiled form from the cache when there is one,
    /// else compiles it (and caches the result).
    pub fn new(path: &Path, options: &HostOptions) -> Result<Self> {
        let fail = |message: String| WasmError::Component {
            path: path.to_path_buf(),
            message,
        };
        let mut config = Config::new();
        config.epoch_interruption(true).consume_fuel(options.fuel);
        let engine = Engine::new(&config).map_err(|e| fail(format!("{e:#}")))?;
        let bytes = std::fs::read(path).map_err(|source| WasmError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let started = Instant::now();
        let cache = if options.no_cache {
            None
        } else {
            options.cache_dir.clone().or_else(default_cache_dir)
        };
        let (component, compiled) = compile_cached(&engine, &bytes, cache.as_deref())
            .map_err(|e| fail(format!("{e:#}")))?;
        let compile_time = started.elapsed();
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| fail(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(bindings::EdgePre::new)
            .map_err(|e| fail(format!("not an autoglm:edge/edge component: {e:#}")))?;
        Ok(Host {
            _ticker: Ticker::start(engine.clone()),
            engine,
            pre,
            fuel: options.fuel,
            compiled,
            compile_time,
        })
    }

    /// Whether the machine code came from the cache.
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// Time spent getting machine code (compiling, or reading the cache).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }
}

/// The `.cwasm` for `bytes` under `cache`: read it if present and valid, else compile and write it.
fn compile_cached(
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

/// The store's data: WASI state and the memory limiter.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// `StoreLimits`, remembering the growth it refused (so the error can say so).
struct Limiter {
    limits: StoreLimits,
    refused: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let answer = self.limits.memory_growing(current, desired, maximum);
        if !matches!(answer, Ok(true)) {
            self.refused = Some(desired);
        }
        answer
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }
}

/// Where a model's package comes from (kept to load it again in a fresh instance).
#[derive(Clone)]
enum Source {
    Bytes(Arc<[u8]>),
    Dir(PathBuf),
}

/// One live instance: its store, bindings and the model resource inside it.
struct Instance {
    store: Store<State>,
    edge: bindings::Edge,
    model: ResourceAny,
}

/// A package loaded in its own component instance, behind [`Limits`].
pub struct WasmModel {
    engine: Engine,
    pre: bindings::EdgePre<State>,
    fuel: bool,
    limits: Limits,
    source: Source,
    instance: Option<Instance>,
    info: ModelInfo,
}

impl fmt::Debug for WasmModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmModel")
            .field("limits", &self.limits)
            .field("info", &self.info)
            .field("live", &self.instance.is_some())
            .finish_non_exhaustive()
    }
}

impl WasmModel {
    /// Loads a package from the bytes of its `.tar`.
    pub fn load(host: &Host, package: impl Into<Arc<[u8]>>, limits: Limits) -> Result<Self> {
        Self::start(host, Source::Bytes(package.into()), limits)
    }

    /// Loads a package directory (opened read-only for the component) or `.tar` file.
    pub fn load_path(host: &Host, path: &Path, limits: Limits) -> Result<Self> {
        if path.is_dir() {
            return Self::start(host, Source::Dir(path.to_path_buf()), limits);
        }
        let bytes = std::fs::read(path).map_err(|source| WasmError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::load(host, bytes, limits)
    }

    fn start(host: &Host, source: Source, limits: Limits) -> Result<Self> {
        let mut model = WasmModel {
            engine: host.engine.clone(),
            pre: host.pre.clone(),
            fuel: host.fuel,
            limits,
            source,
            instance: None,
            info: empty_info(),
        };
        // The first call starts the instance and loads the package.
        model.info = model.call(|edge, store, m| {
            edge.autoglm_edge_runtime()
                .model()
                .call_info(store, m)
                .map(Ok)
        })?;
        Ok(model)
    }

    /// A fresh instance, with the package loaded into it.
    fn instantiate(&self) -> Result<Instance> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stderr();
        if let Source::Dir(dir) = &self.source {
            wasi.preopened_dir(dir, GUEST_PACKAGE_DIR, FsPerms::ReadOnly)
                .map_err(|e| WasmError::Read {
                    path: dir.clone(),
                    source: std::io::Error::other(format!("{e:#}")),
                })?;
        }
        let limiter = Limiter {
            limits: store_limits(self.limits.memory),
            refused: None,
        };
        let mut store = Store::new(
            &self.engine,
            State {
                wasi: wasi.build(),
                table: ResourceTable::new(),
                limiter,
            },
        );
        store.limiter(|s| &mut s.limiter);
        self.arm(&mut store);
        let edge = in_guest(|| self.pre.instantiate(&mut store))
            .map_err(|e| self.stopped(&mut store, e))?;
        self.arm(&mut store);
        let guest = edge.autoglm_edge_runtime().model();
        let loaded = in_guest(|| match &self.source {
            Source::Bytes(bytes) => guest.call_load(&mut store, bytes),
            Source::Dir(_) => guest.call_open(&mut store, GUEST_PACKAGE_DIR),
        });
        let model = loaded.map_err(|e| self.stopped(&mut store, e))??;
        Ok(Instance { store, edge, model })
    }

    /// Sets the deadline and fuel for the next call.
    fn arm(&self, store: &mut Store<State>) {
        let ticks = match self.limits.deadline {
            Some(d) => (d.as_nanos() / TICK.as_nanos()).max(1) as u64,
            None => u64::MAX / 2,
        };
        store.set_epoch_deadline(ticks);
        if self.fuel {
            // Only fails when fuel is not enabled, which `self.fuel` rules out.
            let _ = store.set_fuel(self.limits.fuel.unwrap_or(u64::MAX));
        }
    }

    /// The error for a call that trapped: which limit stopped it, or the trap itself.
    fn stopped(&self, store: &mut Store<State>, e: wasmtime::Error) -> WasmError {
        if let Some(requested) = store.data_mut().limiter.refused.take() {
            return WasmError::MemoryLimit {
                limit: self.limits.memory,
                requested,
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => WasmError::Deadline(self.limits.deadline.unwrap_or_default()),
            Some(Trap::OutOfFuel) => WasmError::OutOfFuel(self.limits.fuel.unwrap_or_default()),
            _ => WasmError::Trap(format!("{e:?}")),
        }
    }

    /// Runs one call within the limits, in the live instance or (none yet, or the last one
    /// trapped) a fresh one with the package loaded; a trap drops the instance.
    fn call<T>(
        &mut self,
        f: impl FnOnce(
            &bindings::Edge,
            &mut Store<State>,
            ResourceAny,
        ) -> wasmtime::Result<std::result::Result<T, wit::Error>>,
    ) -> Result<T> {
        let mut instance = match self.instance.take() {
            Some(instance) => instance,
            None => self.instantiate()?,
        };
        self.arm(&mut instance.store);
        match in_guest(|| f(&instance.edge, &mut instance.store, instance.model)) {
            Ok(answer) => {
                self.instance = Some(instance);
                Ok(answer?)
            }
            Err(e) => Err(self.stopped(&mut instance.store, e)),
        }
    }

    /// The package's description, as the component reported it at load.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn labels(&self) -> &[String] {
        &self.info.labels
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Changes the limits for the calls to come.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        if let Some(instance) = self.instance.as_mut() {
            instance.store.data_mut().limiter.limits = store_limits(limits.memory);
        }
    }

    pub fn classify(&mut self, texts: &[&str]) -> Result<Vec<Prediction>> {
        let texts = owned(texts);
        self.call(|edge, store, m| {
            edge.autoglm_edge_runtime()
                .model()
                .call_classify(store, m, &texts)
        })
    }

    pub fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let texts = owned(texts);
        self.call(|edge, store, m| {
            edge.autoglm_edge_runtime()
                .model()
                .call_embed(store, m, &texts)
        })
    }

    /// The graph's raw output per text (logits or vector).
    pub fn outputs(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let texts = owned(texts);
        self.call(|edge, store, m| {
            edge.autoglm_edge_runtime()
                .model()
                .call_outputs(store, m, &texts)
        })
    }
}

/// Runs `f`, which calls into the guest, with the vector registers' upper state clean on entry
/// and on return ([`cpu`]: native kernels leave it dirty, and Cranelift's code then runs up to
/// 200x slower on some CPUs).
fn in_guest<R>(f: impl FnOnce() -> R) -> R {
    cpu::clean_upper_state();
    let answer = f();
    cpu::clean_upper_state();
    answer
}

/// A memory cap that traps (rather than failing `memory.grow` quietly) when reached.
fn store_limits(memory: usize) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(memory)
        .trap_on_grow_failure(true)
        .build()
}

fn owned(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

fn empty_info() -> ModelInfo {
    ModelInfo {
        kind: ModelKind::Embedding,
        labels: Vec::new(),
        max_length: 0,
        hidden_size: 0,
        quantization: String::new(),
        attention: String::new(),
        base_model: String::new(),
        adapter: None,
        engine: String::new(),
    }
}
