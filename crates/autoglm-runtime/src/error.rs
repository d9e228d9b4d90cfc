/// Why the runtime could not load a package or serve a request.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Package(#[from] autoglm_package::PackageError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The graph could not be loaded or run; the message is the backend's whole error chain.
    #[error("model: {0}")]
    Model(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
