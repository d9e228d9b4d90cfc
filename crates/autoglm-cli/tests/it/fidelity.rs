//! Our numbers against Hugging Face transformers (goldens) and PyTorch's accuracy.

use crate::support::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Goldens {
    meta: Meta,
    texts: Vec<Golden>,
}

#[derive(Deserialize)]
struct Meta {
    max_length: usize,
    labels: Vec<String>,
}

#[derive(Deserialize)]
struct Golden {
    text: String,
    input_ids: Vec<i64>,
    embedding: Vec<f32>,
    logits: Vec<f32>,
}

/// The bound of design.md §6: fp32 within 1e-4 (max abs) of transformers.
const TOLERANCE: f32 = 1e-4;

fn goldens() -> Goldens {
    let path = workspace().join("tests/goldens/goldens.json");
    serde_json::from_slice(&std::fs::read(&path).expect("read goldens")).expect("parse goldens")
}

#[test]
fn token_ids_equal_hf_tokenizers() {
    let Some(model) = embedding_model() else {
        return;
    };
    let g = goldens();
    assert_eq!(model.manifest().max_length, g.meta.max_length);
    assert!(g.texts.len() >= 40);
    for golden in &g.texts {
        let ours = model.encoder().encode(&golden.text).expect("encode");
        assert_eq!(
            ours.ids, golden.input_ids,
            "token ids differ for {:?}",
            golden.text
        );
    }
}

#[test]
fn embeddings_match_transformers() {
    let Some(model) = embedding_model() else {
        return;
    };
    let g = goldens();
    let texts: Vec<&str> = g.texts.iter().map(|t| t.text.as_str()).collect();
    let ours = model.embed(&texts).expect("embed");
    let mut worst = 0.0f32;
    for (golden, v) in g.texts.iter().zip(&ours) {
        let d = max_abs_diff(v, &golden.embedding);
        assert!(
            d <= TOLERANCE,
            "embedding of {:?} differs by {d}",
            golden.text
        );
        worst = worst.max(d);
    }
    eprintln!("embeddings: max |Δ| = {worst:e} over {} texts", ours.len());
}

#[test]
fn logits_match_transformers() {
    let Some(model) = sentiment_model() else {
        return;
    };
    let g = goldens();
    assert_eq!(model.labels(), g.meta.labels.as_slice());
    let texts: Vec<&str> = g.texts.iter().map(|t| t.text.as_str()).collect();
    let ours = model.outputs(&texts).expect("logits");
    let mut worst = 0.0f32;
    for (golden, l) in g.texts.iter().zip(&ours) {
        let d = max_abs_diff(l, &golden.logits);
        assert!(d <= TOLERANCE, "logits of {:?} differ by {d}", golden.text);
        worst = worst.max(d);
    }
    eprintln!("logits: max |Δ| = {worst:e} over {} texts", ours.len());
    // Batched and one-at-a-time runs agree (padding must not leak into results).
    for (i, text) in texts.iter().enumerate().step_by(7) {
        let single = model.outputs(&[text]).expect("single");
        assert!(
            max_abs_diff(&single[0], &ours[i]) <= 1e-5,
            "batching changed the logits of {text:?}"
        );
    }
}

#[derive(Deserialize)]
struct Metrics {
    test_accuracy: f64,
    test_rows: usize,
}

#[derive(Deserialize)]
struct Row {
    text: String,
    label: String,
}

#[test]
fn sentiment_accuracy_equals_pytorch() {
    let Some(model) = sentiment_model() else {
        return;
    };
    let assets = assets().expect("assets");
    let metrics: Metrics = serde_json::from_slice(
        &std::fs::read(adapter_dir().join("metrics.json")).expect("metrics.json"),
    )
    .expect("parse metrics");
    let data = std::fs::read_to_string(assets.join("sentiment/test.jsonl"))
        .expect("test split (tools/fetch-assets.sh)");
    let rows: Vec<Row> = data
        .lines()
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect();
    assert_eq!(
        rows.len(),
        metrics.test_rows,
        "the test split differs from the one PyTorch was measured on"
    );
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let predictions = model.classify(&texts).expect("classify");
    let correct = rows
        .iter()
        .zip(&predictions)
        .filter(|(r, p)| r.label == p.label)
        .count();
    let ours = correct as f64 / rows.len() as f64;
    eprintln!(
        "sentiment accuracy: ours {:.2} %, PyTorch {:.2} % ({} texts)",
        ours * 100.0,
        metrics.test_accuracy * 100.0,
        rows.len()
    );
    assert!(
        (ours - metrics.test_accuracy).abs() * 100.0 <= 0.2,
        "accuracy {ours} vs PyTorch {}",
        metrics.test_accuracy
    );
    let majority = rows
        .iter()
        .filter(|r| r.label == "positive")
        .count()
        .max(rows.iter().filter(|r| r.label == "negative").count());
    assert!(
        ours > majority as f64 / rows.len() as f64 + 0.1,
        "not far above the majority baseline"
    );
}
