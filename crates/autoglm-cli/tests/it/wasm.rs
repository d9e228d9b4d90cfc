//! The WASI component on the wasmtime host (feature `wasm`) gives the native runtime's numbers:
//! the 43 goldens within 1e-5 on every kind of package, through both ways of loading one
//! (`load` from tar bytes, `open` on a preopened directory), and `autoglm --engine wasm`.

use crate::cli::{autoglm, stdout};
use crate::multitask::{assert_task, classify_json, TEXTS};
use crate::support::*;
use autoglm_package::Package;
use autoglm_runtime::Model;
use autoglm_testkit::{budget, component};
use autoglm_wasm::{Host, HostOptions, Limits, WasmError, WasmModel};
use std::path::Path;
use std::sync::OnceLock;

/// wasm vs native: same graph, same tokenizer, different compilers and SIMD kernels.
const TOLERANCE: f32 = 1e-5;

/// int8 packages quantize activations at run time (DynamicQuantizeLinear): a 1e-7 difference in
/// an fp32 value before it (LayerNorm, GELU summed in another order) can move it to the next
/// quantization step, and that step is then carried exactly through the integer products. So
/// two correct engines differ by a few steps' worth, not by float noise; measured 1.7e-2 here
/// (tract vs ONNX Runtime: 4.8e-2). The labels must still agree.
const INT8_TOLERANCE: f32 = 5e-2;

fn host() -> Option<&'static Host> {
    static HOST: OnceLock<Host> = OnceLock::new();
    let path = component()?;
    Some(HOST.get_or_init(|| Host::new(&path, &HostOptions::default()).expect("component")))
}

fn assert_same_outputs(name: &str, native: &Path, mut wasm: WasmModel, tolerance: f32) {
    let all = goldens();
    let refs: Vec<&str> = all.texts.iter().map(|t| t.text.as_str()).collect();
    let expected = Model::load(native)
        .expect("native")
        .outputs(&refs)
        .expect("native run");
    let got = wasm.outputs(&refs).expect("wasm run");
    let classifier = wasm.info().kind == autoglm_wasm::ModelKind::Classification;
    assert_eq!(expected.len(), got.len());
    let diff = expected
        .iter()
        .zip(&got)
        .map(|(e, g)| max_abs_diff(e, g))
        .fold(0.0, f32::max);
    eprintln!(
        "{name}: {} goldens, max |wasm - native| = {diff:.2e}",
        refs.len()
    );
    assert!(
        diff <= tolerance,
        "{name}: max |Δ| {diff:e} > {tolerance:e}"
    );
    let argmax = |v: &Vec<f32>| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b });
    for (i, (e, g)) in expected.iter().zip(&got).enumerate().filter(|_| classifier) {
        assert_eq!(
            argmax(e),
            argmax(g),
            "{name}: {:?} changes its top output",
            refs[i]
        );
    }
}

#[test]
fn goldens_through_the_component_equal_native() {
    // ~1 min here (3 packages x 43 goldens, both engines); a hang or a 10x slowdown stops it.
    let _budget = budget("wasm::goldens_through_the_component_equal_native", 900);
    let (Some(host), Some(sentiment), Some(embedding)) =
        (host(), sentiment_package(), embedding_package())
    else {
        return;
    };
    let limits = Limits::default();
    // fp32 classifier, as a directory the host preopens for the component's `open`.
    let wasm = WasmModel::load_path(host, &sentiment, limits).expect("open directory");
    assert_same_outputs("sentiment fp32 (open)", &sentiment, wasm, TOLERANCE);
    // Embedding package, as tar bytes through `load`.
    let tar = Package::open(&embedding).expect("package").to_tar();
    let wasm = WasmModel::load(host, tar, limits).expect("load bytes");
    assert_eq!(wasm.info().hidden_size, 384);
    assert_same_outputs("embedding fp32 (load)", &embedding, wasm, TOLERANCE);
    // The committed int8 package: tract's wasm and native integer kernels.
    let int8 = workspace().join("models/sentiment-int8.tar");
    let wasm = WasmModel::load_path(host, &int8, limits).expect("load int8");
    assert_same_outputs("sentiment int8 (load)", &int8, wasm, INT8_TOLERANCE);
}

