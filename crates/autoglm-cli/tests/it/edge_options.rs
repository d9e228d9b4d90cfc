//! Export options on the real model: int8 accuracy and size, the committed default package, and
//! window attention against its dense reference.

use crate::support::*;
use autoglm_export::bert::AttentionGraph;
use autoglm_export::{export, ExportOptions};
use autoglm_package::{Attention, Package, Quantization};
use autoglm_runtime::{BackendKind, LoadOptions, Model};

fn int8_options() -> Option<ExportOptions> {
    let mut options = ExportOptions::new(base_dir()?).with_adapter(adapter_dir());
    options.quantization = Quantization::Int8;
    Some(options)
}

fn test_split() -> Vec<(String, String)> {
    let data = std::fs::read_to_string(assets().expect("assets").join("sentiment/test.jsonl"))
        .expect("test split");
    data.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("row");
            (
                v["text"].as_str().unwrap().to_string(),
                v["label"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn accuracy(model: &Model, rows: &[(String, String)]) -> f64 {
    let texts: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let predictions = model.classify(&texts).expect("classify");
    rows.iter()
        .zip(&predictions)
        .filter(|(r, p)| r.1 == p.label)
        .count() as f64
        / rows.len() as f64
}

#[test]
fn int8_is_small_and_within_a_point_of_fp32() {
    let _budget = autoglm_testkit::budget(
        "edge_options::int8_is_small_and_within_a_point_of_fp32",
        1200,
    );
    let (Some(options), Some(fp32)) = (int8_options(), sentiment_model()) else {
        return;
    };
    let int8 = export(&options).expect("export int8");
    let fp32_size = Package::open(sentiment_package().unwrap())
        .unwrap()
        .files()
        .map(|(_, b)| b.len())
        .sum::<usize>();
    let int8_size = int8.files().map(|(_, b)| b.len()).sum::<usize>();
    assert!(
        int8_size * 100 <= fp32_size * 30,
        "int8 package {int8_size} bytes vs fp32 {fp32_size}"
    );
    let int8 = Model::from_package(
        int8,
        &LoadOptions {
            threads: 2,
            max_batch: 32,
            ..Default::default()
        },
    )
    .expect("load");
    let rows = test_split();
    let (a32, a8) = (accuracy(fp32, &rows), accuracy(&int8, &rows));
    eprintln!(
        "sentiment accuracy: fp32 {:.2} %, int8 {:.2} %; package {:.1} MB vs {:.1} MB",
        a32 * 100.0,
        a8 * 100.0,
        int8_size as f64 / 1e6,
        fp32_size as f64 / 1e6
    );
    assert!((a32 - a8).abs() * 100.0 <= 1.0, "int8 {a8} vs fp32 {a32}");
}

#[test]
fn the_committed_default_package_is_reproducible() {
    let _budget = autoglm_testkit::budget(
        "edge_options::the_committed_default_package_is_reproducible",
        1200,
    );
    let Some(options) = int8_options() else {
        return;
    };
    let committed = std::fs::read(workspace().join("models/sentiment-int8.tar"))
        .expect("models/sentiment-int8.tar");
    let again = export(&options).expect("export").to_tar();
    assert!(again == committed, "exporting base + committed adapter with --quantize int8 no longer gives the committed default package (run tools/build/default-package.sh)");
}

/// Texts of about `tokens` word pieces, from the sentiment test split glued together; past the
/// package's max length the text is made longer still, so that it gets truncated.
fn long_text(rows: &[(String, String)], start: usize, tokens: usize, model: &Model) -> String {
    let target = tokens.min(model.manifest().max_length);
    let mut text = String::new();
    let mut sentences = rows.iter().cycle().skip(start).map(|r| r.0.as_str());
    while model.encoder().encode(&text).map(|e| e.len()).unwrap_or(0) < target {
        text.push_str(sentences.next().expect("cycle"));
        text.push(' ');
    }
    if tokens > model.manifest().max_length {
        for _ in 0..20 {
            text.push_str(sentences.next().expect("cycle"));
            text.push(' ');
        }
    }
    text
}

#[test]
fn window_attention_on_minilm_equals_its_dense_reference() {
    let _budget = autoglm_testkit::budget(
        "edge_options::window_attention_on_minilm_equals_its_dense_reference",
        1200,
    );
    let Some(base) = base_dir() else { return };
    let (window, global) = (64, 1);
    let mut options = ExportOptions::new(base);
    options.max_length = Some(640);
    options.attention = Attention::Window { window, global };
    let load = LoadOptions {
        threads: 1,
        max_batch: 8,
        ..Default::default()
    };
    let sparse =
        Model::from_package(export(&options).expect("export window"), &load).expect("load");
    options.reference_attention = Some(AttentionGraph::WindowReference { window, global });
    let dense =
        Model::from_package(export(&options).expect("export reference"), &load).expect("load");
    let rows = test_split();
    // Lengths around and between block multiples (block = 32), past 512 (extended positions),
    // and over the limit (truncated); one batch, so the shorter ones are padded.
    let texts: Vec<String> = [3, 31, 33, 100, 333, 600, 900]
        .iter()
        .enumerate()
        .map(|(i, &n)| long_text(&rows, i * 50, n, &sparse))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let t = std::time::Instant::now();
    let a = sparse.embed(&refs).expect("sparse");
    let t_sparse = t.elapsed();
    let b = dense.embed(&refs).expect("dense");
    eprintln!(
        "window: {t_sparse:?}, dense reference: {:?}",
        t.elapsed() - t_sparse
    );
    let mut worst = 0.0f32;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let d = max_abs_diff(x, y);
        assert!(
            d <= 1e-4,
            "text {i} ({} tokens) differs by {d}",
            sparse.encoder().encode(refs[i]).unwrap().len()
        );
        worst = worst.max(d);
    }
    eprintln!("window {window}/global {global} vs dense reference: max |Δ| = {worst:e}");
}

/// Every quantized form and the window graph give the same numbers on every backend compiled in
/// (tract, and ONNX Runtime with `--features ort`): the same file, the same texts.
#[test]
fn int8_and_window_packages_agree_across_backends() {
    let _budget = autoglm_testkit::budget(
        "edge_options::int8_and_window_packages_agree_across_backends",
        1200,
    );
    let (Some(int8_options), Some(base)) = (int8_options(), base_dir()) else {
        return;
    };
    let mut window = ExportOptions::new(base);
    window.max_length = Some(640);
    window.attention = Attention::Window {
        window: 64,
        global: 1,
    };
    let mut window_int8 = window.clone();
    window_int8.quantization = Quantization::Int8;
    let rows = test_split();
    let tract = backends()[0];
    // int8 bound: ONNX Runtime's MatMulInteger on this x86 CPU (AVX2, no VNNI) and tract's were
    // measured 5e-2 apart on the logits (design notes: ORT itself can be off by ~0.1 on int8
    // products here); which side is exact is not settled yet, so the bound is that observation.
    for (name, options, bound) in [
        ("int8 sentiment", int8_options, 0.1f32),
        ("window", window, 1e-4),
        ("int8 window", window_int8, 0.1),
    ] {
        let package = export(&options).expect("export");
        // Only the tokenizer and max length matter for building the texts: load once.
        let sizer = Model::from_package(package.clone(), &load_options(tract).unwrap()).unwrap();
        let texts: Vec<String> = [5, 40, 200, 639]
            .iter()
            .enumerate()
            .map(|(i, &n)| long_text(&rows, i * 13, n, &sizer))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let outputs: Vec<(BackendKind, Vec<Vec<f32>>)> = backends()
            .into_iter()
            .filter_map(|b| {
                let model = Model::from_package(package.clone(), &load_options(b)?).expect("load");
                assert_eq!(model.backend_name(), b.name());
                Some((b, model.outputs(&refs).expect("run")))
            })
            .collect();
        for (backend, out) in &outputs[1..] {
            let d = outputs[0]
                .1
                .iter()
                .zip(out)
                .map(|(x, y)| max_abs_diff(x, y))
                .fold(0.0, f32::max);
            eprintln!("{name}: {backend:?} vs tract max |Δ| = {d:e}");
            assert!(d <= bound, "{name}: {backend:?} differs from tract by {d}");
        }
    }
}
