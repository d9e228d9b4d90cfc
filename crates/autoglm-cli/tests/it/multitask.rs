//! `autoglm classify` on a multi-task package, natively: every task from one pass, `--task`,
//! and the errors of a task that is not there (the `--engine wasm` side is in `wasm.rs`).

use crate::cli::{autoglm, stdout};
use crate::support::multitask_package;
use autoglm_runtime::Model;
use serde_json::Value;

pub const TEXTS: [&str; 3] = ["the film was good !", "a movie very bad", "not good"];

/// `autoglm classify --json` on the multi-task package with `extra` arguments: one JSON value
/// per text.
pub fn classify_json(extra: &[&str]) -> Vec<Value> {
    let pkg = multitask_package();
    let mut args = vec![
        "classify",
        "--json",
        "--model",
        pkg.to_str().expect("utf-8"),
    ];
    args.extend(extra);
    args.extend(TEXTS);
    let out = autoglm(&args, None);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// `got` (one task's `{"label", "scores"}`) against the runtime's prediction, within `tolerance`.
pub fn assert_task(got: &Value, want: &autoglm_runtime::TaskPrediction, tolerance: f32) {
    assert_eq!(got["label"], want.prediction.label.as_str(), "{got}");
    let scores = got["scores"].as_object().expect("scores");
    assert_eq!(scores.len(), want.labels.len(), "{got}");
    for (label, s) in want.labels.iter().zip(&want.prediction.scores) {
        let g = scores[label].as_f64().expect("score") as f32;
        assert!(
            (g - s).abs() <= tolerance,
            "{}/{label}: {g} vs {s}",
            want.task
        );
    }
}

#[test]
fn classify_gives_every_task_or_the_one_asked_for() {
    let pkg = multitask_package();
    let direct = Model::load(&pkg)
        .expect("load")
        .classify_tasks(&TEXTS, None)
        .expect("classify_tasks");
    assert_eq!(direct[0].len(), 2);
    assert_eq!(direct[0][1].labels, ["film", "movie", "none"]);
    // Every task: an object by task name per text.
    let all = classify_json(&[]);
    assert_eq!(all.len(), TEXTS.len());
    for (line, tasks) in all.iter().zip(&direct) {
        assert_eq!(line.as_object().expect("object").len(), 2, "{line}");
        for t in tasks {
            assert_task(&line[&t.task], t, 1e-6);
        }
    }
    // One task: that task's object.
    let noun = classify_json(&["--task", "noun"]);
    for (line, tasks) in noun.iter().zip(&direct) {
        assert_task(line, &tasks[1], 1e-6);
    }
    // The text form: `task=label<TAB>score` per task, then the text.
    let p = pkg.to_str().expect("utf-8");
    let out = autoglm(&["classify", "--model", p, "not good"], None);
    assert!(out.status.success());
    let line = stdout(&out);
    let fields: Vec<&str> = line.trim_end().split('\t').collect();
    assert_eq!(fields.len(), 5, "{line}");
    assert_eq!(
        fields[0],
        format!("sentiment={}", direct[2][0].prediction.label)
    );
    assert_eq!(fields[2], format!("noun={}", direct[2][1].prediction.label));
    assert_eq!(fields[4], "not good");
    // A task the package does not have.
    let out = autoglm(&["classify", "--model", p, "--task", "nope", "good"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--task nope: no such task (tasks: sentiment, noun)"),
        "{err}"
    );
}

#[test]
fn multitask_merges_multi_task_packages_and_refuses_to_rename_them() {
    let multi = multitask_package();
    let dir = multi.parent().expect("parent");
    let (emb, p) = (dir.join("emb"), multi.to_str().expect("utf-8"));
    let out_path = dir.join("merged");
    let merged = out_path.to_str().expect("utf-8");
    let emb = emb.to_str().expect("utf-8");
    let multitask = |inputs: &[&str]| {
        let mut args = vec!["multitask", "--model", emb, "--out", merged];
        args.extend(inputs);
        autoglm(&args, None)
    };
    // PKG alone: every task of PKG, under its own name.
    let out = multitask(&[p]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tasks = |path: &std::path::Path| -> Vec<String> {
        let m = Model::load(path).expect("load");
        m.classify_tasks(&TEXTS[..1], None).expect("classify")[0]
            .iter()
            .map(|t| t.task.clone())
            .collect()
    };
    assert_eq!(tasks(&out_path), ["sentiment", "noun"]);
    assert_eq!(tasks(&out_path), tasks(&multi));
    let refused = |inputs: &[&str], needle: &str| {
        let out = multitask(inputs);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{inputs:?}: {err}");
    };
    // NAME=PKG renames one task: a multi-task package has several.
    refused(&[&format!("x={p}")], "has 2 tasks: NAME=");
    // The same task twice.
    refused(&[p, p], "sentiment");
}
