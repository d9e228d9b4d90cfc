//! Adaptation end to end: bad input on the tiny synthetic model, the appended graph against the
//! Rust head, multi-task packages, and (with the real assets) accuracy and source ranking.

use autoglm_adapt::{
    adapt, package, rank, Activation, AdaptError, AdaptRequest, Embedder, HeadSpec, Schedule,
};
use autoglm_export::{export, fixture, ExportOptions};
use autoglm_runtime::{LoadOptions, Model};
use std::path::{Path, PathBuf};

fn options() -> LoadOptions {
    LoadOptions {
        threads: 2,
        ..LoadOptions::default()
    }
}

/// The tiny embedding package, written under `dir`.
fn tiny(dir: &Path) -> PathBuf {
    let base = dir.join("base");
    fixture::write_base(&base);
    let pkg = dir.join("embedding");
    export(&ExportOptions::new(base))
        .unwrap()
        .write(&pkg)
        .unwrap();
    pkg
}

fn write(path: &Path, lines: &[String]) -> PathBuf {
    std::fs::write(path, lines.join("\n")).unwrap();
    path.into()
}

/// Sentences of the tiny vocabulary, labelled by whether they say "good" or "bad".
fn tiny_data(n: usize) -> Vec<String> {
    let fillers = ["the film was", "a movie", "very", "the films were not", "!"];
    (0..n)
        .map(|i| {
            let (word, label) = if i % 2 == 0 {
                ("good", "pos")
            } else {
                ("bad", "neg")
            };
            let f = fillers[i % fillers.len()];
            let g = fillers[(i / 3) % fillers.len()];
            format!(r#"{{"text": "{f} {word} {g}", "label": "{label}"}}"#)
        })
        .collect()
}

fn request(train: PathBuf) -> AdaptRequest {
    let mut r = AdaptRequest::new(train);
    r.options.epochs = 60;
    r.options.lr = 0.05;
    r
}

#[test]
fn bad_input_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Embedder::open(&tiny(dir.path()), &options(), None).unwrap();
    let run = |e: &mut Embedder, lines: &[String]| {
        let path = write(&dir.path().join("train.jsonl"), lines);
        adapt(e, &request(path), &mut |_| {}).unwrap_err()
    };
    let err = run(&mut e, &[]);
    assert!(matches!(err, AdaptError::Empty { .. }), "{err}");
    let err = run(
        &mut e,
        &[
            r#"{"text": "good", "label": "pos"}"#.into(),
            "{not json".into(),
        ],
    );
    assert!(
        matches!(err, AdaptError::Malformed { line: 2, .. }),
        "{err}"
    );
    let err = run(&mut e, &[r#"{"text": "good"}"#.into()]);
    assert!(err.to_string().contains("no field \"label\""), "{err}");
    let err = run(&mut e, &[r#"{"label": "x"}"#.into()]);
    assert!(err.to_string().contains("\"text\""), "{err}");
    let single: Vec<String> = (0..4)
        .map(|_| r#"{"text": "good", "label": "pos"}"#.into())
        .collect();
    let err = run(&mut e, &single);
    assert!(
        matches!(&err, AdaptError::SingleLabel { label, .. } if label == "pos"),
        "{err}"
    );

    // A validation label the training set never had.
    let train = write(&dir.path().join("t.jsonl"), &tiny_data(10));
    let valid = write(
        &dir.path().join("v.jsonl"),
        &[
            r#"{"text": "good", "label": "pos"}"#.into(),
            r#"{"text": "bad", "label": "meh"}"#.into(),
        ],
    );
    let mut r = request(train.clone());
    r.valid = Some(valid);
    let err = adapt(&mut e, &r, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, AdaptError::UnknownLabel { line: 2, label, .. } if label == "meh"),
        "{err}"
    );

    // Options that make no sense.
    let mut r = request(train.clone());
    r.options.epochs = 0;
    let err = adapt(&mut e, &r, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            AdaptError::InvalidOption {
                option: "epochs",
                ..
            }
        ),
        "{err}"
    );
    // The message names the option's field (the CLI turns it into its flag).
    assert_eq!(err.option(), Some("epochs"));
    assert_eq!(err.to_string(), "epochs must be at least 1");
    let mut r = request(train.clone());
    r.task = "a/b".into();
    let err = adapt(&mut e, &r, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, AdaptError::InvalidOption { option: "task", .. }),
        "{err}"
    );

    // A classification package is not a backbone.
    let task = adapt(&mut e, &request(train.clone()), &mut |_| {}).unwrap();
    let cls = dir.path().join("cls");
    package::build(e.package(), &[task])
        .unwrap()
        .write(&cls)
        .unwrap();
    let err = Embedder::open(&cls, &options(), None).unwrap_err();
    assert!(err.to_string().contains("embedding package"), "{err}");

    // --init-from a package of another embedding width. The manifest is not under its own
    // digests, so a wider backbone is simulated by editing its hidden size.
    let manifest = cls.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("\"hidden_size\": 8", "\"hidden_size\": 16"),
    )
    .unwrap();
    let mut r = request(train);
    r.init_from = Some(cls);
    let err = adapt(&mut e, &r, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            AdaptError::DimensionMismatch {
                option: Some("init_from"),
                expected: 8,
                found: 16,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("init_from "), "{err}");
}

#[test]
fn tiny_round_trip_graph_matches_head_and_multitask_shares_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let emb_pkg = tiny(dir.path());
    let cache = dir.path().join("cache");
    let mut e = Embedder::open(&emb_pkg, &options(), Some(&cache)).unwrap();
    let train = write(&dir.path().join("t.jsonl"), &tiny_data(60));
    let texts = [
        "the film was good !",
        "a movie very bad",
        "not good",
        "bad bad",
    ];

    let mut heads = Vec::new();
    for (task, spec) in [
        ("lin", HeadSpec::Linear),
        (
            "tanh",
            HeadSpec::Mlp {
                hidden: 6,
                activation: Activation::Tanh,
            },
        ),
        (
            "gelu",
            HeadSpec::Mlp {
                hidden: 5,
                activation: Activation::Gelu,
            },
        ),
    ] {
        let mut r = request(train.clone());
        r.task = task.into();
        r.options.head = spec;
        r.options.seed = 3;
        let t = adapt(&mut e, &r, &mut |_| {}).unwrap();
        // Same seed, same head, bit for bit.
        let again = adapt(&mut e, &r, &mut |_| {}).unwrap();
        assert_eq!(t.head, again.head);

        let out = dir.path().join(task);
        package::build(e.package(), &[t.clone()])
            .unwrap()
            .write(&out)
            .unwrap();
        let model = Model::load_with(&out, &options()).unwrap();
        assert_eq!(model.labels(), ["neg", "pos"]);
        let predictions = model.classify(&texts).unwrap();
        let x = e.embed(&texts, &mut |_, _| {}).unwrap();
        for (p, x) in predictions.iter().zip(&x) {
            let x: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
            let want = autoglm_runtime::softmax(&t.head.logits(&x));
            for (a, b) in p.scores.iter().zip(&want) {
                assert!(
                    (f64::from(*a) - b).abs() < 1e-4,
                    "{task}: graph {a} vs head {b}"
                );
            }
        }
        // The head reads back from the package exactly as it was stored (f32).
        let back = package::read_tasks(&autoglm_package::Package::open(&out).unwrap()).unwrap();
        assert_eq!(back[0].head.f32_layers(), t.head.f32_layers());
        heads.push(t);
    }
    // The embeddings went to the disk cache, keyed by the backbone.
    assert!(std::fs::read_dir(&cache).unwrap().count() == 1);

    let multi = dir.path().join("multi");
    package::build(e.package(), &heads)
        .unwrap()
        .write(&multi)
        .unwrap();
    let model = Model::load_with(&multi, &options()).unwrap();
    let slices = model.tasks();
    assert_eq!(slices.len(), 3);
    assert_eq!(model.labels()[0], "lin:neg");
    assert_eq!(slices[1].range, 2..4);
    // One pass, every task: each task's prediction is the single-task package's.
    let per_text = model.classify_tasks(&texts, None).unwrap();
    for (k, (task, slice)) in heads.iter().zip(&slices).enumerate() {
        assert_eq!(task.record.task, slice.name);
        let single = Model::load_with(dir.path().join(slice.name), &options()).unwrap();
        for (tasks, p) in per_text.iter().zip(single.classify(&texts).unwrap()) {
            let multi = &tasks[k];
            assert_eq!(multi.task, slice.name);
            assert_eq!(multi.labels, ["neg", "pos"]);
            assert_eq!(multi.prediction.label, p.label);
            for (a, b) in multi.prediction.scores.iter().zip(&p.scores) {
                assert!((a - b).abs() < 1e-5, "{}: {a} vs {b}", slice.name);
            }
        }
    }
    // One task only; a task the package does not have; tasks of a single-task package.
    let only = model.classify_tasks(&texts, Some("gelu")).unwrap();
    assert!(only.iter().all(|t| t.len() == 1 && t[0].task == "gelu"));
    let err = model.classify_tasks(&texts, Some("nope")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "task `nope`: no such task (tasks: lin, tanh, gelu)"
    );
    let single = Model::load_with(dir.path().join("lin"), &options()).unwrap();
    assert!(single.tasks().is_empty());
    let err = single.classify_tasks(&texts, Some("lin")).unwrap_err();
    assert!(
        err.to_string().contains("not a multi-task package"),
        "{err}"
    );
}

// ---- real assets (sentiment is fetched in CI; spam only locally) ----

fn assets() -> Option<PathBuf> {
    autoglm_testkit::assets(&["minilm/model.safetensors", "sentiment/train.jsonl"])
}

/// `per_label` examples of each label from a JSON-lines file (first ones in file order).
fn subsample(src: &Path, per_label: usize, skip: usize, out: &Path) -> PathBuf {
    let mut counts = std::collections::HashMap::<String, usize>::new();
    let lines: Vec<String> = std::fs::read_to_string(src)
        .unwrap()
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let c = counts.entry(v["label"].to_string()).or_insert(0);
            *c += 1;
            *c > skip && *c <= skip + per_label
        })
        .map(String::from)
        .collect();
    write(out, &lines)
}

