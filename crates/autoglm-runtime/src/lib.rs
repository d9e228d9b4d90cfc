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
#[doc(hidden)]
#[cfg(not(target_family = "wasm"))]
pub mod fuzzing;
mod graph_guard;
mod onnx_ops;
mod onnx_pb;
mod onnx_stream;
pub mod ops;
#[cfg(feature = "ort")]
pub mod ort;
#[cfg(not(target_family = "wasm"))]
pub mod plan_cache;
#[cfg(target_family = "wasm")]
#[path = "plan_cache_none.rs"]
pub mod plan_cache;
pub mod scores;
pub mod tokenize;
pub mod tract;
pub mod wordpiece;

pub use autoglm_package::{
    Attention, FileStream, Manifest, ModelKind, Package, Quantization, Signer, TaskSlice,
    TrustedKeys,
};
pub use backend::{Backend, BackendKind, Device, GraphFacts};
pub use error::{Result, RuntimeError};
pub use scores::{argmax, softmax, Prediction, Real};
pub use tokenize::{Encoded, TextEncoder};
pub use tract::{PlanCache, TractBackend};

use std::path::{Path, PathBuf};

/// Most threads a model may be given ([`LoadOptions::threads`]): far above the cores of any
/// edge device; a larger number is a mistake (and would start that many OS threads).
pub const MAX_THREADS: usize = 256;

/// Most texts in one batch ([`LoadOptions::max_batch`]): a padded batch holds
/// `max_batch × sequence` ids, so this and the manifest's `max_length` bound its memory.
pub const MAX_BATCH: usize = 1024;

/// The output name of every classification graph (exporter, adapted heads, multi-task).
pub const CLASSIFICATION_OUTPUT: &str = "logits";

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
    /// Keys a package must be signed by (see `autoglm_package::signature`); empty: no
    /// signature is required and the digests alone are checked.
    pub trust: TrustedKeys,
}

impl LoadOptions {
    /// Refuses values out of range (0 threads or a batch of 0 mean 1, as always).
    pub fn check(&self) -> Result<()> {
        if self.threads > MAX_THREADS {
            return Err(RuntimeError::Option(format!(
                "threads {} is over the maximum of {MAX_THREADS}",
                self.threads
            )));
        }
        if self.max_batch > MAX_BATCH {
            return Err(RuntimeError::Option(format!(
                "max_batch {} is over the maximum of {MAX_BATCH} texts",
                self.max_batch
            )));
        }
        Ok(())
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: 1,
            max_batch: 32,
            backend: BackendKind::Tract,
            device: Device::Cpu,
            ort_library: None,
            trust: TrustedKeys::none(),
        }
    }
}

/// One task's classification in a multi-task package: labels without the `task:` prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPrediction {
    pub task: String,
    /// The task's labels, in score order.
    pub labels: Vec<String>,
    pub prediction: Prediction,
}

