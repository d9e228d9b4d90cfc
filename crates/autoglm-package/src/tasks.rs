//! Multi-task packages: one backbone pass, several classification heads. The graph's `logits`
//! are the heads' outputs side by side; the manifest's `tasks` says which consecutive labels
//! (and logits) belong to which task, and each task's labels are named `task:label`, so an
//! engine that knows nothing of tasks still shows which head a label comes from.

use crate::{Manifest, ModelKind, PackageError};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Longest task name, in bytes.
pub const MAX_TASK_NAME_BYTES: usize = 64;

/// One task of a multi-task package, in logit order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// 1 to [`MAX_TASK_NAME_BYTES`] of `[A-Za-z0-9_-]`.
    pub name: String,
    /// How many labels (logits) the task owns: the next ones after the previous task's.
    pub labels: usize,
}

/// Where one task's scores lie in the output, and its labels without the `task:` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSlice<'a> {
    pub name: &'a str,
    pub range: Range<usize>,
    pub labels: Vec<&'a str>,
}

/// Whether `name` can name a task (it also names the head's tensors in the graph).
pub fn is_task_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TASK_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

impl Manifest {
    /// The tasks of a multi-task package with their slices of the output, in order; empty for
    /// any other package. The manifest has been validated, so the slices cover the labels.
    pub fn task_slices(&self) -> Vec<TaskSlice<'_>> {
        let mut start = 0;
        self.tasks
            .iter()
            .map(|t| {
                let range = start..start + t.labels;
                start = range.end;
                let labels = self.labels[range.clone()]
                    .iter()
                    .map(|l| l.split_once(':').map_or(l.as_str(), |(_, label)| label))
                    .collect();
                TaskSlice {
                    name: &t.name,
                    range,
                    labels,
                }
            })
            .collect()
    }

    pub(crate) fn validate_tasks(&self) -> Result<(), PackageError> {
        let bad = |msg: String| Err(PackageError::InvalidManifest(msg));
        if self.tasks.is_empty() {
            return Ok(());
        }
        if self.kind != ModelKind::Classification {
            return bad("only a classification package has tasks".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut start = 0usize;
        for (i, task) in self.tasks.iter().enumerate() {
            if !is_task_name(&task.name) {
                return bad(format!(
                    "tasks[{i}].name `{}`: use 1 to {MAX_TASK_NAME_BYTES} of [A-Za-z0-9_-]",
                    task.name.chars().take(32).collect::<String>()
                ));
            }
            if !seen.insert(task.name.as_str()) {
                return bad(format!("task `{}` appears twice", task.name));
            }
            if task.labels < 2 {
                return bad(format!(
                    "task `{}` has {} labels; a task needs at least 2",
                    task.name, task.labels
                ));
            }
            let end = start.saturating_add(task.labels);
            let Some(labels) = self.labels.get(start..end) else {
                return bad(format!(
                    "the tasks own {} labels or more, the manifest lists {}",
                    end,
                    self.labels.len()
                ));
            };
            if let Some(l) = labels.iter().find(|l| {
                l.strip_prefix(task.name.as_str())
                    .and_then(|r| r.strip_prefix(':'))
                    .is_none()
            }) {
                return bad(format!(
                    "label `{l}` belongs to task `{}` but is not named `{}:…`",
                    task.name, task.name
                ));
            }
            start = end;
        }
        if start != self.labels.len() {
            return bad(format!(
                "the tasks own {start} labels, the manifest lists {}",
                self.labels.len()
            ));
        }
        Ok(())
    }
}
