//! The real all-MiniLM-L6-v2 from `tools/setup/fetch-assets.sh` (`AUTOGLM_ASSETS`), exported on the fly.
#![allow(dead_code)] // each bench uses part of it

use autoglm_export::{export, ExportOptions};
use autoglm_runtime::Package;
use std::path::PathBuf;

pub fn assets() -> PathBuf {
    autoglm_testkit::assets_dir()
}

/// The base model's embedding package; panics with the fix when the assets are missing.
pub fn embedding_package() -> Package {
    let base = assets().join("minilm");
    assert!(
        base.join("model.safetensors").exists(),
        "{} missing: run tools/setup/fetch-assets.sh",
        base.display()
    );
    export(&ExportOptions::new(base)).expect("export")
}

/// Review-like texts from the sentiment test split, or a fixed sentence when it is missing.
pub fn texts() -> Vec<String> {
    let path = assets().join("sentiment/test.jsonl");
    match std::fs::read_to_string(&path) {
        Ok(data) => data
            .lines()
            .take(256)
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("row")["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect(),
        Err(_) => vec!["An absolute masterpiece of modern cinema; I cried twice.".to_string(); 256],
    }
}
