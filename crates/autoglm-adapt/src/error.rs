use autoglm_package::FileError;
use std::path::PathBuf;

/// Why adaptation, packaging or ranking failed. Messages name the file, line or option at fault;
/// an error about an option ([`AdaptError::option`]) starts with the option's field name
/// (`epochs`, `init_from`…), so that a front end can say it in its own words (a flag).
#[derive(Debug, thiserror::Error)]
pub enum AdaptError {
    /// A file that could not be read or written (the training data, the embedding cache): the
    /// package crate's error, which names the path.
    #[error(transparent)]
    File(#[from] FileError),
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
        /// The option at fault, if the mismatch comes from one; `what` then starts with it.
        option: Option<&'static str>,
        what: String,
        expected: usize,
        found: usize,
    },
    /// An option out of its range: `option` is its field name (in [`crate::AdaptRequest`] or
    /// [`crate::TrainOptions`]).
    #[error("{option} {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    /// Inputs that cannot make a model (no heads to package, a task twice, too few examples).
    #[error("{0}")]
    Invalid(String),
    /// The loss became infinite or NaN: the output layer's learning rate is too high.
    #[error("lr is too high: training diverged at epoch {epoch} (loss {loss}); lower it")]
    Diverged { epoch: usize, loss: f64 },
    #[error("the package is not usable here: {0}")]
    Package(String),
    #[error("invalid ONNX graph: {0}")]
    Graph(String),
    #[error(transparent)]
    PackageFile(#[from] autoglm_package::PackageError),
    #[error(transparent)]
    Runtime(#[from] autoglm_runtime::RuntimeError),
}

impl AdaptError {
    /// The field name of the option at fault, when there is one: the message starts with it.
    pub fn option(&self) -> Option<&'static str> {
        match self {
            AdaptError::InvalidOption { option, .. } => Some(option),
            AdaptError::DimensionMismatch { option, .. } => *option,
            AdaptError::Diverged { .. } => Some("lr"),
            _ => None,
        }
    }
}

pub type Result<T, E = AdaptError> = std::result::Result<T, E>;
