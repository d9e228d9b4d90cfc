use autoglm_export::{export, ExportOptions};
use autoglm_runtime::{BackendKind, LoadOptions, Model};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use autoglm_testkit::{max_abs_diff, workspace};

/// The assets folder (`AUTOGLM_ASSETS`, else `.cache/assets` in the workspace) with the base
/// model in it; missing: a skip, or a failure under CI.
pub fn assets() -> Option<PathBuf> {
    autoglm_testkit::assets(&["minilm/model.safetensors"])
}

/// A command for one of this build's binaries. Cross builds run their tests under an emulator
/// (`tools/check/test-aarch64.sh`): `AUTOGLM_TEST_RUNNER` (e.g. `qemu-aarch64 -L … -cpu cortex-a72`)
/// is put in front, as cargo's runner is in front of the test binary itself.
pub fn binary_command(binary: &str) -> std::process::Command {
    let runner = std::env::var("AUTOGLM_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut command = std::process::Command::new(program);
            command.args(words).arg(binary);
            command
        }
        None => std::process::Command::new(binary),
    }
}

/// `tests/goldens/goldens.json` (tools/train/make_goldens.py): transformers' ids, embeddings, logits.
#[derive(Deserialize)]
pub struct Goldens {
    pub meta: Meta,
    pub texts: Vec<Golden>,
}

#[derive(Deserialize)]
pub struct Meta {
    pub max_length: usize,
    pub labels: Vec<String>,
}

#[derive(Deserialize)]
pub struct Golden {
    pub text: String,
    pub input_ids: Vec<i64>,
    pub embedding: Vec<f32>,
    pub logits: Vec<f32>,
}

/// The goldens; under emulation (`tools/check/test-aarch64.sh`) `AUTOGLM_GOLDENS_MAX_TOKENS` leaves
/// out the longer texts (the two 256-token ones cost more than all the others together there).
pub fn goldens() -> Goldens {
    let path = workspace().join("tests/goldens/goldens.json");
    let mut g: Goldens = serde_json::from_slice(&std::fs::read(&path).expect("read goldens"))
        .expect("parse goldens");
    if let Ok(max) = std::env::var("AUTOGLM_GOLDENS_MAX_TOKENS") {
        let max: usize = max.parse().expect("AUTOGLM_GOLDENS_MAX_TOKENS is a number");
        g.texts.retain(|t| t.input_ids.len() <= max);
        eprintln!("goldens of at most {max} tokens: {} texts", g.texts.len());
    }
    g
}

pub fn base_dir() -> Option<PathBuf> {
    assets().map(|a| a.join("minilm"))
}

pub fn adapter_dir() -> PathBuf {
    workspace().join("models/sentiment-lora")
}

fn temp_root() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

/// The embedding package of the base model, exported once per test run.
pub fn embedding_package() -> Option<PathBuf> {
    static PKG: OnceLock<PathBuf> = OnceLock::new();
    let base = base_dir()?;
    Some(
        PKG.get_or_init(|| {
            let out = temp_root().join("embedding");
            export(&ExportOptions::new(base))
                .expect("export embedding package")
                .write(&out)
                .expect("write");
            out
        })
        .clone(),
    )
}

/// The sentiment classification package (base + committed adapter), exported once per test run.
pub fn sentiment_package() -> Option<PathBuf> {
    static PKG: OnceLock<PathBuf> = OnceLock::new();
    let base = base_dir()?;
    Some(
        PKG.get_or_init(|| {
            let out = temp_root().join("sentiment");
            export(&ExportOptions::new(base).with_adapter(adapter_dir()))
                .expect("export sentiment package")
                .write(&out)
                .expect("write");
            out
        })
        .clone(),
    )
}

/// The ONNX Runtime library for the ort backend: `ORT_DYLIB_PATH`, else what
/// `tools/setup/fetch-onnxruntime.sh` unpacked into `.cache/onnxruntime/`. Missing, it skips locally and
/// fails under CI, like the assets.
pub fn ort_library() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let dir = workspace().join(".cache/onnxruntime");
    let found = std::fs::read_dir(&dir).ok().and_then(|entries| {
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
            })
            .max()
    });
    autoglm_testkit::present(found, || {
        format!(
            "ONNX Runtime missing: no library in {} and ORT_DYLIB_PATH unset (run tools/setup/fetch-onnxruntime.sh)",
            dir.display()
        )
    })
}

