//! The plan cache's interface where there is none: a WASI guest (the component). Measured
//! there, a plan read through WASI loaded no faster than the ONNX (BENCHMARKS.md, wave 12),
//! and the serializer would add ~0.4 MB to the component. `cache_dir` is always `None`, so
//! nothing below is reached.

use crate::tract::Graph;
use std::path::{Path, PathBuf};
use tract_hir::prelude::TractResult;
use tract_hir::tract_core::internal::format_err;

pub fn cache_dir() -> Option<PathBuf> {
    None
}

pub(crate) fn path(dir: &Path, digest: &str, _sequence_multiple: usize) -> PathBuf {
    dir.join(digest)
}

pub(crate) fn read(_file: &Path) -> TractResult<Graph> {
    Err(format_err!("no plan cache in a WASI guest"))
}

pub(crate) fn write(_file: &Path, _graph: &Graph) -> TractResult<()> {
    Ok(())
}
