//! Replays the committed seed corpus of the `tokenize_batch` fuzz target
//! (`fuzz/corpus/tokenize_batch/`) through the function the target runs, with the tiny fixture
//! tokenizer, on stable (ROBUSTNESS.md). The ignored test below (re)writes the seed corpora of
//! all three targets:
//! `AUTOGLM_WRITE_FUZZ_SEEDS=1 cargo test ... --tests -- write_fuzz_seeds --ignored`.

use autoglm_export::{export, fixture, ExportOptions};
use autoglm_package::{Manifest, Package, MANIFEST_FILE};
use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    autoglm_testkit::workspace()
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn tokenize_batch_corpus_replays() {
    let tokenizer = fixture::tokenizer_json();
    for (path, bytes) in seeds("tokenize_batch") {
        let outcome = std::panic::catch_unwind(|| {
            autoglm_runtime::fuzzing::tokenize_batch(tokenizer.as_bytes(), &bytes)
        });
        assert!(
            outcome.is_ok(),
            "tokenize_batch panics on {}",
            path.display()
        );
    }
}

/// The `int8_kernels` seeds (`fuzz/corpus/int8_kernels/`, one shape each: tails in rows, depth
/// and columns, both weight ranges, zero points 0 to 255): every integer kernel equals the
/// definition on each.
#[test]
fn int8_kernels_corpus_replays() {
    let seeds = seeds("int8_kernels");
    assert!(seeds.len() >= 6, "the int8_kernels seeds are missing");
    for (path, bytes) in seeds {
        let outcome = std::panic::catch_unwind(|| autoglm_runtime::fuzzing::int8_kernels(&bytes));
        assert!(outcome.is_ok(), "int8_kernels fails on {}", path.display());
    }
}

/// A tar with the given members, in order (what `Package::to_tar` would not write).
fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
#[ignore = "writes the seed corpora; run with AUTOGLM_WRITE_FUZZ_SEEDS=1"]
fn write_fuzz_seeds() {
    if std::env::var_os("AUTOGLM_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(
            bytes.len() < 200_000,
            "{target}/{name} is {} bytes",
            bytes.len()
        );
        std::fs::write(dir.join(name), bytes).unwrap();
    };

    // package_tar: the tiny fixture package (classification, with the LoRA adapter merged).
    let tmp = tempfile::tempdir().unwrap();
    let pkg = fixture::classification_package(tmp.path());
    let tar = pkg.to_tar();
    write("package_tar", "valid_fixture.tar", &tar);
    write("package_tar", "truncated_half.tar", &tar[..tar.len() / 2]);
    write("package_tar", "truncated_header.tar", &tar[..300]);
    write("package_tar", "empty.tar", b"");
    write("package_tar", "zeros.tar", &[0u8; 1024]);
    let mut garbled = tar.clone();
    for i in (600..garbled.len()).step_by(997) {
        garbled[i] ^= 0x5a;
    }
    write("package_tar", "garbled_bytes.tar", &garbled);
    let mut bad_size = tar.clone();
    bad_size[124..136].copy_from_slice(b"77777777777\0"); // first member's size field
    write("package_tar", "huge_size_field.tar", &bad_size);
    let manifest = pkg.manifest().to_json();
    let tokenizer = fixture::tokenizer_json();
    write(
        "package_tar",
        "manifest_only.tar",
        &tar_of(&[(MANIFEST_FILE, &manifest)]),
    );
    write(
        "package_tar",
        "members_before_manifest.tar",
        &tar_of(&[
            ("tokenizer.json", tokenizer.as_bytes()),
            ("model.onnx", pkg.file("model.onnx").unwrap()),
            (MANIFEST_FILE, &manifest),
        ]),
    );
    write(
        "package_tar",
        "tampered_model.tar",
        &tar_of(&[
            (MANIFEST_FILE, &manifest),
            (
                "model.onnx",
                &vec![0u8; pkg.file("model.onnx").unwrap().len()],
            ),
            ("tokenizer.json", tokenizer.as_bytes()),
        ]),
    );
    write(
        "package_tar",
        "duplicate_manifest.tar",
        &tar_of(&[(MANIFEST_FILE, &manifest), (MANIFEST_FILE, &manifest)]),
    );
    let small = Package::new(
        Manifest::example(),
        vec![
            ("model.onnx".into(), b"onnx".to_vec()),
            ("tokenizer.json".into(), b"{}".to_vec()),
        ],
    )
    .unwrap();
    write("package_tar", "valid_example.tar", &small.to_tar());

    // manifest_json
    write("manifest_json", "valid_fixture.json", &manifest);
    write(
        "manifest_json",
        "valid_example.json",
        &small.manifest().to_json(),
    );
    write(
        "manifest_json",
        "truncated.json",
        &manifest[..manifest.len() / 2],
    );
    write("manifest_json", "empty.json", b"");
    write("manifest_json", "empty_object.json", b"{}");
    write(
        "manifest_json",
        "schema_2.json",
        br#"{"schema_version": 2}"#,
    );
    write(
        "manifest_json",
        "schema_huge.json",
        br#"{"schema_version": 1e400}"#,
    );
    write("manifest_json", "nested.json", &[b'['; 4096]);
    let text = String::from_utf8(manifest.clone()).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["labels"] = serde_json::json!(["a", "a"]);
    write(
        "manifest_json",
        "duplicate_label.json",
        v.to_string().as_bytes(),
    );
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["max_length"] = serde_json::json!(1);
    v["files"]["../x"] = serde_json::json!({"size": u64::MAX, "sha256": "z"});
    write("manifest_json", "bad_limits.json", v.to_string().as_bytes());
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["attention"] = serde_json::json!({"type": "window", "window": 3, "global": 99});
    write("manifest_json", "bad_window.json", v.to_string().as_bytes());

    // tokenize_batch
    write(
        "tokenize_batch",
        "vocab.txt",
        b"the film was good !\nnot a very great movies",
    );
    write("tokenize_batch", "empty.txt", b"");
    write("tokenize_batch", "newlines.txt", b"\n\n\n");
    write(
        "tokenize_batch",
        "cjk.txt",
        "这部电影很好看\n映画はとても良かった\n영화가 좋았다".as_bytes(),
    );
    write(
        "tokenize_batch",
        "emoji.txt",
        "good 👍🏽 film 🎬🎬\n👨‍👩‍👧‍👦 family 🇺🇳".as_bytes(),
    );
    write(
        "tokenize_batch",
        "accents_combining.txt",
        "Café naïve e\u{301}\u{301}\u{301} Ⅻ ﬁlm".as_bytes(),
    );
    write(
        "tokenize_batch",
        "controls.txt",
        b"a\x00b\x01c\tthe\r\x7f\x1b[31m film",
    );
    write(
        "tokenize_batch",
        "invalid_utf8.txt",
        b"the \xff\xfe film \xc3\x28 good \xe2\x82",
    );
    write(
        "tokenize_batch",
        "long_line.txt",
        "the film was good ! 好 ".repeat(440).as_bytes(),
    );
    write(
        "tokenize_batch",
        "long_word.txt",
        "a".repeat(10_000).as_bytes(),
    );
    write(
        "tokenize_batch",
        "specials.txt",
        b"[CLS] [SEP] [PAD] [UNK] ##s ##",
    );
    write_model_seeds(&write);
}

