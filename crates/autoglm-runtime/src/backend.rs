//! Backends run a package's ONNX graph on one padded batch.

use crate::batch::Batch;
use crate::error::{Result, RuntimeError};
use tract_onnx::prelude::*;

/// Runs the graph: int64 `[batch, sequence]` inputs in, `[batch, width]` floats out (row-major).
pub trait Backend: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    fn run(&self, batch: &Batch) -> Result<Vec<f32>>;
}

fn model_error(e: impl std::fmt::Debug) -> RuntimeError {
    // tract errors are anyhow chains: `{:?}` prints every cause, which is what a user needs.
    RuntimeError::Model(format!("{e:?}"))
}

/// The default backend: tract, with symbolic batch and sequence dims, optimized once at load.
#[derive(Debug)]
pub struct TractBackend {
    plan: Arc<TypedSimplePlan>,
    executor: Option<tract_linalg::multithread::Executor>,
}

impl TractBackend {
    /// Loads ONNX bytes; `threads` > 1 gives the matrix products a thread pool of that size.
    pub fn new(onnx: &[u8], threads: usize) -> Result<Self> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut &onnx[..])
            .map_err(model_error)?;
        let plan = model
            .into_optimized()
            .map_err(model_error)?
            .into_runnable()
            .map_err(model_error)?;
        let executor =
            (threads > 1).then(|| tract_linalg::multithread::Executor::multithread(threads));
        Ok(TractBackend { plan, executor })
    }
}

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn run(&self, batch: &Batch) -> Result<Vec<f32>> {
        let shape = [batch.rows.len(), batch.sequence];
        let input = |data: &[i64]| -> Result<TValue> {
            Ok(Tensor::from_shape(&shape, data)
                .map_err(model_error)?
                .into_tvalue())
        };
        let inputs = tvec![
            input(&batch.input_ids)?,
            input(&batch.attention_mask)?,
            input(&batch.token_type_ids)?
        ];
        let outputs = match &self.executor {
            Some(executor) => {
                tract_linalg::multithread::multithread_tract_scope(executor.clone(), || {
                    self.plan.run(inputs)
                })
            }
            None => self.plan.run(inputs),
        }
        .map_err(model_error)?;
        let out = outputs
            .first()
            .ok_or_else(|| RuntimeError::Model("the graph produced no output".into()))?;
        let plain = out.try_as_plain_ram().map_err(model_error)?;
        Ok(plain.as_slice::<f32>().map_err(model_error)?.to_vec())
    }
}
