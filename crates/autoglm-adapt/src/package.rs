//! Classification packages made of an embedding package and trained heads.

use crate::embed::backbone_sha256;
use crate::graph::{append_heads, read_head, LOGITS};
use crate::head::{Head, HeadSpec};
use crate::options::TrainOptions;
use crate::summary::{Summary, SUMMARY_FILE};
use crate::train::TrainOutcome;
use crate::{AdaptError, Result};
use autoglm_package::{sha256_hex, ModelKind, Package, Task};
use serde::{Deserialize, Serialize};

/// How a head was trained (the package's `training.json`; one entry per task in `tasks.json`).
pub const TRAINING_FILE: &str = "training.json";
/// Present only in multi-task packages: the tasks' training records, in logit order (the
/// manifest's `tasks` says where each task's labels are).
pub const TASKS_FILE: &str = "tasks.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingRecord {
    pub task: String,
    /// In logit order.
    pub labels: Vec<String>,
    pub head: HeadSpec,
    pub options: TrainOptions,
    pub outcome: TrainOutcome,
    /// File name and sha256 of the training data.
    pub train_file: String,
    pub train_sha256: String,
    /// sha256 of the embedding graph the head was trained on.
    pub backbone_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<String>,
    /// `autoglm-adapt <version>`.
    pub trainer: String,
}

/// A trained head with what the package keeps about it.
#[derive(Debug, Clone)]
pub struct TaskHead {
    pub record: TrainingRecord,
    pub head: Head,
    pub summary: Summary,
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("plain data always serializes");
    b.push(b'\n');
    b
}

/// The embedding package with `tasks` appended: a classification package. One task: labels are
/// the task's; several: `task:label`, with `tasks.json` saying where each task's slice is.
pub fn build(embedding: &Package, tasks: &[TaskHead]) -> Result<Package> {
    let m = embedding.manifest();
    if m.kind != ModelKind::Embedding {
        return Err(AdaptError::Package(
            "heads are appended to an embedding package".into(),
        ));
    }
    if tasks.is_empty() {
        return Err(AdaptError::Invalid("no task heads to package".into()));
    }
    let backbone = backbone_sha256(embedding)?;
    let mut names = std::collections::BTreeSet::new();
    for t in tasks {
        if t.record.backbone_sha256 != backbone {
            return Err(AdaptError::Package(format!(
                "task `{}` was trained on another backbone (graph sha256 {}, this one {backbone})",
                t.record.task, t.record.backbone_sha256
            )));
        }
        if t.head.input_dim() != m.hidden_size {
            return Err(AdaptError::DimensionMismatch {
                option: None,
                what: format!("task `{}` head input", t.record.task),
                expected: m.hidden_size,
                found: t.head.input_dim(),
            });
        }
        if !names.insert(t.record.task.as_str()) {
            return Err(AdaptError::Invalid(format!(
                "task `{}` appears twice",
                t.record.task
            )));
        }
    }
    let heads: Vec<(&str, &Head)> = tasks
        .iter()
        .map(|t| (t.record.task.as_str(), &t.head))
        .collect();
    let graph = append_heads(embedding.file(&m.graph.file)?, &m.graph.output, &heads)?;
    let mut head_bytes = Vec::new();
    for t in tasks {
        for (w, b) in t.head.f32_layers() {
            head_bytes.extend(w.iter().chain(&b).flat_map(|v| v.to_le_bytes()));
        }
    }
    let mut files: Vec<(String, Vec<u8>)> = embedding
        .files()
        .filter(|(name, _)| *name != m.graph.file)
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect();
    files.push((m.graph.file.clone(), graph));
    let mut manifest = m.clone();
    manifest.kind = ModelKind::Classification;
    manifest.graph.output = LOGITS.into();
    if let [t] = tasks {
        manifest.labels = t.record.labels.clone();
        files.push((SUMMARY_FILE.into(), json(&t.summary)));
        files.push((TRAINING_FILE.into(), json(&t.record)));
    } else {
        manifest.labels = tasks
            .iter()
            .flat_map(|t| {
                t.record
                    .labels
                    .iter()
                    .map(move |l| format!("{}:{l}", t.record.task))
            })
            .collect();
        manifest.tasks = tasks
            .iter()
            .map(|t| Task {
                name: t.record.task.clone(),
                labels: t.record.labels.len(),
            })
            .collect();
        let records: Vec<&TrainingRecord> = tasks.iter().map(|t| &t.record).collect();
        files.push((TASKS_FILE.into(), json(&records)));
        for t in tasks {
            files.push((format!("summary.{}.json", t.record.task), json(&t.summary)));
        }
    }
    let desc: Vec<String> = tasks
        .iter()
        .map(|t| {
            format!(
                "{} ({} head on {})",
                t.record.task,
                spec_name(t.record.head),
                t.record.train_file
            )
        })
        .collect();
    manifest.provenance.adapter = Some(format!("trained heads: {}", desc.join(", ")));
    manifest.provenance.adapter_weights_sha256 = Some(sha256_hex(&head_bytes));
    manifest.provenance.exporter = format!(
        "{} + autoglm-adapt {}",
        m.provenance.exporter,
        env!("CARGO_PKG_VERSION")
    );
    Ok(Package::new(manifest, files)?)
}

pub fn spec_name(spec: HeadSpec) -> String {
    match spec {
        HeadSpec::Linear => "linear".into(),
        HeadSpec::Mlp { hidden, activation } => {
            format!("mlp:{hidden}:{}", format!("{activation:?}").to_lowercase())
        }
    }
}

/// The heads of a package made by `adapt` (one) or by [`build`] with several tasks.
pub fn read_tasks(package: &Package) -> Result<Vec<TaskHead>> {
    let m = package.manifest();
    let not_adapted = || {
        AdaptError::Package(format!(
            "it has neither {TRAINING_FILE} nor {TASKS_FILE}: only packages made by `autoglm adapt` carry trained heads"
        ))
    };
    let parse = |name: &str| -> Result<Vec<u8>> { Ok(package.file(name)?.to_vec()) };
    let graph = package.file(&m.graph.file)?;
    let bad = |name: &str, e: serde_json::Error| AdaptError::Package(format!("{name}: {e}"));
    if m.files.contains_key(TRAINING_FILE) {
        let record: TrainingRecord =
            serde_json::from_slice(&parse(TRAINING_FILE)?).map_err(|e| bad(TRAINING_FILE, e))?;
        let summary = Summary::from_json(&parse(SUMMARY_FILE)?)?;
        let head = read_head(graph, &record.task, record.head)?;
        Ok(vec![TaskHead {
            record,
            head,
            summary,
        }])
    } else if m.files.contains_key(TASKS_FILE) {
        let records: Vec<TrainingRecord> =
            serde_json::from_slice(&parse(TASKS_FILE)?).map_err(|e| bad(TASKS_FILE, e))?;
        records
            .into_iter()
            .map(|record| {
                let summary =
                    Summary::from_json(&parse(&format!("summary.{}.json", record.task))?)?;
                let head = read_head(graph, &record.task, record.head)?;
                Ok(TaskHead {
                    record,
                    head,
                    summary,
                })
            })
            .collect()
    } else {
        Err(not_adapted())
    }
}
