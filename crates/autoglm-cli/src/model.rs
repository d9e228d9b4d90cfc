//! What `classify`, `embed` and `bench` share: the package and how to load it (`--model`,
//! `--threads`, `--batch-size`, the backend flags), the texts, and the embedded default package.

use crate::{engine, input};
use anyhow::{bail, Context, Result};
use autoglm_package::Package;
use autoglm_runtime::{BackendKind, Device, LoadOptions, Model, TrustedKeys};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

/// `--backend`, `--device`, `--ort-lib`: every command that loads a package takes them.
#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    /// Engine: `tract` (built in) or `ort` (ONNX Runtime; needs a build with `--features ort`).
    #[arg(long, default_value = "tract", env = "AUTOGLM_BACKEND")]
    pub backend: BackendKind,
    /// Device: `cpu`, or `cuda` (ort backend with a CUDA build of ONNX Runtime; no fallback).
    #[arg(long, default_value = "cpu", env = "AUTOGLM_DEVICE")]
    pub device: Device,
    /// The ONNX Runtime shared library for `--backend ort` (tools/setup/fetch-onnxruntime.sh).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Load only packages signed by this minisign public key (`autoglm keygen`, or
    /// `minisign -G`); repeat for several (key rotation), or list them comma-separated in
    /// AUTOGLM_TRUST. Without it, packages are checked by their sha256 digests only.
    #[arg(
        long = "trust",
        value_name = "PUBKEY_FILE",
        env = "AUTOGLM_TRUST",
        value_delimiter = ','
    )]
    pub trust: Vec<PathBuf>,
}

impl BackendArgs {
    pub fn load_options(&self, threads: usize, max_batch: usize) -> Result<LoadOptions> {
        Ok(LoadOptions {
            threads,
            max_batch,
            backend: self.backend,
            device: self.device,
            ort_library: self.ort_lib.clone(),
            trust: self.trusted_keys()?,
        })
    }

    /// The keys of `--trust` (none: digests only).
    pub fn trusted_keys(&self) -> Result<TrustedKeys> {
        Ok(TrustedKeys::from_files(&self.trust)?)
    }

    /// Whether the user chose a provider (then the one that really runs is printed).
    pub fn chosen(&self) -> bool {
        self.backend != BackendKind::Tract || self.device != Device::Cpu
    }
}

#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Model package (directory or `.tar`); default: the embedded int8 sentiment classifier.
    #[arg(long, env = "AUTOGLM_MODEL")]
    pub model: Option<PathBuf>,
    /// Threads for matrix products (1 to 256).
    #[arg(long, default_value_t = 1, env = "AUTOGLM_THREADS", value_parser = parse_threads)]
    pub threads: usize,
    /// Most texts per batch (1 to 1024).
    #[arg(long, default_value_t = 32, value_parser = parse_batch)]
    pub batch_size: usize,
    #[command(flatten)]
    pub backend: BackendArgs,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Model> {
        let options = self.backend.load_options(self.threads, self.batch_size)?;
        let model = match &self.model {
            Some(path) => Model::load_with(path, &options)
                .with_context(|| format!("cannot load package {}", path.display()))?,
            None => Model::from_package(default_package()?, &options)
                .context("cannot load the embedded default package")?,
        };
        // Say which provider really runs whenever the user chose one: that is what they check.
        if self.backend.chosen() {
            eprintln!("backend: {}", model.backend_description());
        }
        Ok(model)
    }

    /// The package on the engine `engine` names.
    pub fn runner(&self, engine: &engine::EngineArgs) -> Result<engine::Runner> {
        match engine.engine {
            engine::EngineKind::Native => Ok(engine::Runner::Native(self.load()?)),
            engine::EngineKind::Wasm => {
                if self.backend.chosen() {
                    bail!("--engine wasm runs tract inside the component: drop --backend/--device");
                }
                let source = match &self.model {
                    Some(path) => engine::Source::Path(path),
                    None => engine::Source::Bytes(default_package_bytes()?),
                };
                engine::Runner::wasm(engine, source, self.backend.trusted_keys()?)
            }
        }
    }
}

/// The package used when no `--model` is given: the int8 sentiment classifier committed as
/// `models/sentiment-int8.tar`, compiled into the binary (feature `embedded-model`, on by
/// default; builds for small devices can leave it out).
fn default_package() -> Result<Package> {
    Ok(Package::from_tar(default_package_bytes()?)?)
}

fn default_package_bytes() -> Result<&'static [u8]> {
    #[cfg(feature = "embedded-model")]
    {
        static DEFAULT: &[u8] = include_bytes!("../../../models/sentiment-int8.tar");
        Ok(DEFAULT)
    }
    #[cfg(not(feature = "embedded-model"))]
    bail!("no model package: pass --model PKG or set AUTOGLM_MODEL (this build has no embedded default)")
}

/// The arguments of `classify` and `embed`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: engine::EngineArgs,
    /// JSON lines with a "text" field (`-` = standard input).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// One JSON object per input, in input order.
    #[arg(long)]
    pub json: bool,
    /// classify, multi-task package: only this task (default: every task, one backbone pass).
    #[arg(long)]
    pub task: Option<String>,
    /// Texts.
    pub texts: Vec<String>,
}

/// Runs `each` on every chunk of the call's texts (arguments, or `--input` streamed in chunks)
/// and flushes standard output after each, so results of the first lines appear before the
/// input ends. The model is loaded first: the first answer needs only the first line.
pub fn for_each_chunk(
    a: &RunArgs,
    mut each: impl FnMut(&mut engine::Runner, &[String]) -> Result<()>,
) -> Result<()> {
    let mut texts = input::Texts::new(&a.texts, a.input.as_deref())?;
    let mut runner = a.model.runner(&a.engine)?;
    let mut seen = false;
    loop {
        let chunk = texts.next_chunk()?;
        if chunk.is_empty() {
            break;
        }
        seen = true;
        each(&mut runner, &chunk)?;
        std::io::stdout()
            .flush()
            .context("cannot write to standard output")?;
    }
    if !seen {
        bail!(input::NO_TEXTS);
    }
    Ok(())
}

/// `n` parsed and within `1..=max` (`what` names the flag's unit for the message).
pub fn bounded(s: &str, max: usize, what: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("`{s}`: expected a whole number"))?;
    if n == 0 || n > max {
        return Err(format!("{n} {what}: must be 1 to {max}"));
    }
    Ok(n)
}

/// `--threads`: at most [`autoglm_runtime::MAX_THREADS`] (each is an OS thread).
fn parse_threads(s: &str) -> Result<usize, String> {
    bounded(s, autoglm_runtime::MAX_THREADS, "threads")
}

/// Batch sizes: at most [`autoglm_runtime::MAX_BATCH`] texts (a batch's memory grows with it).
pub fn parse_batch(s: &str) -> Result<usize, String> {
    bounded(s, autoglm_runtime::MAX_BATCH, "texts per batch")
}
