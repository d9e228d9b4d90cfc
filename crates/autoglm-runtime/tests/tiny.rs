//! The runtime on a tiny synthetic package: the whole path (verify, tokenize, batch, run on
//! tract, softmax) without downloaded assets.

use autoglm_export::{export, fixture, ExportOptions};
use autoglm_runtime::{Encoded, LoadOptions, Model, RuntimeError};

fn packages() -> (tempfile::TempDir, Model, Model) {
    let dir = tempfile::tempdir().unwrap();
    let cls = fixture::classification_package(dir.path());
    let emb = export(&fixture::options(dir.path(), false)).unwrap();
    let options = LoadOptions {
        threads: 1,
        max_batch: 2,
        ..LoadOptions::default()
    };
    (
        dir,
        Model::from_package(cls, &options).unwrap(),
        Model::from_package(emb, &options).unwrap(),
    )
}

#[test]
fn classify_and_embed_tiny_packages() {
    let (_dir, cls, emb) = packages();
    let texts = ["the film was good !", "", "not very good movies", "bad", "the the the the the the the the the the the the the the the the the the the the the the the the the the the the the the the the the the the the"];
    let predictions = cls.classify(&texts).unwrap();
    assert_eq!(predictions.len(), texts.len());
    for (text, p) in texts.iter().zip(&predictions) {
        assert!((p.scores.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(p.label, ["bad", "neutral", "good"][p.index]);
        // The same text alone gives the same scores as inside a padded batch.
        let alone = cls.classify(&[text]).unwrap();
        let d = alone[0]
            .scores
            .iter()
            .zip(&p.scores)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d < 1e-6, "{text:?}: batching changed scores by {d}");
    }
    let vectors = emb.embed(&texts).unwrap();
    for v in &vectors {
        assert_eq!(v.len(), fixture::HIDDEN);
        assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
    }
    assert!(cls.classify(&[]).unwrap().is_empty());
}

#[test]
fn long_texts_are_truncated_to_the_manifest_limit() {
    let (_dir, cls, _) = packages();
    let long = "good ".repeat(1000);
    let e = cls.encoder().encode(&long).unwrap();
    assert_eq!(e.len(), fixture::POSITIONS);
    assert_eq!(*e.ids.last().unwrap(), 3, "[SEP] is kept at the end");
    assert_eq!(cls.classify(&[&long]).unwrap().len(), 1);
}

#[test]
fn wrong_use_is_an_error_not_a_panic() {
    let (_dir, cls, emb) = packages();
    assert!(matches!(
        emb.classify(&["x"]),
        Err(RuntimeError::Unsupported(_))
    ));
    assert!(matches!(
        cls.embed(&["x"]),
        Err(RuntimeError::Unsupported(_))
    ));
    let empty = Encoded {
        ids: vec![],
        type_ids: vec![],
    };
    assert!(matches!(
        cls.outputs_for(&[empty]),
        Err(RuntimeError::InvalidInput(_))
    ));
    let too_long = Encoded {
        ids: vec![5; fixture::POSITIONS + 1],
        type_ids: vec![0; fixture::POSITIONS + 1],
    };
    assert!(matches!(
        cls.outputs_for(&[too_long]),
        Err(RuntimeError::InvalidInput(_))
    ));
    // A graph that is not ONNX at all: a clear error, from the decoder.
    let err = autoglm_runtime::TractBackend::new(b"not a protobuf at all", 1, 1)
        .err()
        .expect("garbage is refused");
    assert!(err.to_string().contains("not an ONNX model"), "{err}");
}

#[test]
fn threads_do_not_change_results() {
    let dir = tempfile::tempdir().unwrap();
    fixture::write_base(&dir.path().join("base"));
    let pkg = export(&ExportOptions::new(dir.path().join("base"))).unwrap();
    let one = Model::from_package(
        pkg.clone(),
        &LoadOptions {
            threads: 1,
            max_batch: 32,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let two = Model::from_package(
        pkg,
        &LoadOptions {
            threads: 2,
            max_batch: 32,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let texts = ["the film", "a great movie !", "bad bad bad"];
    let (a, b) = (one.embed(&texts).unwrap(), two.embed(&texts).unwrap());
    for (x, y) in a.iter().zip(&b) {
        assert!(x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-6));
    }
    // A Model is shared between threads through &self.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(two.embed(&texts).unwrap(), b));
        }
    });
}

/// Window attention is not dense attention: with a small window a long text's result changes.
#[test]
fn window_attention_limits_what_tokens_see() {
    use autoglm_package::Attention;
    let dir = tempfile::tempdir().unwrap();
    fixture::write_base(&dir.path().join("base"));
    let dense = Model::from_package(
        export(&ExportOptions::new(dir.path().join("base"))).unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let mut options = ExportOptions::new(dir.path().join("base"));
    options.attention = Attention::Window {
        window: 2,
        global: 0,
    };
    let sparse = Model::from_package(export(&options).unwrap(), &LoadOptions::default()).unwrap();
    let text = "the film was very good and not bad a great movie";
    let d = dense.embed(&[text]).unwrap()[0]
        .iter()
        .zip(&sparse.embed(&[text]).unwrap()[0])
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max);
    assert!(d > 1e-3, "a 2-token window changed nothing ({d})");
}

/// int8 packages run and stay close to fp32 on the tiny model.
#[test]
fn int8_packages_are_close_to_fp32() {
    use autoglm_package::Quantization;
    let dir = tempfile::tempdir().unwrap();
    fixture::write_base(&dir.path().join("base"));
    let fp32 = export(&ExportOptions::new(dir.path().join("base"))).unwrap();
    let mut options = ExportOptions::new(dir.path().join("base"));
    options.quantization = Quantization::Int8;
    let int8 = export(&options).unwrap();
    let a = Model::from_package(fp32, &LoadOptions::default()).unwrap();
    let b = Model::from_package(int8, &LoadOptions::default()).unwrap();
    let texts = ["the film was good !", "bad movies", "a very great film"];
    for (x, y) in a
        .embed(&texts)
        .unwrap()
        .iter()
        .zip(&b.embed(&texts).unwrap())
    {
        let d = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max);
        assert!(d < 0.1, "int8 differs from fp32 by {d}");
    }
}

