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
    /// A [`crate::LoadOptions`] value out of its documented range.
    #[error("invalid load option: {0}")]
    Option(String),
    /// The manifest says something the graph contradicts (label count vs logits width, kind vs
    /// output, inputs, positions): running it would give wrong answers, so it is not loaded.
    #[error("the manifest does not match the graph: {0}")]
    GraphMismatch(String),
    /// A task was asked of a package that has none (`task`: the one asked for, if any).
    #[error("{}this package has no tasks (it is not a multi-task package)", task.as_ref().map(|t| format!("task `{t}`: ")).unwrap_or_default())]
    NoTasks { task: Option<String> },
    #[error("task `{task}`: no such task (tasks: {})", tasks.join(", "))]
    NoSuchTask { task: String, tasks: Vec<String> },
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