/// The fixture classification package (LoRA merged) with the given export options applied.
fn fixture_package(dir: &std::path::Path, change: impl FnOnce(&mut ExportOptions)) -> Package {
    let mut options = fixture::options(dir, true);
    change(&mut options);
    export(&options).unwrap()
}

#[test]
fn onnx_load_corpus_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let template = fixture_package(tmp.path(), |_| {});
    let mut loaded = 0;
    for (path, bytes) in seeds("onnx_load") {
        let outcome =
            std::panic::catch_unwind(|| autoglm_runtime::fuzzing::onnx_load(&template, &bytes));
        assert!(outcome.is_ok(), "onnx_load panics on {}", path.display());
        loaded += usize::from(bytes == template.file("model.onnx").unwrap());
    }
    assert_eq!(loaded, 1, "the corpus holds the template's own graph once");
}

/// Every file of `fuzz/corpus/<target>/`, sorted, with its bytes (at least 3 files).
fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    assert!(paths.len() >= 3, "{}: too few seeds", dir.display());
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// The seeds of the targets that run a model: `onnx_load` (graphs), `http_request` (route byte
/// + body), `component_call` (entry-point byte + package or texts).
fn write_model_seeds(write: &dyn Fn(&str, &str, &[u8])) {
    let tmp = tempfile::tempdir().unwrap();
    let cls = fixture_package(tmp.path(), |_| {});
    let graph = cls.file("model.onnx").unwrap().to_vec();
    write("onnx_load", "fixture_cls.onnx", &graph);
    let variants: [(&str, Box<dyn FnOnce(&mut ExportOptions)>); 3] = [
        (
            "fixture_int8.onnx",
            Box::new(|o| o.quantization = autoglm_package::Quantization::Int8),
        ),
        (
            "fixture_window.onnx",
            Box::new(|o| {
                o.attention = autoglm_package::Attention::Window {
                    window: 4,
                    global: 1,
                }
            }),
        ),
        ("fixture_embedding.onnx", Box::new(|o| o.adapter = None)),
    ];
    for (name, change) in variants {
        let p = fixture_package(tmp.path(), change);
        write("onnx_load", name, p.file("model.onnx").unwrap());
    }
    write("onnx_load", "truncated.onnx", &graph[..graph.len() / 3]);
    let mut garbled = graph.clone();
    for i in (64..garbled.len()).step_by(389) {
        garbled[i] = garbled[i].wrapping_add(1);
    }
    write("onnx_load", "garbled.onnx", &garbled);
    write("onnx_load", "empty.onnx", b"");
    write("onnx_load", "text.onnx", b"not a protobuf at all");

    // http_request: the first byte picks the route (autoglm_serve::fuzzing::ROUTES).
    let request = |route: u8, body: &str| [&[route][..], body.as_bytes()].concat();
    let bodies: [(&str, u8, &str); 14] = [
        ("v1_classify.bin", 0, r#"{"texts": ["a good film", "bad"]}"#),
        (
            "v1_classify_model.bin",
            0,
            r#"{"texts": ["x"], "model": "cls"}"#,
        ),
        (
            "v1_classify_on_emb.bin",
            0,
            r#"{"texts": ["x"], "model": "emb"}"#,
        ),
        ("v1_classify_empty.bin", 0, r#"{"texts": []}"#),
        (
            "v1_classify_wrong_types.bin",
            0,
            r#"{"texts": [1, null, {"a": 2}]}"#,
        ),
        ("v1_classify_not_json.bin", 0, "texts=good"),
        (
            "v1_embed.bin",
            1,
            r#"{"texts": ["the film"], "model": "emb"}"#,
        ),
        (
            "v2_infer_cls.bin",
            2,
            r#"{"id": "1", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["good", "bad"]}]}"#,
        ),
        (
            "v2_infer_outputs.bin",
            2,
            r#"{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}], "outputs": [{"name": "scores"}, {"name": "label"}]}"#,
        ),
        (
            "v2_infer_repeated_output.bin",
            2,
            r#"{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}], "outputs": [{"name": "scores"}, {"name": "scores"}]}"#,
        ),
        (
            "v2_infer_emb_shape_lies.bin",
            3,
            r#"{"inputs": [{"name": "text", "shape": [9999999], "datatype": "BYTES", "data": ["a"]}]}"#,
        ),
        ("v2_infer_unknown_model.bin", 4, r#"{"inputs": []}"#),
        ("get_model.bin", 5, ""),
        ("metrics.bin", 7, ""),
    ];
    for (name, route, body) in bodies {
        write("http_request", name, &request(route, body));
    }
    write(
        "http_request",
        "v1_classify_nested.bin",
        &request(0, &"[".repeat(4096)),
    );

    // component_call: 0 load, 1 classify, 2 embed, 3 outputs.
    let tar = cls.to_tar();
    write(
        "component_call",
        "load_fixture.bin",
        &[&[0][..], &tar].concat(),
    );
    write(
        "component_call",
        "load_truncated.bin",
        &[&[0][..], &tar[..tar.len() / 2]].concat(),
    );
    write("component_call", "load_garbage.bin", b"\x00garbage");
    write("component_call", "classify.bin", b"\x01a good film\nbad\n");
    write("component_call", "classify_empty.bin", b"\x01");
    write("component_call", "embed_on_classifier.bin", b"\x02the film");
    write(
        "component_call",
        "outputs_odd_bytes.bin",
        b"\x03the \xff\xfe film\x00\n\xe2\x82",
    );
    write(
        "component_call",
        "classify_long.bin",
        &[&b"\x01"[..], "good film ".repeat(800).as_bytes()].concat(),
    );
}

/// Found by the replay of `empty.txt` (an input of 64k bytes gets `max_length` 1): the encoder
/// took a limit below its two special tokens and returned 2 ids for a limit of 1.
#[test]
fn corpus_regression_max_length_below_specials_is_refused() {
    let json = fixture::tokenizer_json();
    for max_length in [0, 1] {
        assert!(autoglm_runtime::TextEncoder::from_bytes(json.as_bytes(), max_length).is_err());
    }
    let encoder = autoglm_runtime::TextEncoder::from_bytes(json.as_bytes(), 2).unwrap();
    assert_eq!(encoder.encode("the film").unwrap().len(), 2);
}
