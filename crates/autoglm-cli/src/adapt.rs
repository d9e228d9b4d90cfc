//! `autoglm adapt`: train a task head on a frozen embedding package.

use crate::backbone::{with_flag, BackboneArgs};
use anyhow::{Context, Result};
use autoglm_adapt::{
    package, AdaptRequest, ClassWeight, HeadSpec, Progress, Schedule, SelfTraining, TrainOptions,
};
use clap::Args;
use std::path::PathBuf;

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
    /// auto (fixed below --small-data examples in the smallest class without --valid,
    /// early-stopping otherwise), fixed or early-stopping.
    #[arg(long, default_value = "auto")]
    pub schedule: Schedule,
    /// `auto` trains the fixed schedule when the smallest class has fewer examples than this.
    #[arg(long, default_value_t = 300)]
    pub small_data: usize,
    /// Fixed schedule: full-batch steps (cosine learning-rate decay to 0).
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Fixed schedule: L2 penalty l2/n * 0.5*|W|^2, two classes: on w1 - w0 (1 = LogisticRegression's C = 1).
    #[arg(long, default_value_t = 1.0)]
    pub l2: f64,
    /// Early stopping: the most epochs.
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Early stopping: the mini-batch size.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// AdamW learning rate of the output layer.
    #[arg(long, default_value_t = 1e-2)]
    pub lr: f64,
    /// AdamW learning rate of the hidden layer (MLP heads).
    #[arg(long, default_value_t = 3e-3)]
    pub hidden_lr: f64,
    /// Early stopping: AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Largest gradient norm (0 = no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Early stopping: epochs without a better validation loss before stopping.
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
    /// Unlabelled texts (JSON lines with "text"; a "label" is ignored) for self-training.
    #[arg(long)]
    pub unlabeled: Option<PathBuf>,
    /// Self-training rounds.
    #[arg(long, default_value_t = 2, requires = "unlabeled")]
    pub self_train_rounds: usize,
    /// Self-training: the least probability of a pseudo-label.
    #[arg(long, default_value_t = 0.55, requires = "unlabeled")]
    pub pseudo_threshold: f64,
    /// Self-training: the most pseudo-labels per class and round (every class takes as many).
    #[arg(long, default_value_t = 500, requires = "unlabeled")]
    pub pseudo_per_class: usize,
    /// Self-training: the pseudo-labelled examples together weigh this times the labelled ones.
    #[arg(long, default_value_t = 0.5, requires = "unlabeled")]
    pub pseudo_weight: f64,
    /// Print the training record as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: AdaptArgs) -> Result<()> {
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
            schedule: a.schedule,
            small_data: a.small_data,
            steps: a.steps,
            l2: a.l2,
            self_training: SelfTraining {
                rounds: a.self_train_rounds,
                threshold: a.pseudo_threshold,
                per_class: a.pseudo_per_class,
                weight: a.pseudo_weight,
            },
        },
        init_from: a.init_from.clone(),
        unlabeled: a.unlabeled.clone(),
    };
    let bar = a.backbone.bar();
    let task = autoglm_adapt::adapt(&mut embedder, &request, &mut |p| match p {
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
        Progress::Round(r) => {
            bar.suspend(|| {
                eprintln!(
                    "self-training round {}: {} pseudo-labels per class (confident: {:?}){}",
                    r.round,
                    r.per_class,
                    r.confident,
                    r.valid_accuracy
                        .map(|acc| format!(", validation accuracy {:.1}%", acc * 100.0))
                        .unwrap_or_default()
                )
            });
        }
    })
    .map_err(with_flag)
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
    let schedule = match o.schedule {
        Some(Schedule::Fixed) => format!("fixed schedule, {} steps", o.epochs_run),
        _ => format!("{} epochs, best {}", o.epochs_run, o.best_epoch),
    };
    let rounds = match o.self_training.last() {
        Some(r) => format!(
            ", {} self-training rounds (last: {} pseudo-labels per class)",
            o.self_training.len(),
            r.per_class
        ),
        None => String::new(),
    };
    eprintln!(
        "adapted {} head `{}` ({}) on {} examples{}: {schedule}{rounds}{} -> {} in {:.1}s",
        package::spec_name(record.head),
        record.task,
        record.labels.join(", "),
        o.train_examples,
        if o.synthetic_examples > 0 {
            format!(" + {} synthetic", o.synthetic_examples)
        } else {
            String::new()
        },
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
