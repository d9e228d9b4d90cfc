//! AutoGLM Edge exporter: a Hugging Face BERT-family base checkpoint, plus optionally a PEFT LoRA
//! classification adapter, becomes a self-describing model package (ONNX graph + tokenizer +
//! manifest with digests). Rust only, deterministic: the same inputs give the same bytes.
//!
//! ```no_run
//! use autoglm_export::{export, ExportOptions};
//! let options = ExportOptions::new("minilm/").with_adapter("sentiment-lora/");
//! let package = export(&options).unwrap();
//! package.write("sentiment-pkg".as_ref()).unwrap();
//! ```

mod attention;
pub mod bert;
mod error;
#[doc(hidden)]
pub mod fixture;
pub mod hf;
pub mod onnx;
pub mod peft;
mod quantize;
mod window;

pub use error::{ExportError, Result};

use autoglm_package::{
    Attention, GraphInfo, Manifest, ModelKind, Package, Provenance, Quantization, SCHEMA_VERSION,
};
use std::path::{Component, Path, PathBuf};

/// What to export and how.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub base: PathBuf,
    pub adapter: Option<PathBuf>,
    /// Token limit; defaults to sentence-transformers' `max_seq_length`, else the model's
    /// `max_position_embeddings`.
    pub max_length: Option<usize>,
    pub quantization: Quantization,
    pub attention: Attention,
    /// Tests only: build window attention densely with the equivalent n×n mask.
    #[doc(hidden)]
    pub reference_attention: Option<bert::AttentionGraph>,
}

impl ExportOptions {
    pub fn new(base: impl Into<PathBuf>) -> Self {
        ExportOptions {
            base: base.into(),
            adapter: None,
            max_length: None,
            quantization: Quantization::None,
            attention: Attention::Dense,
            reference_attention: None,
        }
    }

    pub fn with_adapter(mut self, adapter: impl Into<PathBuf>) -> Self {
        self.adapter = Some(adapter.into());
        self
    }
}

pub const GRAPH_FILE: &str = "model.onnx";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Checks that `out` can take the package without losing data, then exports and writes it.
/// The checks run before the (long) export: see [`check_output`].
pub fn export_to(options: &ExportOptions, out: &Path) -> Result<Package> {
    check_output(options, out)?;
    let package = export(options)?;
    package.write(out)?;
    Ok(package)
}

/// Refuses an output path that would destroy data: one that is, is inside, or contains the base
/// model or the adapter directory (compared canonicalized, so `./base/.` or a symlink to it is
/// caught too; an `out` that does not exist yet is resolved through its nearest existing
/// ancestor), and anything [`autoglm_package::check_write_target`] refuses (a non-empty
/// directory that is not a package, a regular file at a directory path...).
pub fn check_output(options: &ExportOptions, out: &Path) -> Result<()> {
    let target = resolve(out).map_err(|e| ExportError::Output {
        out: out.into(),
        reason: format!("cannot resolve the path: {e}"),
    })?;
    let inputs = std::iter::once(("base model", &options.base))
        .chain(options.adapter.iter().map(|a| ("adapter", a)));
    for (what, input) in inputs {
        // An input that does not resolve cannot be overwritten; the export reports it.
        let Ok(input_dir) = input.canonicalize() else {
            continue;
        };
        let relation = if target == input_dir {
            "is"
        } else if target.starts_with(&input_dir) {
            "is inside"
        } else if input_dir.starts_with(&target) {
            "contains"
        } else {
            continue;
        };
        return Err(ExportError::Output {
            out: out.into(),
            reason: format!(
                "it {relation} the {what} directory {}: choose another --out",
                input.display()
            ),
        });
    }
    autoglm_package::check_write_target(out)?;
    Ok(())
}

/// `path` made absolute with symlinks resolved, for a path that may not exist yet: the nearest
/// existing ancestor is canonicalized and the rest appended, normalized lexically (those
/// components do not exist, so none of them is a symlink).
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(mut resolved) => {
                for component in rest.iter().rev() {
                    match component {
                        Component::ParentDir => {
                            resolved.pop();
                        }
                        Component::Normal(name) => resolved.push(name),
                        _ => {}
                    }
                }
                return Ok(resolved);
            }
            Err(e) => {
                let (Some(parent), Some(last)) =
                    (existing.parent(), existing.components().next_back())
                else {
                    return Err(e);
                };
                rest.push(last);
                existing = parent;
            }
        }
    }
}