fn real_backbone(dir: &Path, assets: &Path) -> Embedder {
    let pkg = dir.join("minilm");
    export(&ExportOptions::new(assets.join("minilm")))
        .unwrap()
        .write(&pkg)
        .unwrap();
    Embedder::open(&pkg, &options(), None).unwrap()
}

#[test]
fn real_sentiment_adapt_then_classify_beats_majority() {
    let Some(assets) = assets() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut e = real_backbone(dir.path(), &assets);
    let train = subsample(
        &assets.join("sentiment/train.jsonl"),
        200,
        0,
        &dir.path().join("train.jsonl"),
    );
    let test = subsample(
        &assets.join("sentiment/test.jsonl"),
        150,
        0,
        &dir.path().join("test.jsonl"),
    );
    let task = adapt(&mut e, &request(train), &mut |_| {}).unwrap();
    let out = dir.path().join("sentiment.tar");
    package::build(e.package(), &[task])
        .unwrap()
        .write(&out)
        .unwrap();

    // An ordinary classification package: the plain runtime, no adaptation code.
    let model = Model::load_with(&out, &options()).unwrap();
    let examples = autoglm_adapt::data::read_examples(&test, true).unwrap();
    let texts: Vec<&str> = examples.iter().map(|x| x.text.as_str()).collect();
    let predictions = model.classify(&texts).unwrap();
    let right = predictions
        .iter()
        .zip(&examples)
        .filter(|(p, x)| Some(&p.label) == x.label.as_ref())
        .count();
    let accuracy = right as f64 / examples.len() as f64;
    // Balanced test set: the majority baseline is 50 %; a frozen MiniLM + linear head gets ~75 %.
    assert!(accuracy > 0.68, "accuracy {accuracy}");
}