/// `package` with its manifest edited (the files are re-listed, so digests still verify).
fn edited(
    package: &autoglm_package::Package,
    edit: impl FnOnce(&mut autoglm_runtime::Manifest),
) -> autoglm_package::Package {
    let mut manifest = package.manifest().clone();
    edit(&mut manifest);
    let files = package
        .files()
        .map(|(name, bytes)| (name.to_string(), bytes.to_vec()))
        .collect();
    autoglm_package::Package::new(manifest, files).unwrap()
}

fn mismatch(package: autoglm_package::Package, needle: &str) {
    match Model::from_package(package, &LoadOptions::default()) {
        Err(RuntimeError::GraphMismatch(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected a refusal containing {needle:?}, got {other:?}"),
    }
}

/// A manifest its graph contradicts would give wrong answers without an error: refused at load.
#[test]
fn a_manifest_that_contradicts_its_graph_is_refused_at_load() {
    use autoglm_runtime::ModelKind;
    let dir = tempfile::tempdir().unwrap();
    let cls = fixture::classification_package(dir.path());
    let emb = export(&fixture::options(dir.path(), false)).unwrap();
    // Label count vs the logits' width (the graph has 3).
    mismatch(
        edited(&cls, |m| m.labels = vec!["no".into(), "yes".into()]),
        "lists 2 labels but output `logits` gives 3 logits",
    );
    mismatch(
        edited(&cls, |m| m.labels.push("extra".into())),
        "lists 4 labels",
    );
    // Kind vs output: a classification manifest on the embedding graph, even with as many
    // labels as the vector is wide; an embedding manifest on the classification graph.
    mismatch(
        edited(&emb, |m| {
            m.kind = ModelKind::Classification;
            m.labels = (0..fixture::HIDDEN).map(|i| format!("l{i}")).collect();
        }),
        "classification package whose graph outputs `sentence_embedding`",
    );
    mismatch(
        edited(&cls, |m| {
            m.kind = ModelKind::Embedding;
            m.labels.clear();
            m.graph.output = "sentence_embedding".into();
        }),
        "the graph's (first) output is `logits`",
    );
    // Embedding width vs hidden_size.
    mismatch(
        edited(&emb, |m| m.hidden_size = fixture::HIDDEN * 2),
        "hidden_size 16 but output `sentence_embedding` gives 8",
    );
    // Inputs in another order would be fed to the wrong tensors.
    mismatch(edited(&emb, |m| m.graph.inputs.reverse()), "graph.inputs");
    // max_length beyond the position table.
    mismatch(
        edited(&emb, |m| m.max_length = fixture::POSITIONS + 1),
        "position table of 32 rows",
    );
    // The untouched packages load.
    Model::from_package(cls, &LoadOptions::default()).unwrap();
    Model::from_package(emb, &LoadOptions::default()).unwrap();
}

#[test]
fn load_options_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    fixture::write_base(&dir.path().join("base"));
    let emb = export(&ExportOptions::new(dir.path().join("base"))).unwrap();
    for options in [
        LoadOptions {
            threads: autoglm_runtime::MAX_THREADS + 1,
            ..LoadOptions::default()
        },
        LoadOptions {
            threads: usize::MAX,
            ..LoadOptions::default()
        },
        LoadOptions {
            max_batch: autoglm_runtime::MAX_BATCH + 1,
            ..LoadOptions::default()
        },
    ] {
        match Model::from_package(emb.clone(), &options) {
            Err(RuntimeError::Option(m)) => assert!(m.contains("maximum"), "{m}"),
            other => panic!("{options:?}: expected a refusal, got {other:?}"),
        }
    }
}

/// A backend that reads nothing from its graph (as ort): the width is probed with one batch.
#[derive(Debug)]
struct Opaque(autoglm_runtime::TractBackend);

impl autoglm_runtime::Backend for Opaque {
    fn name(&self) -> &'static str {
        "opaque"
    }
    fn run(&self, batch: &autoglm_runtime::batch::Batch) -> autoglm_runtime::Result<Vec<f32>> {
        self.0.run(batch)
    }
}

#[test]
fn a_backend_without_graph_facts_still_gets_the_width_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cls = fixture::classification_package(dir.path());
    let load = |package: autoglm_package::Package| {
        let graph = package.file("model.onnx").unwrap();
        let backend = autoglm_runtime::TractBackend::new(graph, 1, 1).unwrap();
        Model::with_backend(package, Box::new(Opaque(backend)), &LoadOptions::default())
    };
    match load(edited(&cls, |m| m.labels = vec!["no".into(), "yes".into()])) {
        Err(RuntimeError::GraphMismatch(m)) => assert!(m.contains("gives 3 logits"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let model = load(cls).unwrap();
    assert_eq!(model.classify(&["good"]).unwrap()[0].scores.len(), 3);
}
