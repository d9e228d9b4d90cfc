//! A package loaded in its own component instance, behind limits; a trap drops the instance
//! and the next call starts afresh.

use crate::bindings::{self, wit};
use crate::cpu;
use crate::error::{Result, WasmError};
use crate::host::Host;
use crate::options::Limits;
use crate::store::{store_limits, Limiter, State};
use crate::ticker::TICK;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{ResourceAny, ResourceTable};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wit::{ModelInfo, ModelKind, Prediction, TaskPrediction};

/// Where the guest sees a package directory opened with [`WasmModel::load_path`].
const GUEST_PACKAGE_DIR: &str = "/package";

/// Verifies the package on the host: a package given as bytes always (its digests natively,
/// with the CPU's sha256 instructions, ~10x faster than the component can; then the component
/// skips them: `load-verified`), unless `in_guest`; and any package when `trust` names keys,
/// whose signatures are checked here. A directory is then read (and verified) once here and
/// handed to the component as the bytes of a `.tar`, so that what was verified is what runs,
/// even if the directory changes meanwhile; without keys the component reads it itself.
fn verified(
    trust: &autoglm_package::TrustedKeys,
    in_guest: bool,
    source: Source,
) -> Result<Source> {
    let here = match &source {
        Source::Bytes { .. } => !in_guest || !trust.is_empty(),
        Source::Dir(_) => !trust.is_empty(),
    };
    if !here {
        return Ok(source);
    }
    let invalid = |e: autoglm_package::PackageError| WasmError::InvalidPackage(e.to_string());
    let bytes = match source {
        Source::Bytes { bytes, .. } => {
            autoglm_package::Package::verify_tar(&bytes, trust).map_err(invalid)?;
            bytes
        }
        Source::Dir(dir) => {
            let package = autoglm_package::Package::open(&dir).map_err(invalid)?;
            package.verify(trust).map_err(invalid)?;
            Bytes::Shared(package.to_tar().into())
        }
    };
    Ok(Source::Bytes {
        bytes,
        checked: !in_guest,
    })
}

/// Where a model's package comes from (kept to load it again in a fresh instance).
#[derive(Clone)]
enum Source {
    /// A `.tar`'s bytes; `checked`: their digests were verified by the host (`load-verified`).
    Bytes {
        bytes: Bytes,
        checked: bool,
    },
    Dir(PathBuf),
}