/// Reads the inputs, builds the graph and returns the package (not yet written).
pub fn export(options: &ExportOptions) -> Result<Package> {
    let mut base = hf::BaseModel::read(&options.base)?;
    let cfg = base.config.clone();
    let max_length = options
        .max_length
        .or(base.sentence.max_seq_length)
        .unwrap_or(cfg.max_position_embeddings);
    let attention = options
        .reference_attention
        .unwrap_or(bert::AttentionGraph::from_manifest(options.attention));
    let multiple = attention.sequence_multiple();
    check_lengths(max_length, options.attention, multiple)?;
    // Window attention pads to whole blocks, so the position table covers the padded length;
    // beyond the learned positions it is extended (see `bert::extend_positions`).
    let positions = cfg
        .max_position_embeddings
        .max(max_length.div_ceil(multiple) * multiple);

    let adapter = options
        .adapter
        .as_deref()
        .map(peft::Adapter::read)
        .transpose()?;
    let (kind, labels, pooling, normalize, head) = match &adapter {
        None => {
            let s = base.sentence.clone();
            (
                ModelKind::Embedding,
                vec![],
                s.pooling,
                s.normalize,
                bert::Head::Embedding {
                    pooling: s.pooling,
                    normalize: s.normalize,
                },
            )
        }
        Some(adapter) => {
            adapter.merge_into(&mut base)?;
            let (weight, bias) = adapter.classifier(cfg.hidden_size)?;
            let n = weight.shape[0];
            let config_path = options.base.join("config.json");
            let labels = match adapter.labels.clone() {
                Some(l) => l,
                None => cfg
                    .labels(&config_path)?
                    .unwrap_or_else(|| (0..n).map(|i| format!("LABEL_{i}")).collect()),
            };
            if labels.len() != n {
                return Err(ExportError::Unsupported {
                    file: adapter.dir.join("config.json"),
                    field: "id2label".into(),
                    reason: format!("{} labels for a classifier with {n} outputs", labels.len()),
                });
            }
            (
                ModelKind::Classification,
                labels,
                autoglm_package::Pooling::ClsPooler,
                false,
                bert::Head::Classifier { weight, bias },
            )
        }
    };

    let (onnx, output) = bert::build(
        &base,
        &head,
        bert::GraphOptions {
            quantization: options.quantization,
            attention,
            positions,
        },
    )?;
    let tokenizer = tokenizer_json(&base, max_length)?;
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        kind,
        labels,
        max_length,
        hidden_size: cfg.hidden_size,
        pooling,
        normalize,
        attention: options.attention,
        quantization: options.quantization,
        graph: GraphInfo {
            file: GRAPH_FILE.into(),
            opset: onnx::OPSET,
            inputs: bert::INPUTS.iter().map(|s| s.to_string()).collect(),
            output: output.into(),
            sequence_multiple: multiple,
        },
        tokenizer: TOKENIZER_FILE.into(),
        provenance: Provenance {
            base_model: base.name(),
            base_weights_sha256: base.weights.sha256.clone(),
            adapter: adapter.as_ref().map(|a| a.name()),
            adapter_weights_sha256: adapter.as_ref().map(|a| a.weights.sha256.clone()),
            exporter: concat!("autoglm-export ", env!("CARGO_PKG_VERSION")).into(),
        },
        files: Default::default(),
        tasks: Vec::new(),
    };
    Ok(Package::new(
        manifest,
        vec![
            (GRAPH_FILE.into(), onnx),
            (TOKENIZER_FILE.into(), tokenizer),
        ],
    )?)
}

/// Refuses length/attention combinations that cannot work.
fn check_lengths(max_length: usize, attention: Attention, multiple: usize) -> Result<()> {
    if max_length < 2 {
        return Err(ExportError::Option(format!(
            "max length {max_length} leaves no room for [CLS] and [SEP]"
        )));
    }
    if max_length > MAX_LENGTH_LIMIT {
        return Err(ExportError::Option(format!(
            "max length {max_length} is over the {MAX_LENGTH_LIMIT}-token limit of this exporter"
        )));
    }
    if multiple > autoglm_package::MAX_SEQUENCE_MULTIPLE {
        return Err(ExportError::Option(format!(
            "a window of blocks of {multiple} tokens is over the {}-token block limit",
            autoglm_package::MAX_SEQUENCE_MULTIPLE
        )));
    }
    if let Attention::Window { window, global } = attention {
        if window < 2 || window % 2 != 0 {
            return Err(ExportError::Option(format!(
                "window {window}: must be an even number of tokens, at least 2 (half on each side)"
            )));
        }
        if multiple > max_length {
            return Err(ExportError::Option(format!("window {window} is wider than twice the max length {max_length}: use dense attention")));
        }
        if global >= max_length {
            return Err(ExportError::Option(format!(
                "{global} global tokens leave no room in max length {max_length}"
            )));
        }
    }
    Ok(())
}

/// Longest sequence the exporter accepts (positions are extended by copying up to this): the
/// most a manifest may say.
pub const MAX_LENGTH_LIMIT: usize = autoglm_package::MAX_MAX_LENGTH;

/// The base tokenizer, checked by loading it, with truncation at `max_length` and no padding
/// written in (the runtime pads per batch), so that any `tokenizers` user reading the package
/// gets the same ids we do.
fn tokenizer_json(base: &hf::BaseModel, max_length: usize) -> Result<Vec<u8>> {
    let path = base.dir.join("tokenizer.json");
    let bad = |e: tokenizers::Error| ExportError::Unsupported {
        file: path.clone(),
        field: "tokenizer".into(),
        reason: e.to_string(),
    };
    let mut tok = tokenizers::Tokenizer::from_bytes(&base.tokenizer_json).map_err(bad)?;
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length,
        ..Default::default()
    }))
    .map_err(bad)?;
    tok.with_padding(None);
    Ok(tok.to_string(false).map_err(bad)?.into_bytes())
}
