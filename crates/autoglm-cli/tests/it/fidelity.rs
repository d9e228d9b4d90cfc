//! Our numbers against Hugging Face transformers (goldens) and PyTorch's accuracy.

use crate::support::*;
use autoglm_runtime::BackendKind;
use serde::Deserialize;

/// One test body, one `#[test]` per backend compiled in: `fidelity::tract::…`, and with the
/// `ort` feature `fidelity::ort::…`, so a failure names the backend. Each has a time budget
/// (autoglm_testkit::budget): a hang fails the run in minutes, not at CI's limit.
macro_rules! backend_tests {
    ($($body:ident),* $(,)?) => {
        mod tract {
            $(#[test]
            fn $body() {
                let _budget = autoglm_testkit::budget(concat!("fidelity::tract::", stringify!($body)), 1200);
                super::$body(autoglm_runtime::BackendKind::Tract)
            })*
        }
        #[cfg(feature = "ort")]
        mod ort {
            $(#[test]
            fn $body() {
                let _budget = autoglm_testkit::budget(concat!("fidelity::ort::", stringify!($body)), 1200);
                super::$body(autoglm_runtime::BackendKind::Ort)
            })*
        }
    };
}

backend_tests!(
    embeddings_match_transformers,
    logits_match_transformers,
    sentiment_accuracy_equals_pytorch,
);

/// The bound of design.md §6: fp32 within 1e-4 (max abs) of transformers.
const TOLERANCE: f32 = 1e-4;

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

fn embeddings_match_transformers(backend: BackendKind) {
    let Some(model) = embedding_model_on(backend) else {
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
    eprintln!(
        "{backend:?} embeddings: max |Δ| = {worst:e} over {} texts",
        ours.len()
    );
}

fn logits_match_transformers(backend: BackendKind) {
    let Some(model) = sentiment_model_on(backend) else {
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
    eprintln!(
        "{backend:?} logits: max |Δ| = {worst:e} over {} texts",
        ours.len()
    );
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

fn sentiment_accuracy_equals_pytorch(backend: BackendKind) {
    let Some(model) = sentiment_model_on(backend) else {
        return;
    };
    let assets = assets().expect("assets");
    let metrics: Metrics = serde_json::from_slice(
        &std::fs::read(adapter_dir().join("metrics.json")).expect("metrics.json"),
    )
    .expect("parse metrics");
    let data = std::fs::read_to_string(assets.join("sentiment/test.jsonl"))
        .expect("test split (tools/setup/fetch-assets.sh)");
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
        "{backend:?} sentiment accuracy: ours {:.2} %, PyTorch {:.2} % ({} texts)",
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

/// Every other backend computes what tract computes, on the goldens' texts, within the same bound.
#[test]
fn backends_agree_with_tract() {
    let g = goldens();
    let texts: Vec<&str> = g.texts.iter().map(|t| t.text.as_str()).collect();
    let (Some(emb), Some(cls)) = (
        embedding_model_on(BackendKind::Tract),
        sentiment_model_on(BackendKind::Tract),
    ) else {
        return;
    };
    let (emb_ref, cls_ref) = (
        emb.embed(&texts).expect("embed"),
        cls.outputs(&texts).expect("logits"),
    );
    for backend in backends().into_iter().skip(1) {
        let (Some(emb), Some(cls)) = (embedding_model_on(backend), sentiment_model_on(backend))
        else {
            continue;
        };
        let pairs = [
            ("embedding", emb.embed(&texts).expect("embed"), &emb_ref),
            ("logits", cls.outputs(&texts).expect("logits"), &cls_ref),
        ];
        for (what, ours, reference) in pairs {
            let worst = ours
                .iter()
                .zip(reference)
                .map(|(a, b)| max_abs_diff(a, b))
                .fold(0.0, f32::max);
            eprintln!("{backend:?} vs Tract {what}: max |Δ| = {worst:e}");
            assert!(
                worst <= TOLERANCE,
                "{backend:?} {what} differ from tract by {worst}"
            );
        }
    }
}