#[test]
fn real_ranking_puts_the_related_source_first() {
    let Some(assets) = assets() else { return };
    if !assets.join("spam/train.jsonl").exists() {
        // The spam e-mails are a local-only asset (not fetched in CI).
        eprintln!(
            "skipping: no spam data at {}",
            assets.join("spam").display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut e = real_backbone(d, &assets);
    let mut sources = Vec::new();
    for name in ["sentiment", "spam"] {
        let train = subsample(
            &assets.join(format!("{name}/train.jsonl")),
            50,
            0,
            &d.join(format!("{name}-train.jsonl")),
        );
        let mut r = request(train);
        r.task = name.into();
        let t = adapt(&mut e, &r, &mut |_| {}).unwrap();
        let out = d.join(format!("{name}.tar"));
        package::build(e.package(), &[t])
            .unwrap()
            .write(&out)
            .unwrap();
        sources.push(out);
    }
    for (target, want) in [("sentiment", "sentiment"), ("spam", "spam")] {
        let path = subsample(
            &assets.join(format!("{target}/test.jsonl")),
            30,
            0,
            &d.join(format!("{target}-target.jsonl")),
        );
        let examples = autoglm_adapt::data::read_examples(&path, false).unwrap();
        let ranked = rank(&mut e, &examples, &sources, 0.1, 0).unwrap();
        assert_eq!(ranked[0].task, want, "{ranked:#?}");
        assert!(ranked[0].mmd2 < ranked[1].mmd2, "{ranked:#?}");
    }
}

#[test]
fn tiny_self_training_rounds_are_recorded_in_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let emb_pkg = tiny(dir.path());
    let mut e = Embedder::open(&emb_pkg, &options(), None).unwrap();
    let train = write(&dir.path().join("t.jsonl"), &tiny_data(8));
    // Labels in the unlabelled file are ignored; texts alone are fine too.
    let mut lines = tiny_data(40);
    lines.push(r#"{"text": "a film"}"#.into());
    let unlabeled = write(&dir.path().join("u.jsonl"), &lines);
    let mut r = request(train);
    r.unlabeled = Some(unlabeled);
    r.options.self_training.threshold = 0.5;
    let t = adapt(&mut e, &r, &mut |_| {}).unwrap();
    let o = &t.record.outcome;
    assert_eq!(o.schedule, Some(Schedule::Fixed));
    assert_eq!(o.train_examples, 8);
    assert_eq!(o.self_training.len(), 2, "{:?}", o.self_training);
    for (i, round) in o.self_training.iter().enumerate() {
        assert_eq!(round.round, i + 1);
        assert!(round.per_class > 0 && round.per_class <= 500);
    }
    let out = dir.path().join("st");
    package::build(e.package(), &[t.clone()])
        .unwrap()
        .write(&out)
        .unwrap();
    let read = package::read_tasks(&autoglm_package::Package::open(&out).unwrap()).unwrap();
    assert_eq!(read[0].record.outcome.self_training, o.self_training);

    // A missing unlabelled file, and a threshold that is not a probability.
    r.unlabeled = Some(dir.path().join("absent.jsonl"));
    let err = adapt(&mut e, &r, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("absent.jsonl"), "{err}");
    r.options.self_training.threshold = 1.5;
    let err = adapt(&mut e, &r, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            AdaptError::InvalidOption {
                option: "self_training.threshold",
                ..
            }
        ),
        "{err}"
    );
}
