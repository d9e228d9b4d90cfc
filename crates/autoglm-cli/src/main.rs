//! `autoglm`: export, inspect and run AutoGLM Edge model packages.

mod engine;
mod input;

/// glibc's malloc returns the multi-megabyte activations of each inference to the system and
/// page-faults them back in on the next one (measured: up to a quarter of the run time at 512
/// tokens); mimalloc keeps them mapped for reuse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{bail, Context, Result};
use autoglm_package::{Attention, Package, Quantization};
use autoglm_runtime::{BackendKind, Device, Encoded, LoadOptions, Model};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "autoglm",
    version,
    about = "AutoGLM Edge: export and run fine-tuned transformer encoders at the edge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Turn a Hugging Face base model (+ a PEFT LoRA adapter) into a model package.
    Export(ExportArgs),
    /// Show a package's manifest, verify its digests, list sizes and graph ops.
    Inspect(InspectArgs),
    /// Classify texts with a classification package.
    Classify(RunArgs),
    /// Embed texts with an embedding package (pooled, normalized vectors).
    Embed(RunArgs),
    /// Measure inference latency on synthetic inputs of exact token lengths.
    Bench(BenchArgs),
    /// Serve packages over HTTP (/v1, Open Inference Protocol v2, /metrics) with hot reload.
    Serve(autoglm_serve::ServeArgs),
    /// Train a task head on a frozen embedding package: a new classification package.
    Adapt(Box<autoglm_adapt::cli::AdaptArgs>),
    /// Combine adapted single-task packages into one package: one backbone pass, many heads.
    Multitask(autoglm_adapt::cli::MultitaskArgs),
    /// Rank adapted source packages for a target data set by transferability (MMD).
    Rank(autoglm_adapt::cli::RankArgs),
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Base model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    base: PathBuf,
    /// PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors): makes a
    /// classification package; without it the package embeds.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Output package: a directory, or a `.tar` file.
    #[arg(long)]
    out: PathBuf,
    /// Token limit (default: the model's sentence-transformers max_seq_length, else its positions).
    #[arg(long)]
    max_length: Option<usize>,
    /// Weight quantization: `none` or `int8`.
    #[arg(long, default_value = "none", value_parser = str::parse::<Quantization>)]
    quantize: Quantization,
    /// Attention pattern: `dense` or `window:W,global:G`.
    #[arg(long, default_value = "dense", value_parser = str::parse::<Attention>)]
    attention: Attention,
    /// Print the manifest as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// Package directory or `.tar`.
    package: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ModelArgs {
    /// Model package (directory or `.tar`); default: the embedded int8 sentiment classifier.
    #[arg(long, env = "AUTOGLM_MODEL")]
    model: Option<PathBuf>,
    /// Threads for matrix products (1 to 256).
    #[arg(long, default_value_t = 1, env = "AUTOGLM_THREADS", value_parser = parse_threads)]
    threads: usize,
    /// Most texts per batch (1 to 1024).
    #[arg(long, default_value_t = 32, value_parser = parse_batch)]
    batch_size: usize,
    /// Engine: `tract` (built in) or `ort` (ONNX Runtime; needs a build with `--features ort`).
    #[arg(long, default_value = "tract", env = "AUTOGLM_BACKEND")]
    backend: BackendKind,
    /// Device: `cpu`, or `cuda` (ort backend with a CUDA build of ONNX Runtime; no fallback).
    #[arg(long, default_value = "cpu", env = "AUTOGLM_DEVICE")]
    device: Device,
    /// The ONNX Runtime shared library for `--backend ort` (tools/fetch-onnxruntime.sh).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    ort_lib: Option<PathBuf>,
}

impl ModelArgs {
    fn load(&self) -> Result<Model> {
        let options = LoadOptions {
            threads: self.threads,
            max_batch: self.batch_size,
            backend: self.backend,
            device: self.device,
            ort_library: self.ort_lib.clone(),
        };
        let model = match &self.model {
            Some(path) => Model::load_with(path, &options)
                .with_context(|| format!("cannot load package {}", path.display()))?,
            None => Model::from_package(default_package()?, &options)
                .context("cannot load the embedded default package")?,
        };
        // Say which provider really runs whenever the user chose one: that is what they check.
        if self.backend != BackendKind::Tract || self.device != Device::Cpu {
            eprintln!("backend: {}", model.backend_description());
        }
        Ok(model)
    }

