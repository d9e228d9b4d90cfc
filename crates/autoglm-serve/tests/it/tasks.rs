//! A multi-task package (two heads trained by autoglm-adapt on the tiny embedding package):
//! `/v1/classify` per task and with `"task"`, OIP v2 with one label and one scores output per
//! task, and the errors of a task that is not there.

use crate::{get, post, Packages};
use autoglm_adapt::{adapt, package, AdaptRequest, Embedder};
use autoglm_export::fixture;
use autoglm_runtime::{LoadOptions, Model};
use autoglm_serve::{AppState, ModelSpec};
use serde_json::{json, Value};
use std::path::PathBuf;

const TEXTS: [&str; 4] = [
    "the film was good !",
    "a movie very bad",
    "not good",
    "the films were great",
];

/// `multi`: tasks `sentiment` (neg, pos) and `noun` (film, movie, none), in that order, on the
/// backbone of `emb`.
fn multitask(p: &Packages) -> PathBuf {
    let mut e = Embedder::open(&p.path("emb"), &LoadOptions::default(), None).unwrap();
    let mut heads = Vec::new();
    for task in fixture::TASKS {
        let train = p.path(&format!("{task}.jsonl"));
        std::fs::write(&train, fixture::task_data(task)).unwrap();
        let mut r = AdaptRequest::new(train);
        r.task = task.into();
        r.options.epochs = 40;
        r.options.lr = 0.05;
        heads.push(adapt(&mut e, &r, &mut |_| {}).unwrap());
    }
    let out = p.path("multi");
    package::build(e.package(), &heads)
        .unwrap()
        .write(&out)
        .unwrap();
    out
}

fn start(p: &Packages) -> (AppState, Model) {
    let multi = multitask(p);
    let mut config = p.config();
    config
        .models
        .push(ModelSpec::parse(&format!("multi={}", multi.display())).unwrap());
    let model = Model::load(&multi).unwrap();
    (AppState::start(&config).unwrap(), model)
}

fn assert_scores(got: &Value, labels: &[String], scores: &[f32]) {
    assert_eq!(
        got["scores"].as_object().unwrap().len(),
        labels.len(),
        "{got}"
    );
    for (label, score) in labels.iter().zip(scores) {
        let g = got["scores"][label].as_f64().unwrap() as f32;
        assert!((g - score).abs() < 1e-6, "{label}: {g} vs {score}");
    }
}

#[tokio::test]
async fn v1_classify_answers_per_task_like_the_runtime() {
    let p = Packages::new();
    let (state, model) = start(&p);
    let direct = model.classify_tasks(&TEXTS, None).unwrap();
    assert_eq!(direct[0].len(), 2);

    // Every task: one object per text, by task name.
    let a = post(
        &state,
        "/v1/classify",
        json!({"texts": TEXTS, "model": "multi"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert!(v.get("task").is_none());
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), TEXTS.len());
    for (r, tasks) in results.iter().zip(&direct) {
        assert_eq!(r.as_object().unwrap().len(), 2, "{r}");
        for t in tasks {
            assert_eq!(r[&t.task]["label"], t.prediction.label.as_str());
            assert_scores(&r[&t.task], &t.labels, &t.prediction.scores);
        }
    }
    assert_eq!(direct[0][1].labels, ["film", "movie", "none"]);

    // One task: that task's object, and the answer says which.
    let a = post(
        &state,
        "/v1/classify",
        json!({"texts": TEXTS, "model": "multi", "task": "noun"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let v = a.json();
    assert_eq!(v["task"], "noun");
    for (r, tasks) in v["results"].as_array().unwrap().iter().zip(&direct) {
        assert_eq!(r["label"], tasks[1].prediction.label.as_str());
        assert_scores(r, &tasks[1].labels, &tasks[1].prediction.scores);
    }
}

#[tokio::test]
async fn a_task_that_is_not_there_is_a_clear_400() {
    let p = Packages::new();
    let (state, _) = start(&p);
    let refused = |body: Value| {
        let state = state.clone();
        async move {
            let a = post(&state, "/v1/classify", body).await;
            assert_eq!(a.status, 400, "{}", a.text);
            a.error()
        }
    };
    let e = refused(json!({"texts": ["good"], "model": "multi", "task": "nope"})).await;
    assert_eq!(e, "task `nope`: no such task (tasks: sentiment, noun)");
    let e = refused(json!({"texts": ["good"], "model": "cls", "task": "noun"})).await;
    assert!(e.contains("not a multi-task package"), "{e}");
    let e = refused(json!({"texts": ["good"], "model": "emb", "task": "noun"})).await;
    assert!(e.contains("use /v1/embed"), "{e}");
    let e = refused(json!({"texts": ["good"], "model": "multi", "task": 3})).await;
    assert!(e.contains("invalid JSON"), "{e}");
    // `task` belongs to /v1/classify only.
    let a = post(
        &state,
        "/v1/embed",
        json!({"texts": ["good"], "model": "emb", "task": "noun"}),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.text);
}

#[tokio::test]
async fn oip_v2_gives_a_label_and_scores_output_per_task() {
    let p = Packages::new();
    let (state, model) = start(&p);
    let direct = model.classify_tasks(&TEXTS, None).unwrap();

    let meta = get(&state, "/v2/models/multi").await.json();
    assert_eq!(
        meta["outputs"],
        json!([
            {"name": "sentiment.label", "datatype": "BYTES", "shape": [-1]},
            {"name": "sentiment.scores", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "noun.label", "datatype": "BYTES", "shape": [-1]},
            {"name": "noun.scores", "datatype": "FP32", "shape": [-1, 3]},
        ])
    );

    let infer = |outputs: Option<Value>| {
        let state = state.clone();
        async move {
            let mut body = json!({"inputs": [
                {"name": "text", "shape": [4], "datatype": "BYTES", "data": TEXTS}
            ]});
            if let Some(o) = outputs {
                body["outputs"] = o;
            }
            post(&state, "/v2/models/multi/infer", body).await
        }
    };
    let a = infer(None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let outputs = a.json()["outputs"].as_array().unwrap().clone();
    assert_eq!(outputs.len(), 4);
    for (k, task) in ["sentiment", "noun"].iter().enumerate() {
        let label = &outputs[2 * k];
        let scores = &outputs[2 * k + 1];
        assert_eq!(label["name"], format!("{task}.label"));
        assert_eq!(label["shape"], json!([4]));
        assert_eq!(scores["name"], format!("{task}.scores"));
        let width = direct[0][k].labels.len();
        assert_eq!(scores["shape"], json!([4, width]));
        let data: Vec<f32> = serde_json::from_value(scores["data"].clone()).unwrap();
        for (i, tasks) in direct.iter().enumerate() {
            assert_eq!(label["data"][i], tasks[k].prediction.label.as_str());
            for (g, d) in data[i * width..(i + 1) * width]
                .iter()
                .zip(&tasks[k].prediction.scores)
            {
                assert!((g - d).abs() < 1e-6, "{task}: {g} vs {d}");
            }
        }
    }

    // One output asked for; the single-task names are not this model's.
    let a = infer(Some(json!([{"name": "noun.scores"}]))).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let outputs = a.json()["outputs"].as_array().unwrap().clone();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0]["shape"], json!([4, 3]));
    let a = infer(Some(json!([{"name": "label"}]))).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.error().contains("has no output `label`"), "{}", a.text);
}