/// A package's bytes, kept to load it again: shared, or in the program's own image (such as an
/// embedded default package), which is then never copied on the host.
#[derive(Clone)]
enum Bytes {
    Static(&'static [u8]),
    Shared(Arc<[u8]>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Static(b) => b,
            Bytes::Shared(b) => b,
        }
    }
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
    deadlines: bool,
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
        let source = Source::Bytes {
            bytes: Bytes::Shared(package.into()),
            checked: false,
        };
        Self::start(host, source, limits)
    }

    /// [`WasmModel::load`] for bytes that live as long as the program (a package embedded in
    /// the binary): they are read where they are, not copied first (25 MB for the CLI's
    /// embedded default).
    pub fn load_static(host: &Host, package: &'static [u8], limits: Limits) -> Result<Self> {
        let source = Source::Bytes {
            bytes: Bytes::Static(package),
            checked: false,
        };
        Self::start(host, source, limits)
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
        compiled_for(host.deadlines, host.fuel, &limits)?;
        let source = verified(&host.trust, host.verify_in_guest, source)?;
        let mut model = WasmModel {
            engine: host.engine.clone(),
            pre: host.pre.clone(),
            deadlines: host.deadlines,
            fuel: host.fuel,
            limits,
            source,
            instance: None,
            info: empty_info(),
        };
        // The first call starts the instance and loads the package.
        model.info = model.call(|guest, store, m| guest.call_info(store, m).map(Ok))?;
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
            Source::Bytes {
                bytes,
                checked: true,
            } => guest.call_load_verified(&mut store, bytes),
            Source::Bytes { bytes, .. } => guest.call_load(&mut store, bytes),
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

    /// Runs one call of the guest's `model` resource within the limits, in the live instance or
    /// (none yet, or the last one trapped) a fresh one with the package loaded; a trap drops
    /// the instance.
    fn call<T>(
        &mut self,
        f: impl FnOnce(
            wit::GuestModel<'_>,
            &mut Store<State>,
            ResourceAny,
        ) -> wasmtime::Result<std::result::Result<T, wit::Error>>,
    ) -> Result<T> {
        let mut instance = match self.instance.take() {
            Some(instance) => instance,
            None => self.instantiate()?,
        };
        self.arm(&mut instance.store);
        let guest = instance.edge.autoglm_edge_runtime().model();
        match in_guest(|| f(guest, &mut instance.store, instance.model)) {
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

    /// Changes the limits for the calls to come; refuses a deadline or fuel whose checks the
    /// host was not compiled with ([`WasmError::LimitNotCompiled`]), keeping the limits as
    /// they were.
    pub fn set_limits(&mut self, limits: Limits) -> Result<()> {
        compiled_for(self.deadlines, self.fuel, &limits)?;
        self.limits = limits;
        if let Some(instance) = self.instance.as_mut() {
            instance.store.data_mut().limiter.limits = store_limits(limits.memory);
        }
        Ok(())
    }

    /// One call that takes the texts, as [`WasmModel::call`].
    fn call_texts<T>(
        &mut self,
        texts: &[&str],
        f: impl FnOnce(
            wit::GuestModel<'_>,
            &mut Store<State>,
            ResourceAny,
            &[String],
        ) -> wasmtime::Result<std::result::Result<T, wit::Error>>,
    ) -> Result<T> {
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        self.call(|guest, store, m| f(guest, store, m, &texts))
    }

    pub fn classify(&mut self, texts: &[&str]) -> Result<Vec<Prediction>> {
        self.call_texts(texts, |guest, store, m, texts| {
            guest.call_classify(store, m, texts)
        })
    }

    /// Classifies each text for every task of a multi-task package (only `task` when given),
    /// from one backbone pass; the tasks of each text in [`ModelInfo::tasks`] order. A package
    /// without tasks, or a task it does not have: [`WasmError::InvalidInput`].
    pub fn classify_tasks(
        &mut self,
        texts: &[&str],
        task: Option<&str>,
    ) -> Result<Vec<Vec<TaskPrediction>>> {
        self.call_texts(texts, |guest, store, m, texts| {
            guest.call_classify_tasks(store, m, texts, task)
        })
    }

    pub fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.call_texts(texts, |guest, store, m, texts| {
            guest.call_embed(store, m, texts)
        })
    }

    /// The graph's raw output per text (logits or vector).
    pub fn outputs(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.call_texts(texts, |guest, store, m, texts| {
            guest.call_outputs(store, m, texts)
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

fn empty_info() -> ModelInfo {
    ModelInfo {
        kind: ModelKind::Embedding,
        labels: Vec::new(),
        tasks: Vec::new(),
        max_length: 0,
        hidden_size: 0,
        quantization: String::new(),
        attention: String::new(),
        base_model: String::new(),
        adapter: None,
        engine: String::new(),
    }
}

/// Whether a host compiled with (or without) epoch checks (`deadlines`) and fuel checks can
/// enforce `limits`: [`WasmError::LimitNotCompiled`] for a limit it has no checks for.
fn compiled_for(deadlines: bool, fuel: bool, limits: &Limits) -> Result<()> {
    if limits.deadline.is_some() && !deadlines {
        return Err(WasmError::LimitNotCompiled {
            limit: "deadline",
            option: "deadlines",
        });
    }
    if limits.fuel.is_some() && !fuel {
        return Err(WasmError::LimitNotCompiled {
            limit: "fuel",
            option: "fuel",
        });
    }
    Ok(())
}
