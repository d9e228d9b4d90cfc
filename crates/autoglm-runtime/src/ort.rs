//! The ONNX Runtime backend (cargo feature `ort`): the same ONNX graph as tract, on ONNX Runtime's
//! CPU or CUDA execution provider.
//!
//! ONNX Runtime is not linked: its shared library is opened at run time (the `ort` crate's
//! `load-dynamic`), from [`LoadOptions::ort_library`](crate::LoadOptions), else
//! `ORT_DYLIB_PATH`, else `libonnxruntime.so` on the loader's search path. So a build never
//! downloads anything, and one binary runs on a CPU-only or a CUDA build of the library.
//! `tools/setup/fetch-onnxruntime.sh` fetches a CPU build.

use crate::backend::{Backend, Device};
use crate::batch::Batch;
use crate::error::{Result, RuntimeError};
use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The library this process loaded, and its one environment. ONNX Runtime allows one
/// environment per process and `ort` cannot unload a library, so both live until exit.
struct Loaded {
    library: PathBuf,
    env: Environment,
}

static LOADED: Mutex<Option<Loaded>> = Mutex::new(None);

fn ort_error<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> RuntimeError + '_ {
    move |e| RuntimeError::Model(format!("onnxruntime: {what}: {e}"))
}

/// Which library to open: the caller's choice, else `ORT_DYLIB_PATH`, else the platform name.
fn library_path(requested: Option<&Path>) -> PathBuf {
    requested
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os("ORT_DYLIB_PATH")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| {
            PathBuf::from(format!(
                "{}onnxruntime{}",
                std::env::consts::DLL_PREFIX,
                std::env::consts::DLL_SUFFIX
            ))
        })
}

/// The process's environment, loading the library on first use. Asking for a different library
/// later is an error: the first one stays loaded, and silently running it would mislead.
fn environment(requested: Option<&Path>) -> Result<(Environment, PathBuf)> {
    let wanted = library_path(requested);
    let wanted = std::fs::canonicalize(&wanted).unwrap_or(wanted);
    let mut loaded = LOADED
        .lock()
        .map_err(|_| RuntimeError::Model("onnxruntime: a previous load panicked".into()))?;
    if let Some(l) = loaded.as_ref() {
        if l.library != wanted {
            return Err(RuntimeError::Unsupported(format!(
                "ONNX Runtime is already loaded from {} in this process; it cannot also load {}",
                l.library.display(),
                wanted.display()
            )));
        }
        return Ok((l.env.clone(), l.library.clone()));
    }
    let builder = ort::init_from(&wanted).map_err(|e| {
        RuntimeError::Unsupported(format!(
            "cannot load the ONNX Runtime library: {e} (set ORT_DYLIB_PATH or pass the path \
             explicitly; tools/setup/fetch-onnxruntime.sh fetches one)"
        ))
    })?;
    let env = builder
        .with_name("autoglm")
        .build()
        .map_err(ort_error("creating the environment"))?;
    *loaded = Some(Loaded {
        library: wanted.clone(),
        env: env.clone(),
    });
    Ok((env, wanted))
}

/// ONNX Runtime on one device. `Session::run` takes `&mut self` in `ort` 2.0, so runs are
/// serialized by a mutex: one session holds the weights once, and its intra-op threads (or the
/// GPU) already use the hardware for a single batch.
pub struct OrtBackend {
    session: Mutex<Session>,
    description: String,
}

impl std::fmt::Debug for OrtBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtBackend")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl OrtBackend {
    /// Loads ONNX bytes into a session on `device`. CUDA that cannot be registered is an error,
    /// never a quiet fall back to the CPU: a user who asked for the GPU must know.
    pub fn new(
        onnx: &[u8],
        threads: usize,
        device: Device,
        library: Option<&Path>,
    ) -> Result<Self> {
        let (env, library) = environment(library)?;
        let mut builder = Session::builder(&env)
            .map_err(ort_error("session options"))?
            .with_intra_threads(threads.max(1))
            .map_err(ort_error("threads"))?
            .with_inter_threads(1)
            .map_err(ort_error("threads"))?;
        let provider = match device {
            Device::Cpu => "CPUExecutionProvider",
            Device::Cuda => {
                let compiled = ep::CUDA::is_available().map_err(ort_error("listing providers"))?;
                if !compiled {
                    return Err(RuntimeError::Unsupported(format!(
                        "the ONNX Runtime library {} has no CUDA execution provider (it is a \
                         CPU-only build); point ORT_DYLIB_PATH at a CUDA build (the \
                         onnxruntime-gpu package's libonnxruntime.so)",
                        library.display()
                    )));
                }
                builder = builder
                    .with_execution_providers([ep::CUDA::default().build().error_on_failure()])
                    .map_err(|e| {
                        RuntimeError::Unsupported(format!(
                            "the CUDA execution provider of {} could not be registered (are the \
                             CUDA and cuDNN libraries it needs on LD_LIBRARY_PATH, and is a GPU \
                             visible?): {e}",
                            library.display()
                        ))
                    })?;
                "CUDAExecutionProvider"
            }
        };
        let session = builder
            .commit_from_memory(onnx)
            .map_err(ort_error("loading the graph"))?;
        let description = format!(
            "onnxruntime ({}) on {provider}{}",
            library.display(),
            match device {
                Device::Cpu => format!(", {} threads", threads.max(1)),
                Device::Cuda => ", device 0".to_string(),
            }
        );
        Ok(OrtBackend {
            session: Mutex::new(session),
            description,
        })
    }
}

impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        "ort"
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn run(&self, batch: &Batch) -> Result<Vec<f32>> {
        let shape = [batch.rows.len(), batch.sequence];
        fn input(shape: [usize; 2], data: &[i64]) -> Result<TensorRef<'_, i64>> {
            TensorRef::from_array_view((shape, data)).map_err(ort_error("input tensor"))
        }
        let inputs = ort::inputs![
            input(shape, &batch.input_ids)?,
            input(shape, &batch.attention_mask)?,
            input(shape, &batch.token_type_ids)?
        ];
        let mut session = self
            .session
            .lock()
            .map_err(|_| RuntimeError::Model("onnxruntime: a previous run panicked".into()))?;
        let outputs = session.run(inputs).map_err(ort_error("run"))?;
        if outputs.len() == 0 {
            return Err(RuntimeError::Model("the graph produced no output".into()));
        }
        let (_, values) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(ort_error("output"))?;
        Ok(values.to_vec())
    }
}
