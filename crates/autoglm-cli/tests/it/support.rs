use autoglm_export::{export, ExportOptions};
use autoglm_runtime::{LoadOptions, Model};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The assets folder (`AUTOGLM_ASSETS`, else `.cache/assets` in the workspace).
pub fn assets() -> Option<PathBuf> {
    let dir = std::env::var_os("AUTOGLM_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/assets"));
    if dir.join("minilm/model.safetensors").exists() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "assets missing at {}: run tools/fetch-assets.sh (CI must not skip these tests)",
            dir.display()
        );
    }
    eprintln!(
        "skipping: assets missing at {} (run tools/fetch-assets.sh)",
        dir.display()
    );
    None
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

pub fn embedding_model() -> Option<&'static Model> {
    static MODEL: OnceLock<Model> = OnceLock::new();
    let pkg = embedding_package()?;
    Some(MODEL.get_or_init(|| {
        Model::load_with(
            pkg,
            &LoadOptions {
                threads: 2,
                max_batch: 32,
            },
        )
        .expect("load embedding package")
    }))
}

pub fn sentiment_model() -> Option<&'static Model> {
    static MODEL: OnceLock<Model> = OnceLock::new();
    let pkg = sentiment_package()?;
    Some(MODEL.get_or_init(|| {
        Model::load_with(
            pkg,
            &LoadOptions {
                threads: 2,
                max_batch: 32,
            },
        )
        .expect("load sentiment package")
    }))
}

/// Largest absolute difference of two equally long vectors.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
