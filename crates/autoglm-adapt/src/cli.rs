//! The `autoglm adapt | multitask | rank` subcommands (argument types and bodies), so that the
//! binary only dispatches to them.

use crate::head::{ClassWeight, HeadSpec, TrainOptions};
use crate::{package, AdaptRequest, Embedder, Progress};
use anyhow::{bail, Context, Result};
use autoglm_package::Package;
use autoglm_runtime::{LoadOptions, Model};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BackboneArgs {
    /// The embedding package whose backbone stays frozen.
    #[arg(long, env = "AUTOGLM_MODEL")]
    pub model: PathBuf,
    /// Threads for the backbone's matrix products.
    #[arg(long, default_value_t = 1, env = "AUTOGLM_THREADS")]
    pub threads: usize,
    /// Keep embeddings in this folder, keyed by backbone digest and text hash, across runs.
    #[arg(long, env = "AUTOGLM_EMBED_CACHE")]
    pub cache: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl BackboneArgs {
    fn open(&self) -> Result<Embedder> {
        let options = LoadOptions {
            threads: self.threads.max(1),
            ..LoadOptions::default()
        };
        Embedder::open(&self.model, &options, self.cache.as_deref())
            .with_context(|| format!("cannot load embedding package {}", self.model.display()))
    }

    fn bar(&self) -> ProgressBar {
        if self.quiet || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    }
}

#[derive(Args, Debug)]
pub struct AdaptArgs {
    #[command(flatten)]
    pub backbone: BackboneArgs,
    /// Training data: JSON lines `{"text": …, "label": …}`.
    #[arg(long)]
    pub train: PathBuf,
    /// Validation data (default: a stratified, seeded split of --train).
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Share of --train held out for validation when there is no --valid.
    #[arg(long, default_value_t = 0.1)]
    pub valid_fraction: f64,
    /// Output classification package: a directory, or a `.tar` file.
    #[arg(long)]
    pub out: PathBuf,
    /// The head: `linear`, `mlp:H` (tanh) or `mlp:H:gelu`.
    #[arg(long, default_value = "linear")]
    pub head: HeadSpec,
    /// The head's task name (its slice in a multi-task package).
    #[arg(long, default_value = "task")]
    pub task: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// AdamW learning rate of the output layer.
    #[arg(long, default_value_t = 1e-2)]
    pub lr: f64,
    /// AdamW learning rate of the hidden layer (MLP heads).
    #[arg(long, default_value_t = 3e-3)]
    pub hidden_lr: f64,
    /// Decoupled weight decay.
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Largest gradient norm (0 = no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Epochs without a better validation loss before stopping.
    #[arg(long, default_value_t = 10)]
    pub patience: usize,
    /// Loss weights per class: none, inverse (frequency) or entropy.
    #[arg(long, default_value = "none")]
    pub class_weight: ClassWeight,
    /// Oversample minority classes SMOTE-style with K neighbours.
    #[arg(long, value_name = "K")]
    pub smote: Option<usize>,
    /// Start from this adapted package's head (same backbone width required).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// L2-SP strength toward the --init-from head's weights.
    #[arg(long, default_value_t = 0.01, requires = "init_from")]
    pub l2sp: f64,
    /// Print the training record as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

pub fn adapt(a: AdaptArgs) -> Result<()> {
    let start = std::time::Instant::now();
    let mut embedder = a.backbone.open()?;
    let request = AdaptRequest {
        train: a.train.clone(),
        valid: a.valid.clone(),
        valid_fraction: a.valid_fraction,
        task: a.task.clone(),
        options: TrainOptions {
            head: a.head,
            seed: a.seed,
            epochs: a.epochs,
            batch_size: a.batch_size,
            lr: a.lr,
            hidden_lr: a.hidden_lr,
            weight_decay: a.weight_decay,
            clip: a.clip,
            patience: a.patience,
            class_weight: a.class_weight,
            smote: a.smote,
            l2sp: if a.init_from.is_some() { a.l2sp } else { 0.0 },
        },
        init_from: a.init_from.clone(),
    };
    let bar = a.backbone.bar();
    let task = crate::adapt(&mut embedder, &request, &mut |p| match p {
        Progress::Embedding { done, total } => {
            bar.set_prefix("embedding");
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        Progress::Epoch(r) => {
            bar.set_prefix("training");
            bar.set_length(r.epochs as u64);
            bar.set_position(r.epoch as u64);
            let valid = match (r.valid_loss, r.valid_accuracy) {
                (Some(l), Some(acc)) => format!(" valid loss {l:.4} acc {:.1}%", acc * 100.0),
                _ => String::new(),
            };
            bar.set_message(format!(
                "loss {:.4}{valid} best epoch {}",
                r.train_loss, r.best_epoch
            ));
        }
    })
    .with_context(|| format!("cannot adapt to {}", a.train.display()))?;
    bar.finish_and_clear();
    let record = task.record.clone();
    let pkg = package::build(embedder.package(), &[task])?;
    pkg.write(&a.out)
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    if a.json {
        println!("{}", serde_json::to_string(&record)?);
    }
    let o = &record.outcome;
    eprintln!(
        "adapted {} head `{}` ({}) on {} examples{}: {} epochs, best {}{} -> {} in {:.1}s",
        package::spec_name(record.head),
        record.task,
        record.labels.join(", "),
        o.train_examples,
        if o.synthetic_examples > 0 {
            format!(" + {} synthetic", o.synthetic_examples)
        } else {
            String::new()
        },
        o.epochs_run,
        o.best_epoch,
        o.valid_accuracy
            .map(|acc| format!(
                ", validation accuracy {:.1}% on {}",
                acc * 100.0,
                o.valid_examples
            ))
            .unwrap_or_default(),
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct MultitaskArgs {
    /// The embedding package the heads were trained on.
    #[arg(long, env = "AUTOGLM_MODEL")]
    pub model: PathBuf,
    /// Output package: a directory, or a `.tar` file.
    #[arg(long)]
    pub out: PathBuf,
    /// Single-task packages made by `autoglm adapt`, as NAME=PKG (NAME becomes the task name).
    #[arg(required = true, value_name = "NAME=PKG")]
    pub tasks: Vec<String>,
}

pub fn multitask(a: MultitaskArgs) -> Result<()> {
    let embedding = Package::open(&a.model)
        .with_context(|| format!("cannot load embedding package {}", a.model.display()))?;
    let mut tasks = Vec::new();
    for spec in &a.tasks {
        let Some((name, path)) = spec.split_once('=') else {
            bail!("`{spec}`: expected NAME=PKG");
        };
        let pkg = Package::open(path).with_context(|| format!("cannot load package {path}"))?;
        let mut heads = package::read_tasks(&pkg).with_context(|| format!("package {path}"))?;
        if heads.len() != 1 {
            bail!("{path} already has several tasks; list single-task packages");
        }
        let mut t = heads.remove(0);
        t.record.task = name.to_string();
        tasks.push(t);
    }
    let pkg = package::build(&embedding, &tasks)?;
    pkg.write(&a.out)
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    eprintln!(
        "wrote multi-task package {} ({} tasks, {} outputs)",
        a.out.display(),
        tasks.len(),
        pkg.manifest().labels.len()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct RankArgs {
    #[command(flatten)]
    pub backbone: BackboneArgs,
    /// Target data: JSON lines with "text" (and optionally "label").
    #[arg(long)]
    pub target: PathBuf,
    /// Candidate source packages made by `autoglm adapt`.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// Weight of the label-distribution distance beside MMD².
    #[arg(long, default_value_t = 0.1)]
    pub label_weight: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

pub fn rank(a: RankArgs) -> Result<()> {
    let target = crate::data::read_examples(&a.target, false)?;
    let mut embedder = a.backbone.open()?;
    let ranked = crate::rank(&mut embedder, &target, &a.sources, a.label_weight, a.seed)?;
    if a.json {
        for r in &ranked {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "{:<4} {:>10} {:>10} {:>10}  {:<12} {:<24} package",
        "rank", "score", "mmd2", "label_dist", "task", "labels"
    );
    for (i, r) in ranked.iter().enumerate() {
        println!(
            "{:<4} {:>10.5} {:>10.5} {:>10}  {:<12} {:<24} {}",
            i + 1,
            r.score,
            r.mmd2,
            r.label_distance
                .map_or_else(|| "-".into(), |d| format!("{d:.4}")),
            r.task,
            r.labels.join(","),
            r.package
        );
    }
    Ok(())
}

/// `classify` on a multi-task package: per-task labels and probabilities. Returns false (and
/// prints nothing) for a package without tasks, unless a task was asked for.
pub fn classify_tasks(
    model: &Model,
    texts: &[String],
    task: Option<&str>,
    json: bool,
) -> Result<bool> {
    let Some(slices) = package::task_slices(model.manifest()) else {
        if let Some(t) = task {
            bail!("--task {t}: this package has no tasks (it is not a multi-task package)");
        }
        return Ok(false);
    };
    let chosen: Vec<&(String, std::ops::Range<usize>)> = match task {
        None => slices.iter().collect(),
        Some(t) => {
            let s = slices.iter().find(|(name, _)| name == t).with_context(|| {
                let names: Vec<&str> = slices.iter().map(|(n, _)| n.as_str()).collect();
                format!("--task {t}: no such task (tasks: {})", names.join(", "))
            })?;
            vec![s]
        }
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    // One backbone pass for all tasks: the graph computes every head.
    let outputs = model.outputs(&refs)?;
    let labels = model.labels();
    for (text, out) in texts.iter().zip(&outputs) {
        let mut obj = serde_json::Map::new();
        let mut line = Vec::new();
        for (name, range) in &chosen {
            let p = autoglm_runtime::softmax(&out[range.clone()]);
            let best = (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b });
            let label = |i: usize| {
                labels[range.start + i]
                    .split_once(':')
                    .map_or(labels[range.start + i].as_str(), |(_, l)| l)
                    .to_string()
            };
            let scores: serde_json::Map<String, serde_json::Value> =
                (0..p.len()).map(|i| (label(i), json!(p[i]))).collect();
            obj.insert(
                name.clone(),
                json!({"label": label(best), "scores": scores}),
            );
            line.push(format!("{name}={}\t{:.4}", label(best), p[best]));
        }
        if json {
            if let [(name, _)] = chosen[..] {
                println!("{}", obj[name.as_str()]);
            } else {
                println!("{}", serde_json::Value::Object(obj));
            }
        } else {
            println!("{}\t{}", line.join("\t"), text.replace(['\n', '\t'], " "));
        }
    }
    Ok(true)
}
