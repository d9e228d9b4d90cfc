//! `autoglm classify`: a label and per-label scores per text; per task for a multi-task package.

use crate::engine::Runner;
use crate::model::{for_each_chunk, RunArgs};
use anyhow::{anyhow, Result};
use autoglm_runtime::{Model, RuntimeError};
use std::io::Write;

pub fn run(a: RunArgs) -> Result<()> {
    let mut labels = None;
    for_each_chunk(&a, |runner, texts| {
        match &*runner {
            Runner::Native(model) if a.task.is_some() || !model.tasks().is_empty() => {
                return classify_tasks(model, texts, a.task.as_deref(), a.json);
            }
            Runner::Native(_) => {}
            #[cfg(feature = "wasm")]
            Runner::Wasm(_) => {
                if a.task.is_some() {
                    anyhow::bail!("--task (multi-task packages) needs --engine native");
                }
            }
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let predictions = runner.classify(&refs)?;
        let labels = labels.get_or_insert_with(|| runner.labels());
        let mut out = std::io::stdout().lock();
        for (text, p) in texts.iter().zip(&predictions) {
            if a.json {
                writeln!(out, "{}", p.to_json(labels))?;
            } else {
                writeln!(
                    out,
                    "{}\t{:.4}\t{}",
                    p.label,
                    p.scores[p.index],
                    one_line(text)
                )?;
            }
        }
        Ok(())
    })
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\t'], " ")
}

/// A multi-task package: per-task labels and probabilities, from one backbone pass. With one
/// task (`--task`), `--json` prints that task's object; with several, an object of them by name.
fn classify_tasks(model: &Model, texts: &[String], task: Option<&str>, json: bool) -> Result<()> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let per_text = model.classify_tasks(&refs, task).map_err(|e| match e {
        RuntimeError::NoTasks { task: Some(t) } => {
            anyhow!("--task {t}: this package has no tasks (it is not a multi-task package)")
        }
        RuntimeError::NoSuchTask { task, tasks } => {
            anyhow!("--task {task}: no such task (tasks: {})", tasks.join(", "))
        }
        e => e.into(),
    })?;
    let mut out = std::io::stdout().lock();
    for (text, tasks) in texts.iter().zip(&per_text) {
        if json {
            let line = match &tasks[..] {
                [t] => t.prediction.to_json(&t.labels),
                _ => tasks
                    .iter()
                    .map(|t| (t.task.clone(), t.prediction.to_json(&t.labels)))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            };
            writeln!(out, "{line}")?;
        } else {
            let line: Vec<String> = tasks
                .iter()
                .map(|t| {
                    let p = &t.prediction;
                    format!("{}={}\t{:.4}", t.task, p.label, p.scores[p.index])
                })
                .collect();
            writeln!(out, "{}\t{}", line.join("\t"), one_line(text))?;
        }
    }
    Ok(())
}
