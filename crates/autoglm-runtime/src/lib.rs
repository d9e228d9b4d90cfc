//! AutoGLM Edge runtime: loads a verified model package and classifies or embeds texts.
//!
//! Loading checks every file's sha256 (see `autoglm-package`), reads the package's own
//! tokenizer, and optimizes the ONNX graph once for any batch size and sequence length. Texts are
//! tokenized and truncated to the manifest's limit, grouped by length into padded batches, run,
//! and returned in input order. A [`Model`] is `Send + Sync`: share it between threads.
//!
//! ```no_run
//! use autoglm_runtime::Model;
//! let model = Model::load("models/sentiment").unwrap();
//! for p in model.classify(&["I loved this film", "A waste of two hours"]).unwrap() {
//!     println!("{} {:?}", p.label, p.scores);
//! }
//! ```

pub mod backend;
pub mod batch;
mod error;
#[cfg(feature = "ort")]
pub mod ort;
pub mod tokenize;

pub use autoglm_package::{Attention, Manifest, ModelKind, Package, Quantization};
pub use backend::{Backend, BackendKind, Device, TractBackend};
pub use error::{Result, RuntimeError};
pub use tokenize::{Encoded, TextEncoder};

use std::path::{Path, PathBuf};

/// How to load a package.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Threads for the matrix products (1 = run on the calling thread only).
    pub threads: usize,
    /// Most texts run together in one batch.
    pub max_batch: usize,
    /// The engine; [`BackendKind::Ort`] needs the cargo feature `ort`.
    pub backend: BackendKind,
    /// Where it runs; [`Device::Cuda`] needs the ort backend and a CUDA build of ONNX Runtime.
    pub device: Device,
    /// The ONNX Runtime shared library (default: `ORT_DYLIB_PATH`, else `libonnxruntime.so` on
    /// the loader's path). One library per process: the first one loaded stays.
    pub ort_library: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: 1,
            max_batch: 32,
            backend: BackendKind::Tract,
            device: Device::Cpu,
            ort_library: None,
        }
    }
}

/// One classification: the most probable label and every label's probability (label order).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub label: String,
    pub index: usize,
    pub scores: Vec<f32>,
}

/// A loaded package, ready to run.
#[derive(Debug)]
pub struct Model {
    manifest: Manifest,
    encoder: TextEncoder,
    backend: Box<dyn Backend>,
    max_batch: usize,
    pad_id: i64,
}

impl Model {
    /// Loads and verifies the package at `path` (directory or `.tar`) with default options.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, &LoadOptions::default())
    }

    pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        Self::from_package(Package::open(path)?, options)
    }

    /// Builds a model from a verified package, on the backend and device `options` name.
    pub fn from_package(mut package: Package, options: &LoadOptions) -> Result<Self> {
        let graph = package.take_file(&package.manifest().graph.file.clone())?;
        let backend = backend::load(&graph, package.manifest().graph.sequence_multiple, options)?;
        Self::with_backend(package, backend, options)
    }

    /// Builds a model from a verified package and a backend that already holds its graph.
    pub fn with_backend(
        package: Package,
        backend: Box<dyn Backend>,
        options: &LoadOptions,
    ) -> Result<Self> {
        let manifest = package.manifest().clone();
        if manifest.graph.inputs.len() != 3 {
            return Err(RuntimeError::Unsupported(format!(
                "graphs with inputs {:?} (expected ids, mask, token types)",
                manifest.graph.inputs
            )));
        }
        let encoder =
            TextEncoder::from_bytes(package.file(&manifest.tokenizer)?, manifest.max_length)?;
        let pad_id = encoder.pad_id();
        Ok(Model {
            manifest,
            encoder,
            backend,
            max_batch: options.max_batch.max(1),
            pad_id,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn labels(&self) -> &[String] {
        &self.manifest.labels
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// What runs this model: engine, device, threads (and for ONNX Runtime, which library).
    pub fn backend_description(&self) -> String {
        self.backend.describe()
    }

    pub fn encoder(&self) -> &TextEncoder {
        &self.encoder
    }

    /// The graph's raw output for each text, in input order: logits for a classification
    /// package, the pooled vector for an embedding package.
    pub fn outputs(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encoded = self.encoder.encode_all(texts)?;
        self.outputs_for(&encoded)
    }

    /// Like [`Model::outputs`], for texts already tokenized.
    pub fn outputs_for(&self, encoded: &[Encoded]) -> Result<Vec<Vec<f32>>> {
        if let Some(i) = encoded
            .iter()
            .position(|e| e.is_empty() || e.len() > self.manifest.max_length)
        {
            return Err(RuntimeError::InvalidInput(format!(
                "input {i} has {} tokens; 1 to {} are allowed",
                encoded[i].len(),
                self.manifest.max_length
            )));
        }
        let mut results = vec![Vec::new(); encoded.len()];
        for batch in batch::plan(
            encoded,
            self.max_batch,
            self.pad_id,
            self.manifest.graph.sequence_multiple,
        ) {
            let flat = self.backend.run(&batch)?;
            let rows = batch.rows.len();
            if rows == 0 || flat.len() % rows != 0 {
                return Err(RuntimeError::Model(format!(
                    "output of {} values for a batch of {rows}",
                    flat.len()
                )));
            }
            let width = flat.len() / rows;
            for (r, &i) in batch.rows.iter().enumerate() {
                results[i] = flat[r * width..(r + 1) * width].to_vec();
            }
        }
        Ok(results)
    }

    /// Classifies each text: softmax over the logits, best label first-on-ties.
    pub fn classify(&self, texts: &[&str]) -> Result<Vec<Prediction>> {
        self.require(ModelKind::Classification)?;
        let logits = self.outputs(texts)?;
        Ok(logits.into_iter().map(|l| self.prediction(&l)).collect())
    }

    /// A prediction from one row of logits.
    pub fn prediction(&self, logits: &[f32]) -> Prediction {
        let scores = softmax(logits);
        let index = argmax(&scores);
        Prediction {
            label: self.manifest.labels.get(index).cloned().unwrap_or_default(),
            index,
            scores,
        }
    }

    /// One pooled (and, if the package says so, normalized) vector per text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.require(ModelKind::Embedding)?;
        self.outputs(texts)
    }

    fn require(&self, kind: ModelKind) -> Result<()> {
        if self.manifest.kind == kind {
            Ok(())
        } else {
            Err(RuntimeError::Unsupported(
                format!(
                    "this is {:?} package; it cannot be used for {:?}",
                    self.manifest.kind, kind
                )
                .to_lowercase(),
            ))
        }
    }
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Model>();
    }

    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let p = softmax(&[1000.0, 1001.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[1] > p[0]);
        assert_eq!(argmax(&[0.2, 0.5, 0.5]), 1);
    }
}
