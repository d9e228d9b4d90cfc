//! The AutoGLM Edge runtime as a WASI 0.2 component: world `autoglm:edge/edge` (`wit/`).
//!
//! This is glue only: loading, tokenization and inference are `autoglm-runtime`'s, compiled for
//! `wasm32-wasip2` (tract with its SIMD128 kernels, one thread). Build it with
//! `tools/build/component.sh`; run it with the `autoglm-wasm` host crate, `autoglm --engine wasm`,
//! or from JavaScript after `jco transpile` (see `js/`).

use autoglm_runtime::{LoadOptions, Model, ModelKind, Package, RuntimeError};
use exports::autoglm::edge::runtime::{
    Error, Guest, GuestModel, Model as ModelHandle, ModelInfo, ModelKind as WitKind, Prediction,
    Task, TaskPrediction,
};

wit_bindgen::generate!({
    world: "edge",
    path: "../../wit",
});

struct Component;

impl Guest for Component {
    type Model = Loaded;
}

/// A verified package, loaded into the runtime.
struct Loaded {
    model: Model,
}

/// When a package fails to load, the package is at fault unless its graph could not be built.
fn load_error(e: RuntimeError) -> Error {
    match e {
        RuntimeError::Model(m) => Error::Runtime(m),
        other => Error::InvalidPackage(other.to_string()),
    }
}

/// When a call fails, the request is at fault unless the model failed while running.
fn call_error(e: RuntimeError) -> Error {
    match e {
        RuntimeError::InvalidInput(_)
        | RuntimeError::Unsupported(_)
        | RuntimeError::NoTasks { .. }
        | RuntimeError::NoSuchTask { .. } => Error::InvalidInput(e.to_string()),
        other => Error::Runtime(other.to_string()),
    }
}

fn prediction(p: autoglm_runtime::Prediction) -> Prediction {
    Prediction {
        label: p.label,
        index: count(p.index),
        scores: p.scores,
    }
}

fn from_package(package: Package) -> Result<ModelHandle, Error> {
    let model = Model::from_package(package, &LoadOptions::default()).map_err(load_error)?;
    Ok(ModelHandle::new(Loaded { model }))
}

fn borrowed(texts: &[String]) -> Vec<&str> {
    texts.iter().map(String::as_str).collect()
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl GuestModel for Loaded {
    fn load(package: Vec<u8>) -> Result<ModelHandle, Error> {
        let package =
            Package::from_tar(&package).map_err(|e| Error::InvalidPackage(e.to_string()))?;
        from_package(package)
    }

    fn load_verified(package: Vec<u8>) -> Result<ModelHandle, Error> {
        let package = Package::from_tar_prechecked(&package)
            .map_err(|e| Error::InvalidPackage(e.to_string()))?;
        from_package(package)
    }

    fn open(path: String) -> Result<ModelHandle, Error> {
        let package = Package::open(&path).map_err(|e| Error::InvalidPackage(e.to_string()))?;
        from_package(package)
    }

    fn info(&self) -> ModelInfo {
        let m = self.model.manifest();
        ModelInfo {
            kind: match m.kind {
                ModelKind::Classification => WitKind::Classification,
                ModelKind::Embedding => WitKind::Embedding,
            },
            labels: m.labels.clone(),
            tasks: m
                .task_slices()
                .into_iter()
                .map(|t| Task {
                    name: t.name.to_string(),
                    labels: t.labels.iter().map(|l| l.to_string()).collect(),
                })
                .collect(),
            max_length: count(m.max_length),
            hidden_size: count(m.hidden_size),
            quantization: m.quantization.to_string(),
            attention: m.attention.to_string(),
            base_model: m.provenance.base_model.clone(),
            adapter: m.provenance.adapter.clone(),
            engine: self.model.backend_description(),
        }
    }

    fn labels(&self) -> Vec<String> {
        self.model.labels().to_vec()
    }

    fn classify(&self, texts: Vec<String>) -> Result<Vec<Prediction>, Error> {
        let predictions = self.model.classify(&borrowed(&texts)).map_err(call_error)?;
        Ok(predictions.into_iter().map(prediction).collect())
    }

    fn classify_tasks(
        &self,
        texts: Vec<String>,
        task: Option<String>,
    ) -> Result<Vec<Vec<TaskPrediction>>, Error> {
        let per_text = self
            .model
            .classify_tasks(&borrowed(&texts), task.as_deref())
            .map_err(call_error)?;
        Ok(per_text
            .into_iter()
            .map(|tasks| {
                tasks
                    .into_iter()
                    .map(|t| TaskPrediction {
                        task: t.task,
                        prediction: prediction(t.prediction),
                    })
                    .collect()
            })
            .collect())
    }

    fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, Error> {
        self.model.embed(&borrowed(&texts)).map_err(call_error)
    }

    fn outputs(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, Error> {
        self.model.outputs(&borrowed(&texts)).map_err(call_error)
    }
}

export!(Component);
