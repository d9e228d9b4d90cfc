//! On-device adaptation, the transfer-learning recipe at the edge: the backbone (an embedding
//! package) stays frozen, its embeddings are computed once, and a small task head (linear or a
//! one-hidden-layer MLP) is trained on them in pure Rust. The head is appended to the ONNX graph,
//! so the result is an ordinary, digest-verified classification package. Several heads can share
//! one backbone ([`package::build`] with several tasks), and candidate source packages can be
//! ranked for a target data set by MMD between embeddings ([`rank`]).
//!
//! ```no_run
//! use autoglm_adapt::{adapt, AdaptRequest, Embedder, package};
//! # fn main() -> Result<(), autoglm_adapt::AdaptError> {
//! let mut embedder = Embedder::open("minilm-pkg".as_ref(), &Default::default(), None)?;
//! let request = AdaptRequest::new("train.jsonl");
//! let task = adapt(&mut embedder, &request, &mut |_| {})?;
//! package::build(embedder.package(), &[task])?.write("sentiment-pkg".as_ref())?;
//! # Ok(()) }
//! ```

pub mod activation;
mod adam;
pub mod class_weight;
pub mod data;
pub mod embed;
mod error;
pub mod graph;
pub mod head;
pub mod options;
pub mod package;
pub mod rng;
pub mod self_train;
pub mod set;
mod smote;
pub mod summary;
pub mod train;

pub use activation::Activation;
pub use class_weight::ClassWeight;
pub use embed::Embedder;
pub use error::{AdaptError, Result};
pub use head::{Head, HeadSpec};
pub use options::{Schedule, SelfTraining, TrainOptions};
pub use package::TaskHead;
pub use self_train::RoundReport;
pub use train::{EpochReport, TrainOutcome};

use autoglm_package::{sha256_hex, FileError, Package};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One adaptation run.
#[derive(Debug, Clone)]
pub struct AdaptRequest {
    pub train: PathBuf,
    /// Without it, a stratified split of `train` (`valid_fraction`) validates.
    pub valid: Option<PathBuf>,
    pub valid_fraction: f64,
    /// The head's name inside the package (its tensors, and its slice in a multi-task package).
    pub task: String,
    pub options: TrainOptions,
    /// A package made by `adapt` whose head is the starting point (and the L2-SP anchor).
    pub init_from: Option<PathBuf>,
    /// Unlabelled examples (JSON lines with a `text`; a `label` is ignored) for self-training
    /// (`options.self_training`).
    pub unlabeled: Option<PathBuf>,
}

impl AdaptRequest {
    pub fn new(train: impl Into<PathBuf>) -> Self {
        AdaptRequest {
            train: train.into(),
            valid: None,
            valid_fraction: 0.1,
            task: "task".into(),
            options: TrainOptions::default(),
            init_from: None,
            unlabeled: None,
        }
    }
}

/// What an adaptation run reports while it works.
#[derive(Debug, Clone)]
pub enum Progress {
    Embedding {
        done: usize,
        total: usize,
    },
    Epoch(EpochReport),
    /// A self-training round ended.
    Round(RoundReport),
}

