use std::path::PathBuf;

/// Why an export failed. Messages name the file, field or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("{file}: tensor `{tensor}` is missing")]
    MissingTensor { file: PathBuf, tensor: String },
    #[error("{file}: tensor `{tensor}` has shape {actual:?}, expected {expected:?}")]
    Shape {
        file: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("{file}: tensor `{tensor}` has dtype {dtype}; only F32 is supported")]
    DType {
        file: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{file}: unsupported `{field}`: {reason}")]
    Unsupported {
        file: PathBuf,
        field: String,
        reason: String,
    },
    #[error("invalid export option: {0}")]
    Option(String),
    /// `--out` would overwrite or nest in the export's own inputs.
    #[error("refusing to write the package to {out}: {reason}")]
    Output { out: PathBuf, reason: String },
    #[error(transparent)]
    Package(#[from] autoglm_package::PackageError),
}

pub type Result<T, E = ExportError> = std::result::Result<T, E>;

pub(crate) fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ExportError::Read {
        path: path.into(),
        source,
    })
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    serde_json::from_slice(&read(path)?).map_err(|source| ExportError::Json {
        path: path.into(),
        source,
    })
}