impl TaskPrediction {
    /// One text's task predictions as JSON, as `autoglm classify --json` prints them and
    /// `/v1/classify` answers them: one task alone is its [`Prediction::to_json`] object;
    /// several are an object of those by task name.
    pub fn to_json(tasks: &[TaskPrediction]) -> serde_json::Value {
        match tasks {
            [t] => t.prediction.to_json(&t.labels),
            _ => tasks
                .iter()
                .map(|t| (t.task.clone(), t.prediction.to_json(&t.labels)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
}

/// A loaded package, ready to run.
#[derive(Debug)]
pub struct Model {
    manifest: Manifest,
    encoder: TextEncoder,
    backend: Box<dyn Backend>,
    max_batch: usize,
    pad_id: i64,
    signer: Option<Signer>,
}

/// The package's tokenizer, as the manifest configures it.
fn encoder_of(package: &Package) -> Result<TextEncoder> {
    let m = package.manifest();
    TextEncoder::from_bytes(package.file(&m.tokenizer)?, m.max_length)
}

impl Model {
    /// Loads and verifies the package at `path` (directory or `.tar`) with default options.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// A package directory's graph file is streamed into the backend and verified as it is
    /// read, not read whole first ([`Package::open_streaming_graph`]).
    pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let (package, graph) = Package::open_streaming_graph(path)?;
        Self::from_parts(package, graph, options)
    }

    /// Builds a model from a verified package, on the backend and device `options` name.
    pub fn from_package(mut package: Package, options: &LoadOptions) -> Result<Self> {
        let graph = package.take_stream(&package.manifest().graph.file.clone())?;
        Self::from_parts(package, graph, options)
    }

    /// A package whose graph file was taken out of it as `graph`.
    fn from_parts(package: Package, graph: FileStream, options: &LoadOptions) -> Result<Self> {
        options.check()?;
        // Before any of the package's content is parsed (the graph's digest is checked as it
        // is read, before it is parsed: see `onnx_stream`).
        let signer = package.verify(&options.trust)?;
        let sequence_multiple = package.manifest().graph.sequence_multiple;
        // Natively the tokenizer is parsed on a second thread while the backend loads the
        // graph (~15 ms of a ~185 ms load); WASI guests cannot spawn threads. The graph's
        // bytes go to the backend, which frees them as soon as it has parsed them.
        let (encoder, backend) = if cfg!(target_family = "wasm") {
            let backend = open_backend(graph, sequence_multiple, options);
            (encoder_of(&package), backend)
        } else {
            std::thread::scope(|s| {
                let encoder = s.spawn(|| encoder_of(&package));
                let backend = open_backend(graph, sequence_multiple, options);
                let encoder = encoder.join().unwrap_or_else(|_| {
                    Err(RuntimeError::Tokenizer(
                        "the tokenizer panicked while it was loaded".into(),
                    ))
                });
                (encoder, backend)
            })
        };
        Self::assemble(package, backend?, encoder?, options, signer)
    }

    /// Builds a model from a verified package and a backend that already holds its graph, after
    /// checking its signature against `options.trust` (when keys are trusted) and the manifest
    /// against the graph (see [`check_graph`]).
    pub fn with_backend(
        package: Package,
        backend: Box<dyn Backend>,
        options: &LoadOptions,
    ) -> Result<Self> {
        options.check()?;
        let signer = package.verify(&options.trust)?;
        let encoder = encoder_of(&package)?;
        Self::assemble(package, backend, encoder, options, signer)
    }

    /// The model of a package whose options are checked and signature verified (`signer`).
    fn assemble(
        package: Package,
        backend: Box<dyn Backend>,
        encoder: TextEncoder,
        options: &LoadOptions,
        signer: Option<Signer>,
    ) -> Result<Self> {
        let manifest = package.manifest().clone();
        if manifest.graph.inputs.len() != 3 {
            return Err(RuntimeError::Unsupported(format!(
                "graphs with inputs {:?} (expected ids, mask, token types)",
                manifest.graph.inputs
            )));
        }
        let pad_id = encoder.pad_id();
        let mut facts = backend.facts();
        let model = Model {
            manifest,
            encoder,
            backend,
            max_batch: options.max_batch.max(1),
            pad_id,
            signer,
        };
        if facts.output_width.is_none() {
            // The backend cannot tell statically: one text of two tokens tells for sure.
            let probe = model.encoder.encode("")?;
            facts.output_width = model.outputs_for(&[probe])?.first().map(Vec::len);
        }
        check_graph(&model.manifest, &facts)?;
        Ok(model)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Who signed the package, when it was verified against trusted keys (`None`: no key was
    /// trusted, so only the digests were checked).
    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
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
        Prediction::from_logits(logits, &self.manifest.labels)
    }

    /// A multi-task package's tasks and their slices of the output (empty for other packages).
    pub fn tasks(&self) -> Vec<TaskSlice<'_>> {
        self.manifest.task_slices()
    }

    /// The slices of the tasks named in `only` (every task when `None`), or why not: a package
    /// without tasks, or a name it does not have.
    pub fn select_tasks(&self, only: Option<&str>) -> Result<Vec<TaskSlice<'_>>> {
        let tasks = self.tasks();
        if tasks.is_empty() {
            return Err(RuntimeError::NoTasks {
                task: only.map(str::to_string),
            });
        }
        match only {
            None => Ok(tasks),
            Some(name) => match tasks.iter().position(|t| t.name == name) {
                Some(i) => Ok(vec![tasks[i].clone()]),
                None => Err(RuntimeError::NoSuchTask {
                    task: name.to_string(),
                    tasks: tasks.iter().map(|t| t.name.to_string()).collect(),
                }),
            },
        }
    }

    /// Classifies each text for every task of a multi-task package (only task `only` when
    /// given), from one backbone pass: softmax over each task's slice of the logits.
    pub fn classify_tasks(
        &self,
        texts: &[&str],
        only: Option<&str>,
    ) -> Result<Vec<Vec<TaskPrediction>>> {
        self.require(ModelKind::Classification)?;
        let chosen = self.select_tasks(only)?;
        let outputs = self.outputs(texts)?;
        Ok(outputs
            .iter()
            .map(|row| Self::task_predictions(&chosen, row))
            .collect())
    }

    /// The predictions of `tasks` (from [`Model::select_tasks`]) from one row of logits:
    /// softmax over each task's slice. A row too short for a task gives that task empty scores.
    pub fn task_predictions(tasks: &[TaskSlice<'_>], logits: &[f32]) -> Vec<TaskPrediction> {
        tasks
            .iter()
            .map(|t| TaskPrediction {
                task: t.name.to_string(),
                labels: t.labels.iter().map(|l| l.to_string()).collect(),
                prediction: Prediction::from_logits(
                    logits.get(t.range.clone()).unwrap_or_default(),
                    &t.labels,
                ),
            })
            .collect()
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

/// Refuses a manifest that its graph contradicts, where that would give wrong answers without
/// an error: inputs fed in another order, another output, a label count that is not the logits'
/// width (a 3-label manifest on a 2-logit graph), an embedding width that is not `hidden_size`
/// (which also tells a classification manifest on an embedding graph), a `max_length` beyond the
/// position table. What the backend could not read (`None`) is not checked.
pub fn check_graph(manifest: &Manifest, facts: &GraphFacts) -> Result<()> {
    let bad = |m: String| Err(RuntimeError::GraphMismatch(m));
    if let Some(inputs) = &facts.inputs {
        if *inputs != manifest.graph.inputs {
            return bad(format!(
                "the graph's inputs are {inputs:?}, the manifest's graph.inputs {:?}",
                manifest.graph.inputs
            ));
        }
    }
    let output = &manifest.graph.output;
    if let Some(name) = &facts.output {
        if name != output {
            return bad(format!(
                "the graph's (first) output is `{name}`, the manifest's graph.output `{output}`"
            ));
        }
        // Our packages name what they compute: `logits` (exporter and adapted heads) for a
        // classification, anything else (`sentence_embedding`) for an embedding. Without this
        // an embedding graph as wide as the label list would "classify" its vector.
        let logits = name == CLASSIFICATION_OUTPUT;
        if logits != (manifest.kind == ModelKind::Classification) {
            return bad(format!(
                "a {} package whose graph outputs `{name}` ({})",
                format!("{:?}", manifest.kind).to_lowercase(),
                if logits {
                    "logits are a classification's output"
                } else {
                    "a classification's output is `logits`"
                }
            ));
        }
    }
    if let Some(rank) = facts.output_rank.filter(|&r| r != 2) {
        return bad(format!(
            "output `{output}` has rank {rank}; a [batch, width] output is expected"
        ));
    }
    if let Some(width) = facts.output_width {
        match manifest.kind {
            ModelKind::Classification if width != manifest.labels.len() => {
                return bad(format!(
                    "the manifest lists {} labels but output `{output}` gives {width} logits per text",
                    manifest.labels.len()
                ))
            }
            ModelKind::Embedding if width != manifest.hidden_size => {
                return bad(format!(
                    "an embedding package of hidden_size {} but output `{output}` gives {width} values per text",
                    manifest.hidden_size
                ))
            }
            _ => {}
        }
    }
    if let Some(positions) = facts.positions {
        let multiple = manifest.graph.sequence_multiple.max(1);
        let padded = manifest.max_length.div_ceil(multiple) * multiple;
        if padded > positions {
            return bad(format!(
                "max_length {} (padded to {padded}) is longer than the graph's position table of {positions} rows",
                manifest.max_length
            ));
        }
    }
    Ok(())
}

/// The backend `options` ask for, holding the graph `onnx`. A choice this build or this engine
/// cannot honour is an error, never a quiet substitution.
pub(crate) fn open_backend(
    onnx: FileStream,
    sequence_multiple: usize,
    options: &LoadOptions,
) -> Result<Box<dyn Backend>> {
    match (options.backend, options.device) {
        // A package that must be signed runs only what its signature covers: not a plan from
        // the cache directory (src/plan_cache.rs), which anyone who can write there can replace.
        (BackendKind::Tract, Device::Cpu) if !options.trust.is_empty() => Ok(Box::new(
            TractBackend::from_stream_with_cache(onnx, options.threads, sequence_multiple, None)?,
        )),
        (BackendKind::Tract, Device::Cpu) => Ok(Box::new(TractBackend::from_stream(
            onnx,
            options.threads,
            sequence_multiple,
        )?)),
        (BackendKind::Tract, Device::Cuda) => Err(RuntimeError::Unsupported(
            "the tract backend runs on the CPU only; use the ort backend for cuda".into(),
        )),
        #[cfg(feature = "ort")]
        (BackendKind::Ort, device) => Ok(Box::new(crate::ort::OrtBackend::new(
            &onnx.into_bytes()?,
            options.threads,
            device,
            options.ort_library.as_deref(),
        )?)),
        #[cfg(not(feature = "ort"))]
        (BackendKind::Ort, _) => Err(RuntimeError::Unsupported(
            "the ort backend: this build was not compiled with ort: rebuild with --features ort"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Model>();
    }
}
