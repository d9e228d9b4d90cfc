//! The `autoglm` binary end to end: export, inspect, classify, embed, and its errors.

use crate::support::*;
use std::io::Write;
use std::process::{Output, Stdio};

pub(crate) fn autoglm(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = binary_command(env!("CARGO_BIN_EXE_autoglm"))
        .args(args)
        .env_remove("AUTOGLM_MODEL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run autoglm");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `label` of each `--json` line.
fn json_labels(o: &Output) -> Vec<String> {
    stdout(o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["label"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failure: exit code 1, a clear message, never a panic.
fn assert_fails(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn classify_prints_labels_and_scores() {
    let Some(pkg) = sentiment_package() else {
        return;
    };
    let pkg = pkg.to_str().unwrap();
    let o = autoglm(
        &[
            "classify",
            "--model",
            pkg,
            "--json",
            "I loved this film",
            "A dull, lifeless waste of two hours.",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["label"], "positive");
    assert_eq!(lines[1]["label"], "negative");
    let scores = lines[0]["scores"].as_object().unwrap();
    let sum: f64 = scores.values().map(|v| v.as_f64().unwrap()).sum();
    assert!(
        (sum - 1.0).abs() < 1e-5
            && scores.contains_key("negative")
            && scores.contains_key("positive")
    );

    // JSON lines on stdin, other fields ignored, order kept.
    let input = "{\"text\": \"What a wonderful, moving story\", \"id\": 1}\n\n{\"text\": \"Terrible. I walked out.\"}\n";
    let o = autoglm(
        &["classify", "--model", pkg, "--json", "--input", "-"],
        Some(input),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_labels(&o), ["positive", "negative"]);
}

#[test]
fn embed_prints_unit_vectors() {
    let Some(pkg) = embedding_package() else {
        return;
    };
    let o = autoglm(
        &[
            "embed",
            "--model",
            pkg.to_str().unwrap(),
            "--json",
            "hello world",
            "",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for line in stdout(&o).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let e: Vec<f64> = v["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(e.len(), 384);
        assert!((e.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-4);
    }
}

#[test]
fn export_and_inspect_through_the_cli() {
    let Some(base) = base_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pkg.tar");
    let o = autoglm(
        &[
            "export",
            "--base",
            base.to_str().unwrap(),
            "--adapter",
            adapter_dir().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = autoglm(&["inspect", out.to_str().unwrap(), "--json"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v["manifest"]["labels"],
        serde_json::json!(["negative", "positive"])
    );
    assert_eq!(v["files"]["model.onnx"]["verified"], true);
    assert_eq!(v["ops"]["LayerNormalization"], 13);
    // The .tar package runs.
    let o = autoglm(
        &[
            "classify",
            "--model",
            out.to_str().unwrap(),
            "I loved this film",
        ],
        None,
    );
    assert!(
        o.status.success() && stdout(&o).starts_with("positive\t"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// Without `--model`, the embedded default (the committed int8 sentiment package) answers.
#[test]
fn classify_uses_the_embedded_default_package() {
    let o = autoglm(
        &[
            "classify",
            "--json",
            "I loved this film",
            "A dull, lifeless waste of two hours.",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_labels(&o), ["positive", "negative"]);
}

#[test]
fn bad_input_gets_clear_errors() {
    let Some(pkg) = sentiment_package() else {
        return;
    };
    let pkg = pkg.to_str().unwrap();
    assert_fails(
        &autoglm(&["classify", "--model", pkg], None),
        "no input texts",
    );
    assert_fails(
        &autoglm(&["classify", "--model", pkg, "--input", "-"], Some("")),
        "no input texts",
    );
    assert_fails(
        &autoglm(
            &["classify", "--model", pkg, "--input", "-"],
            Some("{\"text\": \"ok\"}\nnot json\n"),
        ),
        "-:2: not valid JSON",
    );
    assert_fails(
        &autoglm(
            &["classify", "--model", pkg, "--input", "/nonexistent.jsonl"],
            None,
        ),
        "cannot open /nonexistent.jsonl",
    );
    assert_fails(
        &autoglm(&["embed", "hello"], None),
        "cannot be used for embedding",
    );
    assert_fails(
        &autoglm(&["classify", "--model", "/nonexistent", "hello"], None),
        "cannot load package /nonexistent",
    );
    assert_fails(
        &autoglm(&["embed", "--model", pkg, "hello"], None),
        "cannot be used for embedding",
    );
    let dir = tempfile::tempdir().unwrap();
    assert_fails(
        &autoglm(
            &[
                "export",
                "--base",
                dir.path().to_str().unwrap(),
                "--out",
                "x",
            ],
            None,
        ),
        "config.json",
    );
    let o = autoglm(
        &[
            "export",
            "--base",
            "x",
            "--out",
            "y",
            "--attention",
            "window:0,global:1",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "usage errors exit with 2");
}

#[test]
fn long_and_odd_texts_are_handled() {
    let Some(pkg) = sentiment_package() else {
        return;
    };
    // A 300 kB text (too long for an argument list) comes through JSON lines.
    let long = serde_json::json!({"text": "great ".repeat(50_000)}).to_string();
    let input = format!("{long}\n{{\"text\": \" \"}}\n{{\"text\": \"\u{1F600}\"}}\n");
    let o = autoglm(
        &[
            "classify",
            "--model",
            pkg.to_str().unwrap(),
            "--json",
            "--input",
            "-",
        ],
        Some(&input),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 3);
}

#[test]
fn backend_choices_are_honoured_or_refused() {
    let Some(pkg) = sentiment_package() else {
        return;
    };
    let pkg = pkg.to_str().unwrap();
    assert_fails(
        &autoglm(
            &["classify", "--model", pkg, "--device", "cuda", "hello"],
            None,
        ),
        "the tract backend runs on the CPU only",
    );
    let o = autoglm(
        &["classify", "--model", pkg, "--backend", "tpu", "hello"],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "usage errors exit with 2");
    #[cfg(not(feature = "ort"))]
    assert_fails(
        &autoglm(
            &["classify", "--model", pkg, "--backend", "ort", "hello"],
            None,
        ),
        "not compiled with ort: rebuild with --features ort",
    );
    #[cfg(feature = "ort")]
    ort_backend_through_the_cli(pkg);
}

/// `--backend ort` gives tract's labels, says what runs, and `--device cuda` either runs on the
/// CUDA provider or fails saying why: it never quietly runs on the CPU.
#[cfg(feature = "ort")]
fn ort_backend_through_the_cli(pkg: &str) {
    let Some(lib) = ort_library() else { return };
    let lib = lib.to_str().unwrap();
    let texts = ["I loved this film", "A dull, lifeless waste of two hours."];
    let run = |extra: &[&str]| {
        let mut args = vec!["classify", "--model", pkg, "--json"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&texts);
        autoglm(&args, None)
    };
    let tract = run(&[]);
    let ort = run(&["--backend", "ort", "--ort-lib", lib]);
    assert!(ort.status.success(), "{}", stderr(&ort));
    assert!(
        stderr(&ort).contains("on CPUExecutionProvider"),
        "{}",
        stderr(&ort)
    );
    assert_eq!(json_labels(&ort), json_labels(&tract));
    assert_eq!(json_labels(&ort), ["positive", "negative"]);

    let cuda = run(&["--backend", "ort", "--device", "cuda", "--ort-lib", lib]);
    if cuda.status.success() {
        assert!(stderr(&cuda).contains("on CUDAExecutionProvider"));
    } else {
        assert_fails(&cuda, "CUDA");
    }

    let bench = autoglm(
        &[
            "bench",
            "--model",
            pkg,
            "--backend",
            "ort",
            "--ort-lib",
            lib,
            "--seq",
            "16",
            "--batch",
            "2",
            "--iters",
            "2",
            "--json",
        ],
        None,
    );
    assert!(bench.status.success(), "{}", stderr(&bench));
    let row: serde_json::Value = serde_json::from_str(stdout(&bench).trim()).unwrap();
    assert_eq!(row["engine"], "autoglm-ort");
    assert!(row["median_ms"].as_f64().unwrap() > 0.0);
}