/// How the tests load a package on `backend`; `None` when that backend cannot run here (skip).
pub fn load_options(backend: BackendKind) -> Option<LoadOptions> {
    let ort_library = match backend {
        BackendKind::Tract => None,
        BackendKind::Ort => Some(ort_library()?),
    };
    Some(LoadOptions {
        threads: 2,
        max_batch: 32,
        backend,
        ort_library,
        ..LoadOptions::default()
    })
}

/// Every backend this build has, tract first: a test body looping over them covers them all.
pub fn backends() -> Vec<BackendKind> {
    BackendKind::compiled()
}

fn slot(backend: BackendKind) -> usize {
    match backend {
        BackendKind::Tract => 0,
        BackendKind::Ort => 1,
    }
}

fn load_once(
    models: &'static [OnceLock<Model>; 2],
    pkg: Option<PathBuf>,
    backend: BackendKind,
) -> Option<&'static Model> {
    let pkg = pkg?;
    let options = load_options(backend)?;
    let model = models[slot(backend)].get_or_init(|| {
        Model::load_with(&pkg, &options)
            .unwrap_or_else(|e| panic!("load {} on {backend:?}: {e}", pkg.display()))
    });
    // The backend asked for is the one that runs: no silent fallback.
    assert_eq!(model.backend_name(), backend.name());
    Some(model)
}

pub fn embedding_model_on(backend: BackendKind) -> Option<&'static Model> {
    static MODELS: [OnceLock<Model>; 2] = [OnceLock::new(), OnceLock::new()];
    load_once(&MODELS, embedding_package(), backend)
}

pub fn sentiment_model_on(backend: BackendKind) -> Option<&'static Model> {
    static MODELS: [OnceLock<Model>; 2] = [OnceLock::new(), OnceLock::new()];
    load_once(&MODELS, sentiment_package(), backend)
}

pub fn embedding_model() -> Option<&'static Model> {
    embedding_model_on(BackendKind::Tract)
}

pub fn sentiment_model() -> Option<&'static Model> {
    sentiment_model_on(BackendKind::Tract)
}

/// A multi-task package made as a user makes one, once per test run, on the tiny fixture
/// checkpoint (no downloaded assets): `autoglm export` of the base, `autoglm adapt` of two
/// heads, `sentiment` (neg, pos) and `noun` (film, movie, none), and `autoglm multitask`.
pub fn multitask_package() -> PathBuf {
    static PKG: OnceLock<PathBuf> = OnceLock::new();
    PKG.get_or_init(|| {
        let dir = temp_root().join("multitask");
        let base = dir.join("base");
        autoglm_export::fixture::write_base(&base);
        let path = |name: &str| dir.join(name).to_str().expect("utf-8 path").to_owned();
        let run = |args: &[&str]| {
            let out = crate::cli::autoglm(args, None);
            assert!(
                out.status.success(),
                "autoglm {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["export", "--base", &path("base"), "--out", &path("emb")]);
        for task in autoglm_export::fixture::TASKS {
            let train = path(&format!("{task}.jsonl"));
            std::fs::write(&train, autoglm_export::fixture::task_data(task))
                .expect("write training data");
            run(&[
                "adapt",
                "--model",
                &path("emb"),
                "--train",
                &train,
                "--out",
                &path(task),
                "--task",
                task,
                "--epochs",
                "40",
                "--lr",
                "0.05",
                "--quiet",
            ]);
        }
        let (sentiment, noun) = (path("sentiment"), path("noun"));
        run(&[
            "multitask",
            "--model",
            &path("emb"),
            "--out",
            &path("multi"),
            &format!("sentiment={sentiment}"),
            &format!("noun={noun}"),
        ]);
        dir.join("multi")
    })
    .clone()
}
