//! `autoglm classify`: a label and per-label scores per text; per task for a multi-task package.

use crate::engine::Runner;
use crate::model::{for_each_chunk, RunArgs};
use anyhow::{bail, Result};
use autoglm_runtime::TaskPrediction;
use std::io::Write;

pub fn run(a: RunArgs) -> Result<()> {
    let mut labels = None;
    for_each_chunk(&a, |runner, texts| {
        let tasks = runner.tasks();
        if a.task.is_some() || !tasks.is_empty() {
            return classify_tasks(runner, &tasks, texts, a.task.as_deref(), a.json);
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

/// A multi-task package (`tasks`, on either engine): per-task labels and probabilities, from
/// one backbone pass. With one task (`--task`), `--json` prints that task's object; with
/// several, an object of them by name.
fn classify_tasks(
    runner: &mut Runner,
    tasks: &[String],
    texts: &[String],
    task: Option<&str>,
    json: bool,
) -> Result<()> {
    match task {
        Some(t) if tasks.is_empty() => {
            bail!("--task {t}: this package has no tasks (it is not a multi-task package)")
        }
        Some(t) if !tasks.iter().any(|n| n == t) => {
            bail!("--task {t}: no such task (tasks: {})", tasks.join(", "))
        }
        _ => {}
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let per_text = runner.classify_tasks(&refs, task)?;
    let mut out = std::io::stdout().lock();
    for (text, tasks) in texts.iter().zip(&per_text) {
        if json {
            writeln!(out, "{}", TaskPrediction::to_json(tasks))?;
        } else {
            let line: Vec<String> = tasks
                .iter()
                .map(|t| {
                    let p = &t.prediction;
                    let score = p.scores.get(p.index).copied().unwrap_or_default();
                    format!("{}={}\t{score:.4}", t.task, p.label)
                })
                .collect();
            writeln!(out, "{}\t{}", line.join("\t"), one_line(text))?;
        }
    }
    Ok(())
}