#[test]
fn cli_engine_wasm_equals_native() {
    let _budget = budget("wasm::cli_engine_wasm_equals_native", 300);
    let (Some(_), Some(model)) = (component(), sentiment_package()) else {
        return;
    };
    let model = model.to_str().expect("utf-8 path");
    // The fp32 package (a directory: the host preopens it for the component).
    let texts = [
        "I loved this film, the acting was wonderful.",
        "Boring and far too long.",
    ];
    // Without `--model`: the embedded int8 default, which the host reads where the binary holds
    // it (`WasmModel::load_static`).
    let run = |engine: &str, model: Option<&str>| {
        let mut args = vec!["classify", "--json", "--engine", engine];
        if let Some(model) = model {
            args.extend(["--model", model]);
        }
        args.extend(texts);
        let out = autoglm(&args, None);
        assert!(
            out.status.success(),
            "{engine}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
            .collect::<Vec<_>>()
    };
    for (package, tolerance) in [(Some(model), TOLERANCE), (None, INT8_TOLERANCE)] {
        let (native, wasm) = (run("native", package), run("wasm", package));
        assert_eq!(native.len(), 2);
        assert_eq!(wasm.len(), 2);
        for (n, w) in native.iter().zip(&wasm) {
            assert_eq!(n["label"], w["label"]);
            for label in ["negative", "positive"] {
                let (a, b) = (n["scores"][label].as_f64(), w["scores"][label].as_f64());
                let (a, b) = (a.expect("score"), b.expect("score"));
                assert!(
                    (a - b).abs() <= f64::from(tolerance),
                    "{package:?} {label}: {a} vs {b}"
                );
            }
        }
    }
    // A corrupt package through the component: the WIT error variant, as a clear CLI error.
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.tar");
    let mut bytes = std::fs::read(workspace().join("models/sentiment-int8.tar")).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&bad, bytes).expect("write");
    let out = autoglm(
        &[
            "classify",
            "--engine",
            "wasm",
            "--model",
            bad.to_str().expect("utf-8"),
            "hi",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid package") && err.contains("sha256"),
        "{err}"
    );
}

#[test]
fn multitask_packages_classify_per_task_through_the_component() {
    let _budget = budget(
        "wasm::multitask_packages_classify_per_task_through_the_component",
        300,
    );
    let Some(host) = host() else { return };
    let pkg = multitask_package();
    let direct = Model::load(&pkg)
        .expect("native")
        .classify_tasks(&TEXTS, None)
        .expect("native run");
    // The host API: the tasks in `info`, every task or one, from the component.
    let mut wasm = WasmModel::load_path(host, &pkg, Limits::default()).expect("open");
    let tasks: Vec<(&str, Vec<&str>)> = wasm
        .info()
        .tasks
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.labels.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        tasks,
        [
            ("sentiment", vec!["neg", "pos"]),
            ("noun", vec!["film", "movie", "none"])
        ]
    );
    let got = wasm.classify_tasks(&TEXTS, None).expect("wasm run");
    assert_eq!(got.len(), TEXTS.len());
    for (g, d) in got.iter().zip(&direct) {
        assert_eq!(g.len(), 2);
        for (g, d) in g.iter().zip(d) {
            assert_eq!(g.task, d.task);
            assert_eq!(g.prediction.label, d.prediction.label);
            assert_eq!(g.prediction.index as usize, d.prediction.index);
            assert!(max_abs_diff(&g.prediction.scores, &d.prediction.scores) <= TOLERANCE);
        }
    }
    let noun = wasm.classify_tasks(&TEXTS, Some("noun")).expect("one task");
    assert!(noun.iter().all(|t| t.len() == 1 && t[0].task == "noun"));
    // A task the package does not have; tasks of a single-task package: invalid input.
    match wasm.classify_tasks(&TEXTS, Some("nope")) {
        Err(WasmError::InvalidInput(m)) => {
            assert!(m.contains("no such task (tasks: sentiment, noun)"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let int8 = workspace().join("models/sentiment-int8.tar");
    let mut single = WasmModel::load_path(host, &int8, Limits::default()).expect("load int8");
    assert!(single.info().tasks.is_empty());
    match single.classify_tasks(&TEXTS, None) {
        Err(WasmError::InvalidInput(m)) => assert!(m.contains("not a multi-task package"), "{m}"),
        other => panic!("{other:?}"),
    }

    // `autoglm classify --engine wasm`, every task and `--task`, as natively.
    for (line, tasks) in classify_json(&["--engine", "wasm"]).iter().zip(&direct) {
        for t in tasks {
            assert_task(&line[&t.task], t, TOLERANCE);
        }
    }
    for (line, tasks) in classify_json(&["--engine", "wasm", "--task", "noun"])
        .iter()
        .zip(&direct)
    {
        assert_task(line, &tasks[1], TOLERANCE);
    }
    let p = pkg.to_str().expect("utf-8");
    let out = autoglm(
        &[
            "classify", "--engine", "wasm", "--model", p, "--task", "nope", "good",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--task nope: no such task (tasks: sentiment, noun)"),
        "{err}"
    );
}

/// A package whose `tokenizer.json` is not a BERT WordPiece pipeline (here its normalizer is
/// `Lowercase`): natively the `tokenizers` crate reads it; the component, which has only our
/// tokenizer, refuses it and says why.
#[test]
fn a_tokenizer_of_another_kind_is_refused_by_the_component_with_why() {
    let _budget = budget("wasm::a_tokenizer_of_another_kind", 300);
    let Some(host) = host() else { return };
    let package = Package::open(workspace().join("models/sentiment-int8.tar")).expect("package");
    let mut tokenizer: serde_json::Value =
        serde_json::from_slice(package.file("tokenizer.json").expect("tokenizer")).expect("json");
    tokenizer["normalizer"] = serde_json::json!({"type": "Lowercase"});
    let files = package
        .files()
        .map(|(name, bytes)| match name {
            "tokenizer.json" => (
                name.to_string(),
                serde_json::to_vec(&tokenizer).expect("json"),
            ),
            _ => (name.to_string(), bytes.to_vec()),
        })
        .collect();
    let changed = Package::new(package.manifest().clone(), files).expect("package");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pkg");
    changed.write_dir(&path).expect("write");
    let native = Model::load(&path).expect("natively the tokenizers crate reads it");
    assert_eq!(
        native.outputs(&["a fine film"]).expect("native run").len(),
        1
    );
    let err = WasmModel::load(host, changed.to_tar(), Limits::default())
        .expect_err("the component has no reader for it");
    let message = err.to_string();
    assert!(
        message.contains("BERT WordPiece") && message.contains("Lowercase"),
        "{message}"
    );
}
