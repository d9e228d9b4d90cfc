//! One package loaded, verified and test-run: what a slot serves and a batch runs on.

use crate::error::ServeError;
use autoglm_runtime::{LoadOptions, Model, ModelKind};
use std::path::Path;
use std::time::Instant;

/// A package loaded, verified and checked, as one unit: requests hold it through an `Arc`, so
/// a reload never changes the model under a running batch.
#[derive(Debug)]
pub struct Loaded {
    pub model: Model,
    /// First 12 hex digits of the manifest's sha256 (the manifest holds every file's digest).
    pub version: String,
    pub load_seconds: f64,
}

impl Loaded {
    pub fn kind(&self) -> ModelKind {
        self.model.manifest().kind
    }

    /// Width of one output row: labels for a classifier, dimensions for an embedder.
    pub fn width(&self) -> usize {
        match self.kind() {
            ModelKind::Classification => self.model.labels().len(),
            ModelKind::Embedding => self.model.manifest().hidden_size,
        }
    }
}

/// Loads, verifies and test-runs the package at `path`.
pub fn load(name: &str, path: &Path, options: &LoadOptions) -> Result<Loaded, ServeError> {
    let start = Instant::now();
    let model = Model::load_with(path, options).map_err(|source| ServeError::Load {
        name: name.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    // A package whose digests match can still hold a graph that does not run (another exporter,
    // a wrong opset): find out now, not on the first request after a reload.
    let check = model.outputs(&["autoglm load check"]);
    match check {
        Ok(rows) if rows.len() == 1 && !rows[0].is_empty() => {}
        Ok(_) => {
            return Err(ServeError::Check {
                name: name.to_owned(),
                path: path.to_owned(),
                message: "empty output".into(),
            })
        }
        Err(e) => {
            return Err(ServeError::Check {
                name: name.to_owned(),
                path: path.to_owned(),
                message: e.to_string(),
            })
        }
    }
    let version = autoglm_package::sha256_hex(&model.manifest().to_json())[..12].to_owned();
    Ok(Loaded {
        model,
        version,
        load_seconds: start.elapsed().as_secs_f64(),
    })
}