    /// The package on the engine `engine` names.
    fn runner(&self, engine: &engine::EngineArgs) -> Result<engine::Runner> {
        match engine.engine {
            engine::EngineKind::Native => Ok(engine::Runner::Native(self.load()?)),
            engine::EngineKind::Wasm => {
                if self.backend != BackendKind::Tract || self.device != Device::Cpu {
                    bail!("--engine wasm runs tract inside the component: drop --backend/--device");
                }
                let source = match &self.model {
                    Some(path) => engine::Source::Path(path),
                    None => engine::Source::Bytes(default_package_bytes()?),
                };
                engine::Runner::wasm(engine, source)
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

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    engine: engine::EngineArgs,
    /// JSON lines with a "text" field (`-` = standard input).
    #[arg(long)]
    input: Option<PathBuf>,
    /// One JSON object per input, in input order.
    #[arg(long)]
    json: bool,
    /// classify, multi-task package: only this task (default: every task, one backbone pass).
    #[arg(long)]
    task: Option<String>,
    /// Texts.
    texts: Vec<String>,
}

#[derive(Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Token lengths to measure (special tokens included).
    #[arg(long, value_delimiter = ',', default_value = "32,128,512")]
    seq: Vec<usize>,
    /// Batch sizes to measure (each 1 to 1024).
    #[arg(long, value_delimiter = ',', default_value = "1,32", value_parser = parse_batch)]
    batch: Vec<usize>,
    /// Timed runs per configuration (after one warm-up run; 1 to 1000000).
    #[arg(long, default_value_t = 10, value_parser = parse_iters)]
    iters: usize,
    #[arg(long)]
    json: bool,
}

/// `n` parsed and within `1..=max` (`what` names the flag's unit for the message).
fn bounded(s: &str, max: usize, what: &str) -> Result<usize, String> {
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
fn parse_batch(s: &str) -> Result<usize, String> {
    bounded(s, autoglm_runtime::MAX_BATCH, "texts per batch")
}

/// `bench --iters`: each timing is kept, so the count is bounded.
fn parse_iters(s: &str) -> Result<usize, String> {
    bounded(s, MAX_BENCH_ITERS, "iterations")
}

const MAX_BENCH_ITERS: usize = 1_000_000;

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Export(a) => export(a),
        Command::Inspect(a) => inspect(a),
        Command::Classify(a) => classify(a),
        Command::Embed(a) => embed(a),
        Command::Bench(a) => bench(a),
        Command::Serve(a) => autoglm_serve::run(a),
        Command::Adapt(a) => autoglm_adapt::cli::adapt(*a),
        Command::Multitask(a) => autoglm_adapt::cli::multitask(a),
        Command::Rank(a) => autoglm_adapt::cli::rank(a),
    }
}

fn export(a: ExportArgs) -> Result<()> {
    let mut options = autoglm_export::ExportOptions::new(&a.base);
    options.adapter = a.adapter;
    options.max_length = a.max_length;
    options.quantization = a.quantize;
    options.attention = a.attention;
    let start = Instant::now();
    // Checks --out before the export (it never replaces anything but a package, nor touches
    // the inputs), then writes atomically.
    let package = autoglm_export::export_to(&options, &a.out).context("export failed")?;
    if a.json {
        println!(
            "{}",
            String::from_utf8_lossy(&package.manifest().to_json()).trim_end()
        );
    } else {
        let m = package.manifest();
        let bytes: usize = package.files().map(|(_, b)| b.len()).sum();
        eprintln!(
            "exported {:?} package to {} ({:.1} MB, max {} tokens, labels {:?}) in {:.1}s",
            m.kind,
            a.out.display(),
            bytes as f64 / 1e6,
            m.max_length,
            m.labels,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn inspect(a: InspectArgs) -> Result<()> {
    let package = Package::open(&a.package)
        .with_context(|| format!("cannot load package {}", a.package.display()))?;
    let m = package.manifest();
    let ops = autoglm_export::onnx::op_counts(package.file(&m.graph.file)?)
        .context("the graph is not a valid ONNX model")?;
    if a.json {
        let files: serde_json::Map<String, serde_json::Value> = m
            .files
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    json!({"size": v.size, "sha256": v.sha256, "verified": true}),
                )
            })
            .collect();
        let out = json!({"manifest": serde_json::to_value(m)?, "files": files, "ops": ops});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("package     {}", a.package.display());
    println!("kind        {:?}", m.kind);
    if !m.labels.is_empty() {
        println!("labels      {}", m.labels.join(", "));
    }
    println!("max length  {} tokens", m.max_length);
    println!(
        "pooling     {:?}{}",
        m.pooling,
        if m.normalize { " + L2 normalize" } else { "" }
    );
    println!("attention   {}", m.attention);
    println!("quantized   {}", m.quantization);
    println!(
        "base        {} (weights sha256 {})",
        m.provenance.base_model, m.provenance.base_weights_sha256
    );
    if let Some(adapter) = &m.provenance.adapter {
        println!(
            "adapter     {adapter} (weights sha256 {})",
            m.provenance
                .adapter_weights_sha256
                .as_deref()
                .unwrap_or("?")
        );
    }
    println!("exporter    {}", m.provenance.exporter);
    println!("files (sha256 verified):");
    for (name, entry) in &m.files {
        println!("  {name:<16} {:>12} bytes  {}", entry.size, entry.sha256);
    }
    let total: usize = ops.values().sum();
    println!("graph ops ({total} nodes, opset {}):", m.graph.opset);
    for (op, n) in &ops {
        println!("  {op:<20} {n}");
    }
    Ok(())
}

/// Runs `each` on every chunk of the call's texts (arguments, or `--input` streamed in chunks)
/// and flushes standard output after each, so results of the first lines appear before the
/// input ends. The model is loaded first: the first answer needs only the first line.
fn for_each_chunk(
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

fn classify(a: RunArgs) -> Result<()> {
    let mut labels = None;
    for_each_chunk(&a, |runner, texts| {
        match &*runner {
            engine::Runner::Native(model) => {
                if autoglm_adapt::cli::classify_tasks(model, texts, a.task.as_deref(), a.json)? {
                    return Ok(());
                }
            }
            #[cfg(feature = "wasm")]
            engine::Runner::Wasm(_) => {
                if a.task.is_some() {
                    bail!("--task (multi-task packages) needs --engine native");
                }
            }
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let predictions = runner.classify(&refs)?;
        let labels = labels.get_or_insert_with(|| runner.labels());
        let mut out = std::io::stdout().lock();
        for (text, p) in texts.iter().zip(&predictions) {
            if a.json {
                writeln!(out, "{}", autoglm_serve::prediction_json(labels, p))?;
            } else {
                writeln!(
                    out,
                    "{}\t{:.4}\t{}",
                    p.label,
                    p.scores[p.index],
                    text.replace(['\n', '\t'], " ")
                )?;
            }
        }
        Ok(())
    })
}

fn embed(a: RunArgs) -> Result<()> {
    for_each_chunk(&a, |runner, texts| {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = runner.embed(&refs)?;
        let mut out = std::io::stdout().lock();
        for (text, v) in texts.iter().zip(vectors) {
            if a.json {
                writeln!(out, "{}", json!({"embedding": v}))?;
            } else {
                let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:.4}")).collect();
                writeln!(
                    out,
                    "[{}, … ({} dims)]\t{}",
                    head.join(", "),
                    v.len(),
                    text.replace(['\n', '\t'], " ")
                )?;
            }
        }
        Ok(())
    })
}

fn bench(a: BenchArgs) -> Result<()> {
    let load_start = Instant::now();
    let model = a.model.load()?;
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let engine = format!("autoglm-{}", model.backend_name());
    let backend = model.backend_description();
    if !a.json {
        println!("backend: {backend} (loaded in {load_ms:.0} ms)");
    }
    for &seq in &a.seq {
        if seq < 2 || seq > model.manifest().max_length {
            bail!(
                "--seq {seq}: this package takes 2 to {} tokens",
                model.manifest().max_length
            );
        }
        for &batch in &a.batch {
            let ids = autoglm_runtime::batch::bench_ids(seq);
            let inputs: Vec<Encoded> = (0..batch)
                .map(|_| Encoded {
                    ids: ids.clone(),
                    type_ids: vec![0; seq],
                })
                .collect();
            model.outputs_for(&inputs)?;
            let mut times = Vec::with_capacity(a.iters);
            for _ in 0..a.iters.max(1) {
                let t = Instant::now();
                std::hint::black_box(model.outputs_for(&inputs)?);
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            let rss = peak_rss_mb();
            if a.json {
                println!(
                    "{}",
                    json!({"engine": engine, "backend": backend, "seq": seq, "batch": batch, "threads": a.model.threads,
                           "median_ms": median, "min_ms": times[0], "iters": times.len(), "peak_rss_mb": rss, "load_ms": load_ms})
                );
            } else {
                println!("seq {seq:>5}  batch {batch:>3}  threads {}  median {median:>9.2} ms  min {:>9.2} ms  peak RSS {rss:.0} MB", a.model.threads, times[0]);
            }
        }
    }
    Ok(())
}

/// Peak resident set size of this process in MB (Linux `VmHWM`), 0 where unknown.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
