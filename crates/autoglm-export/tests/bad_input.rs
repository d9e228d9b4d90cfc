//! Export on a tiny synthetic checkpoint: determinism, and a clear error for every kind of bad
//! input (no downloaded assets needed).

use autoglm_export::{export, fixture, ExportError, ExportOptions};
use std::path::{Path, PathBuf};

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let adapter = dir.path().join("adapter");
    fixture::write_base(&base);
    fixture::write_adapter(&adapter);
    (dir, base, adapter)
}

fn export_err(base: &Path, adapter: Option<&Path>) -> String {
    let mut options = ExportOptions::new(base);
    options.adapter = adapter.map(Path::to_path_buf);
    let err = export(&options).expect_err("export should fail");
    err.to_string()
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn tiny_export_is_deterministic_and_labelled() {
    let (_dir, base, adapter) = setup();
    let a = export(&ExportOptions::new(&base).with_adapter(&adapter)).unwrap();
    let b = export(&ExportOptions::new(&base).with_adapter(&adapter)).unwrap();
    assert_eq!(a.to_tar(), b.to_tar());
    assert_eq!(a.manifest().labels, ["bad", "neutral", "good"]);
    assert_eq!(a.manifest().max_length, fixture::POSITIONS);
    let e = export(&ExportOptions::new(&base)).unwrap();
    assert!(e.manifest().labels.is_empty());
    assert_ne!(a.file("model.onnx").unwrap(), e.file("model.onnx").unwrap());
}

#[test]
fn missing_files_are_named() {
    let (_dir, base, _) = setup();
    std::fs::remove_file(base.join("model.safetensors")).unwrap();
    let err = export_err(&base, None);
    assert!(err.contains("model.safetensors"), "{err}");
    let (_dir, base, _) = setup();
    std::fs::remove_file(base.join("config.json")).unwrap();
    assert!(export_err(&base, None).contains("config.json"));
    let (_dir, base, adapter) = setup();
    std::fs::remove_file(adapter.join("adapter_model.safetensors")).unwrap();
    assert!(export_err(&base, Some(&adapter)).contains("adapter_model.safetensors"));
}

#[test]
fn corrupt_and_truncated_safetensors_are_refused() {
    let (_dir, base, _) = setup();
    let path = base.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = export_err(&base, None);
    assert!(err.contains("not a valid safetensors file"), "{err}");
    std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\xffgarbage").unwrap();
    assert!(export_err(&base, None).contains("not a valid safetensors file"));
    std::fs::write(&path, b"").unwrap();
    assert!(export_err(&base, None).contains("not a valid safetensors file"));
}

#[test]
fn shape_mismatches_and_missing_tensors_name_the_tensor() {
    let (_dir, base, adapter) = setup();
    let mut t = fixture::base_tensors();
    t.insert(
        "encoder.layer.1.attention.self.key.weight".into(),
        (vec![fixture::HIDDEN, 3], vec![0.0; fixture::HIDDEN * 3]),
    );
    fixture::write_safetensors(&base.join("model.safetensors"), &t);
    let err = export_err(&base, None);
    assert!(
        err.contains("encoder.layer.1.attention.self.key.weight") && err.contains("shape"),
        "{err}"
    );

    let (_dir, base, _) = setup();
    let mut t = fixture::base_tensors();
    t.remove("encoder.layer.0.output.LayerNorm.bias");
    fixture::write_safetensors(&base.join("model.safetensors"), &t);
    assert!(export_err(&base, None).contains("`encoder.layer.0.output.LayerNorm.bias` is missing"));

    let mut t = fixture::adapter_tensors();
    t.insert(
        "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight".into(),
        (vec![3, fixture::HIDDEN], vec![0.0; 3 * fixture::HIDDEN]),
    );
    fixture::write_safetensors(&adapter.join("adapter_model.safetensors"), &t);
    let (_d2, base, _) = setup();
    let err = export_err(&base, Some(&adapter));
    assert!(
        err.contains("layer.0.attention.self.query.lora_A.weight"),
        "{err}"
    );
}

#[test]
fn unsupported_configurations_name_the_field() {
    let cases: Vec<(&str, Box<dyn Fn(&mut serde_json::Value)>, &str)> = vec![
        (
            "config.json",
            Box::new(|v| v["model_type"] = "roberta".into()),
            "model_type",
        ),
        (
            "config.json",
            Box::new(|v| v["hidden_act"] = "relu".into()),
            "hidden_act",
        ),
        (
            "config.json",
            Box::new(|v| v["num_attention_heads"] = 3.into()),
            "num_attention_heads",
        ),
        (
            "adapter_config.json",
            Box::new(|v| v["use_dora"] = true.into()),
            "use_dora",
        ),
        (
            "adapter_config.json",
            Box::new(|v| v["use_rslora"] = true.into()),
            "use_rslora",
        ),
        (
            "adapter_config.json",
            Box::new(|v| v["peft_type"] = "IA3".into()),
            "peft_type",
        ),
        (
            "adapter_config.json",
            Box::new(|v| v["task_type"] = "TOKEN_CLS".into()),
            "task_type",
        ),
        (
            "adapter_config.json",
            Box::new(|v| v["target_modules"] = serde_json::json!(["query", "dense"])),
            "target_modules",
        ),
        (
            "adapter_config.json",
            Box::new(|v| v["target_modules"] = ".*query".into()),
            "target_modules",
        ),
        (
            "adapter_config.json",
            Box::new(|v| v["bias"] = "all".into()),
            "bias",
        ),
    ];
    for (file, edit, field) in cases {
        let (_dir, base, adapter) = setup();
        let dir = if file == "config.json" {
            &base
        } else {
            &adapter
        };
        edit_json(&dir.join(file), edit);
        let err = export_err(&base, Some(&adapter));
        assert!(err.contains(field), "{file}: expected `{field}` in: {err}");
    }
}

#[test]
fn unused_adapter_tensors_are_refused() {
    let (_dir, base, adapter) = setup();
    let mut t = fixture::adapter_tensors();
    t.insert(
        "base_model.model.bert.encoder.layer.0.attention.self.key.lora_A.weight".into(),
        (vec![2, fixture::HIDDEN], vec![0.0; 16]),
    );
    fixture::write_safetensors(&adapter.join("adapter_model.safetensors"), &t);
    let err = export_err(&base, Some(&adapter));
    assert!(
        err.contains("key.lora_A.weight") && err.contains("no place"),
        "{err}"
    );
}

#[test]
fn impossible_lengths_are_refused() {
    use autoglm_package::Attention;
    let (_dir, base, _) = setup();
    let refused = |max_length: usize, attention: Attention, needle: &str| {
        let mut options = ExportOptions::new(&base);
        options.max_length = Some(max_length);
        options.attention = attention;
        match export(&options) {
            Err(ExportError::Option(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("expected a refusal containing {needle:?}, got {other:?}"),
        }
    };
    refused(1, Attention::Dense, "no room");
    refused(
        autoglm_export::MAX_LENGTH_LIMIT + 1,
        Attention::Dense,
        "limit",
    );
    refused(
        64,
        Attention::Window {
            window: 7,
            global: 1,
        },
        "even",
    );
    refused(
        16,
        Attention::Window {
            window: 40,
            global: 1,
        },
        "wider",
    );
    refused(
        16,
        Attention::Window {
            window: 8,
            global: 16,
        },
        "global tokens",
    );
    // Longer than the learned positions: extended by copying, recorded in the manifest.
    let mut options = ExportOptions::new(&base);
    options.max_length = Some(fixture::POSITIONS * 3);
    options.attention = Attention::Window {
        window: 8,
        global: 1,
    };
    let package = export(&options).unwrap();
    assert_eq!(package.manifest().max_length, fixture::POSITIONS * 3);
    assert_eq!(package.manifest().graph.sequence_multiple, 4);
}

/// Names in `dir` that start with a dot: temporaries a write would have left behind.
fn hidden(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn export_never_overwrites_what_is_not_a_package() {
    use autoglm_export::export_to;
    let (dir, base, adapter) = setup();
    let options = ExportOptions::new(&base).with_adapter(&adapter);
    // A non-empty directory of other files: refused, untouched.
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(docs.join("notes.txt"), "keep").unwrap();
    let err = export_to(&options, &docs).unwrap_err();
    assert!(err.to_string().contains("not a package"), "{err}");
    assert_eq!(
        std::fs::read_to_string(docs.join("notes.txt")).unwrap(),
        "keep"
    );
    // A regular file: refused, untouched, and no temporary left beside it.
    let file = dir.path().join("model.bin");
    std::fs::write(&file, "weights").unwrap();
    let err = export_to(&options, &file).unwrap_err();
    assert!(err.to_string().contains("regular file"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "weights");
    assert!(hidden(dir.path()).is_empty(), "{:?}", hidden(dir.path()));
    // A package we wrote before is replaced (re-export), also over an empty directory.
    let pkg = dir.path().join("pkg");
    export_to(&options, &pkg).unwrap();
    export_to(&options, &pkg).unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    export_to(&options, &dir.path().join("empty")).unwrap();
    assert!(hidden(dir.path()).is_empty(), "{:?}", hidden(dir.path()));
}

#[test]
fn export_refuses_an_output_that_overlaps_its_inputs() {
    use autoglm_export::export_to;
    let (dir, base, adapter) = setup();
    let options = ExportOptions::new(&base).with_adapter(&adapter);
    let before = std::fs::read(base.join("model.safetensors")).unwrap();
    let cases = [
        (base.clone(), "is the base model"),
        (base.join("."), "is the base model"),
        (adapter.join("../base"), "is the base model"),
        (adapter.clone(), "is the adapter"),
        (base.join("pkg"), "is inside the base model"),
        (base.join("new/deeper/pkg.tar"), "is inside the base model"),
        (
            dir.path().join("nothing/../base/x"),
            "is inside the base model",
        ),
        (dir.path().to_path_buf(), "contains the base model"),
    ];
    for (out, needle) in cases {
        match export_to(&options, &out) {
            Err(ExportError::Output { reason, .. }) => {
                assert!(reason.contains(needle), "{}: {reason}", out.display())
            }
            other => panic!("{}: expected a refusal, got {other:?}", out.display()),
        }
    }
    // Through a symlink to the base directory.
    #[cfg(unix)]
    {
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&base, &link).unwrap();
        let err = export_to(&options, &link).unwrap_err();
        assert!(matches!(err, ExportError::Output { .. }), "{err}");
    }
    assert_eq!(
        std::fs::read(base.join("model.safetensors")).unwrap(),
        before
    );
    assert!(!base.join("pkg").exists() && !base.join("new").exists());
    // A relative path next to the inputs is fine.
    export_to(&options, &dir.path().join("out")).unwrap();
}
