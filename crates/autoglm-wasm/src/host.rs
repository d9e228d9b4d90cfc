//! The compiled component, ready to instantiate, and where to find it.

use crate::bindings;
use crate::cache::{compile_cached, default_cache_dir, Compiled};
use crate::error::{Result, WasmError};
use crate::options::HostOptions;
use crate::store::State;
use crate::ticker::Ticker;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmtime::component::Linker;
use wasmtime::{Config, Engine};

/// The component's file name, as `tools/build/component.sh` installs it next to `autoglm`.
pub const COMPONENT_FILE: &str = "autoglm-edge.wasm";

/// A compiled component, ready to instantiate for any number of models.
pub struct Host {
    pub(crate) engine: Engine,
    pub(crate) pre: bindings::EdgePre<State>,
    pub(crate) deadlines: bool,
    pub(crate) fuel: bool,
    pub(crate) trust: autoglm_package::TrustedKeys,
    pub(crate) verify_in_guest: bool,
    compiled: Compiled,
    compile_time: Duration,
    /// Only for a host with deadlines.
    _ticker: Option<Ticker>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("deadlines", &self.deadlines)
            .field("fuel", &self.fuel)
            .field("compiled", &self.compiled)
            .field("compile_time", &self.compile_time)
            .finish_non_exhaustive()
    }
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
            message: "not found; build it with tools/build/component.sh (it installs \
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
        config
            .epoch_interruption(options.deadlines)
            .consume_fuel(options.fuel);
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
            _ticker: options.deadlines.then(|| Ticker::start(engine.clone())),
            engine,
            pre,
            deadlines: options.deadlines,
            fuel: options.fuel,
            trust: options.trust.clone(),
            verify_in_guest: options.verify_in_guest,
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
