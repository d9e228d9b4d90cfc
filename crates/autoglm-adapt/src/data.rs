//! Labelled examples as JSON lines: `{"text": …, "label": …}`, other fields ignored.

use crate::{AdaptError, Result};
use autoglm_package::FileError;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: String,
    /// Absent only where labels are optional (a ranking target).
    pub label: Option<String>,
}

/// Reads JSON lines; blank lines are skipped. With `need_label`, a line without one is refused.
pub fn read_examples(path: &Path, need_label: bool) -> Result<Vec<Example>> {
    let content = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.into(),
        source,
    })?;
    let malformed = |line: usize, reason: String| AdaptError::Malformed {
        path: path.into(),
        line,
        reason,
    };
    let mut out = Vec::new();
    for (i, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| malformed(i + 1, format!("not JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| malformed(i + 1, "not a JSON object".into()))?;
        let text = obj
            .get("text")
            .and_then(|t| t.as_str())
            .ok_or_else(|| malformed(i + 1, "no string field \"text\"".into()))?
            .to_string();
        // Data sets often use 0/1 or true/false as labels: their JSON text is the label name.
        let label = match obj.get("label") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if s.is_empty() => {
                return Err(malformed(i + 1, "empty \"label\"".into()))
            }
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                Some(v.to_string())
            }
            Some(_) => {
                return Err(malformed(
                    i + 1,
                    "\"label\" must be a string, number or boolean".into(),
                ))
            }
        };
        if need_label && label.is_none() {
            return Err(malformed(i + 1, "no field \"label\"".into()));
        }
        out.push(Example { text, label });
    }
    if out.is_empty() {
        return Err(AdaptError::Empty { path: path.into() });
    }
    Ok(out)
}

/// The training set's labels, sorted (that order is the logit order), with at least two.
pub fn label_set(path: &Path, examples: &[Example]) -> Result<Vec<String>> {
    let counts = label_counts(examples);
    if counts.len() < 2 {
        let label = counts.keys().next().cloned().unwrap_or_default();
        return Err(AdaptError::SingleLabel {
            path: path.into(),
            label,
        });
    }
    Ok(counts.into_keys().collect())
}

pub fn label_counts(examples: &[Example]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for e in examples {
        if let Some(l) = &e.label {
            *counts.entry(l.clone()).or_insert(0) += 1;
        }
    }
    counts
}

/// Class indices of `examples` in `labels`; a label outside the set is refused with its line.
pub fn label_indices(path: &Path, examples: &[Example], labels: &[String]) -> Result<Vec<usize>> {
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let label = e.label.as_deref().unwrap_or_default();
            labels
                .iter()
                .position(|l| l == label)
                .ok_or_else(|| AdaptError::UnknownLabel {
                    path: path.into(),
                    // Blank lines are skipped, so this is the example's number, which is the
                    // line number for files without blank lines.
                    line: i + 1,
                    label: label.into(),
                    known: labels.join(", "),
                })
        })
        .collect()
}
