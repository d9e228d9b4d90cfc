//! `--engine native|wasm` for `classify` and `embed`: the same package, run in this process or
//! inside the WASI component (sandboxed by wasmtime, with memory and time limits).

use anyhow::Result;
use autoglm_runtime::{Model, Prediction, TaskPrediction};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    /// In this process (the runtime compiled into `autoglm`).
    Native,
    /// In the WASI component `autoglm-edge.wasm`, on wasmtime (a build with `--features wasm`).
    Wasm,
}

#[derive(Args, Debug)]
pub struct EngineArgs {
    /// Where the model runs: `native`, or `wasm` (the WASI component in a wasmtime sandbox; it
    /// runs one thread with batches of 32: --threads and --batch-size are for `native`).
    #[arg(long, value_enum, default_value = "native", env = "AUTOGLM_ENGINE")]
    pub engine: EngineKind,
    /// `--engine wasm`: the component (default: AUTOGLM_COMPONENT, else autoglm-edge.wasm next to
    /// this binary; `tools/build/component.sh` builds and installs it).
    #[arg(long)]
    pub component: Option<PathBuf>,
    /// `--engine wasm`: memory cap of the component, in MiB.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    pub wasm_memory: usize,
    /// `--engine wasm`: wall-clock limit of each call (loading included), in milliseconds;
    /// compiles epoch checks in (a second `.cwasm` in the cache).
    #[arg(long, value_name = "MS")]
    pub wasm_deadline: Option<u64>,
    /// `--engine wasm`: fuel (wasm operations) per call; compiles fuel checks in (slower).
    #[arg(long)]
    pub wasm_fuel: Option<u64>,
}

/// A package loaded on one engine.
#[derive(Debug)]
pub enum Runner {
    Native(Model),
    #[cfg(feature = "wasm")]
    Wasm(Box<autoglm_wasm::WasmModel>),
}

/// Where the package comes from, for the wasm engine (unread in a build without it).
#[cfg_attr(not(feature = "wasm"), allow(dead_code))]
pub enum Source<'a> {
    Path(&'a std::path::Path),
    Bytes(&'static [u8]),
}

impl Runner {
    /// Loads the package into the component (`Source`) within the limits of `args`.
    #[cfg(feature = "wasm")]
    pub fn wasm(
        args: &EngineArgs,
        source: Source<'_>,
        trust: autoglm_runtime::TrustedKeys,
    ) -> Result<Self> {
        use anyhow::Context;
        use autoglm_wasm::{find_component, Host, HostOptions, Limits, WasmModel};
        let component = find_component(args.component.as_deref())?;
        let options = HostOptions {
            deadlines: args.wasm_deadline.is_some(),
            fuel: args.wasm_fuel.is_some(),
            trust,
            ..HostOptions::default()
        };
        let host = Host::new(&component, &options)?;
        let limits = Limits {
            memory: args.wasm_memory.saturating_mul(1 << 20),
            deadline: args.wasm_deadline.map(std::time::Duration::from_millis),
            fuel: args.wasm_fuel,
        };
        let model = match source {
            Source::Path(p) => WasmModel::load_path(&host, p, limits)
                .with_context(|| format!("cannot load package {}", p.display()))?,
            Source::Bytes(b) => WasmModel::load_static(&host, b, limits)
                .context("cannot load the embedded default package")?,
        };
        Ok(Runner::Wasm(Box::new(model)))
    }

    #[cfg(not(feature = "wasm"))]
    pub fn wasm(_: &EngineArgs, _: Source<'_>, _: autoglm_runtime::TrustedKeys) -> Result<Self> {
        anyhow::bail!(
            "this autoglm was built without the wasm engine; rebuild with \
             `cargo build --release -p autoglm-cli --features wasm`"
        )
    }

    pub fn labels(&self) -> Vec<String> {
        match self {
            Runner::Native(m) => m.labels().to_vec(),
            #[cfg(feature = "wasm")]
            Runner::Wasm(m) => m.labels().to_vec(),
        }
    }

    /// A multi-task package's task names, in order (empty for other packages).
    pub fn tasks(&self) -> Vec<String> {
        match self {
            Runner::Native(m) => m.tasks().iter().map(|t| t.name.to_string()).collect(),
            #[cfg(feature = "wasm")]
            Runner::Wasm(m) => m.info().tasks.iter().map(|t| t.name.clone()).collect(),
        }
    }

    pub fn classify(&mut self, texts: &[&str]) -> Result<Vec<Prediction>> {
        Ok(match self {
            Runner::Native(m) => m.classify(texts)?,
            #[cfg(feature = "wasm")]
            Runner::Wasm(m) => m.classify(texts)?.into_iter().map(from_wit).collect(),
        })
    }

    /// Per text, every task's prediction (only `task`'s when given), from one backbone pass.
    pub fn classify_tasks(
        &mut self,
        texts: &[&str],
        task: Option<&str>,
    ) -> Result<Vec<Vec<TaskPrediction>>> {
        Ok(match self {
            Runner::Native(m) => m.classify_tasks(texts, task)?,
            #[cfg(feature = "wasm")]
            Runner::Wasm(m) => {
                let per_text = m.classify_tasks(texts, task)?;
                let tasks = &m.info().tasks;
                per_text
                    .into_iter()
                    .map(|row| {
                        row.into_iter()
                            .map(|t| TaskPrediction {
                                labels: tasks
                                    .iter()
                                    .find(|d| d.name == t.task)
                                    .map(|d| d.labels.clone())
                                    .unwrap_or_default(),
                                task: t.task,
                                prediction: from_wit(t.prediction),
                            })
                            .collect()
                    })
                    .collect()
            }
        })
    }

    pub fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(match self {
            Runner::Native(m) => m.embed(texts)?,
            #[cfg(feature = "wasm")]
            Runner::Wasm(m) => m.embed(texts)?,
        })
    }
}

#[cfg(feature = "wasm")]
fn from_wit(p: autoglm_wasm::Prediction) -> Prediction {
    Prediction {
        label: p.label,
        index: p.index as usize,
        scores: p.scores,
    }
}