fn to_f64(v: &[Vec<f32>]) -> Vec<Vec<f64>> {
    v.iter()
        .map(|r| r.iter().map(|&x| f64::from(x)).collect())
        .collect()
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Reads the data, embeds it with the frozen backbone and trains the head.
pub fn adapt(
    embedder: &mut Embedder,
    request: &AdaptRequest,
    progress: &mut dyn FnMut(Progress),
) -> Result<TaskHead> {
    graph::check_task_name(&request.task)?;
    request.options.check()?;
    if !(0.0..0.9).contains(&request.valid_fraction) {
        return Err(AdaptError::InvalidOption {
            option: "valid_fraction",
            reason: format!("{} must be in [0, 0.9)", request.valid_fraction),
        });
    }
    // Check everything cheap before the expensive embedding pass.
    let init = match &request.init_from {
        Some(path) => {
            let pkg = Package::open(path)?;
            let found = pkg.manifest().hidden_size;
            if found != embedder.dim() {
                return Err(AdaptError::DimensionMismatch {
                    option: Some("init_from"),
                    what: format!("init_from {}", path.display()),
                    expected: embedder.dim(),
                    found,
                });
            }
            let mut tasks = package::read_tasks(&pkg)?;
            if tasks.len() != 1 {
                return Err(AdaptError::InvalidOption {
                    option: "init_from",
                    reason: format!(
                        "{}: a multi-task package; initialize from a single-task one",
                        path.display()
                    ),
                });
            }
            Some(tasks.remove(0).head)
        }
        None => None,
    };
    let train = data::read_examples(&request.train, true)?;
    let labels = data::label_set(&request.train, &train)?;
    let y = data::label_indices(&request.train, &train, &labels)?;
    let valid = match &request.valid {
        Some(path) => {
            let v = data::read_examples(path, true)?;
            let yv = data::label_indices(path, &v, &labels)?;
            Some((v, yv))
        }
        None => None,
    };
    let unlabeled = match &request.unlabeled {
        Some(path) => Some(data::read_examples(path, false)?),
        None => None,
    };
    let mut on_embed = |done, total| progress(Progress::Embedding { done, total });
    let texts: Vec<&str> = train.iter().map(|e| e.text.as_str()).collect();
    let x = embedder.embed(&texts, &mut on_embed)?;
    let all = set::Set {
        x: to_f64(&x),
        y: y.clone(),
        w: Vec::new(),
    };
    // Resolved on the labelled data alone, once for every round of self-training.
    let smallest = all.counts(labels.len()).into_iter().min().unwrap_or(0);
    let options = TrainOptions {
        schedule: request.options.resolved_schedule(smallest, valid.is_some()),
        ..request.options.clone()
    };
    let (train_set, valid_set) = match valid {
        Some((v, yv)) => {
            let texts: Vec<&str> = v.iter().map(|e| e.text.as_str()).collect();
            let xv = embedder.embed(&texts, &mut on_embed)?;
            (
                all,
                set::Set {
                    x: to_f64(&xv),
                    y: yv,
                    w: Vec::new(),
                },
            )
        }
        // Small data: every example trains; nothing is held out to pick an epoch.
        None if options.schedule == Schedule::Fixed => (all, set::Set::default()),
        None => set::stratified_split(
            &all,
            labels.len(),
            request.valid_fraction,
            request.options.seed,
        ),
    };
    let xu = match &unlabeled {
        Some(u) => {
            let texts: Vec<&str> = u.iter().map(|e| e.text.as_str()).collect();
            to_f64(&embedder.embed(&texts, &mut on_embed)?)
        }
        None => Vec::new(),
    };
    let first = train::train(
        &train_set,
        &valid_set,
        labels.len(),
        &options,
        init.as_ref(),
        &mut |r| progress(Progress::Epoch(*r)),
    )?;
    let (head, outcome) = if unlabeled.is_some() {
        self_train::self_train(
            &train_set,
            &valid_set,
            &xu,
            labels.len(),
            &options,
            init.as_ref(),
            first,
            &mut |s| match s {
                self_train::Step::Epoch(r) => progress(Progress::Epoch(r)),
                self_train::Step::Round(r) => progress(Progress::Round(r)),
            },
        )?
    } else {
        first
    };
    let counts = data::label_counts(&train);
    let summary = summary::Summary::new(
        embedder.backbone().to_string(),
        &x,
        counts,
        request.options.seed,
    );
    let train_bytes = std::fs::read(&request.train).map_err(|source| FileError::Read {
        path: request.train.clone(),
        source,
    })?;
    Ok(TaskHead {
        record: package::TrainingRecord {
            task: request.task.clone(),
            labels,
            head: request.options.head,
            options: request.options.clone(),
            outcome,
            train_file: file_name(&request.train),
            train_sha256: sha256_hex(&train_bytes),
            backbone_sha256: embedder.backbone().to_string(),
            init_from: request.init_from.as_deref().map(file_name),
            trainer: format!("autoglm-adapt {}", env!("CARGO_PKG_VERSION")),
        },
        head,
        summary,
    })
}

/// One candidate source, scored for a target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ranked {
    pub package: String,
    pub task: String,
    pub labels: Vec<String>,
    /// Unbiased MMD² between target and source embeddings (lower = closer).
    pub mmd2: f64,
    /// Label-distribution distance (total variation of sorted proportions); `None` when the
    /// target has no labels.
    pub label_distance: Option<f64>,
    /// `mmd2 + label_weight · label_distance`: the ranking key.
    pub score: f64,
}

/// Ranks single-task source packages for the target examples (most transferable first).
pub fn rank(
    embedder: &mut Embedder,
    target: &[data::Example],
    sources: &[PathBuf],
    label_weight: f64,
    seed: u64,
) -> Result<Vec<Ranked>> {
    if target.len() < 2 {
        return Err(AdaptError::Invalid(
            "the target needs at least 2 examples".into(),
        ));
    }
    let mut rng = rng::Rng::new(seed);
    let pick = rng.sample(target.len(), summary::SUMMARY_SAMPLE);
    let texts: Vec<&str> = pick.iter().map(|&i| target[i].text.as_str()).collect();
    let y = embedder.embed(&texts, &mut |_, _| {})?;
    let target_counts: BTreeMap<String, usize> = data::label_counts(target);
    let mut out = Vec::new();
    for path in sources {
        let pkg = Package::open(path)?;
        for task in package::read_tasks(&pkg)? {
            let s = &task.summary;
            if s.dim != embedder.dim() {
                return Err(AdaptError::DimensionMismatch {
                    option: None,
                    what: format!("source {} summary", path.display()),
                    expected: embedder.dim(),
                    found: s.dim,
                });
            }
            if s.backbone_sha256 != embedder.backbone() {
                return Err(AdaptError::Package(format!(
                    "source {} was trained on another backbone than this one: its embeddings are not comparable",
                    path.display()
                )));
            }
            let mmd2 = summary::mmd2_unbiased(&y, &s.sample);
            let label_distance = (!target_counts.is_empty())
                .then(|| summary::label_distance(&target_counts, &s.label_counts));
            out.push(Ranked {
                package: path.display().to_string(),
                task: task.record.task.clone(),
                labels: task.record.labels.clone(),
                mmd2,
                label_distance,
                score: mmd2 + label_weight * label_distance.unwrap_or(0.0),
            });
        }
    }
    out.sort_by(|a, b| a.score.total_cmp(&b.score));
    Ok(out)
}
