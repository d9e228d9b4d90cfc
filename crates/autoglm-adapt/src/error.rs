use std::path::PathBuf;

/// Why adaptation, packaging or ranking failed. Messages name the file, line or option at fault.
#[derive(Debug, thiserror::Error)]
pub enum AdaptError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}: {reason} (expected one JSON object a line: {{\"text\": …, \"label\": …}})"
    )]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path} holds no examples")]
    Empty { path: PathBuf },
    #[error("{path}: every example has the label `{label}`; a classifier needs at least 2 labels")]
    SingleLabel { path: PathBuf, label: String },
    #[error("{path}:{line}: label `{label}` does not occur in the training set (labels: {known})")]
    UnknownLabel {
        path: PathBuf,
        line: usize,
        label: String,
        known: String,
    },
    #[error("{what}: embedding size {found} does not match {expected}")]
    DimensionMismatch {
        what: String,
        expected: usize,
        found: usize,
    },
    #[error("{0}")]
    InvalidOption(String),
    #[error("the package is not usable here: {0}")]
    Package(String),
    #[error("invalid ONNX graph: {0}")]
    Graph(String),
    #[error(transparent)]
    PackageFile(#[from] autoglm_package::PackageError),
    #[error(transparent)]
    Runtime(#[from] autoglm_runtime::RuntimeError),
}

pub type Result<T, E = AdaptError> = std::result::Result<T, E>;
