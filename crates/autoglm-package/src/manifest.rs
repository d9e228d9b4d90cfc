use crate::{check_file_name, PackageError, Task, MAX_PACKAGE_BYTES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The manifest schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

// Bounds on the manifest's numbers, checked when a manifest is parsed or built. A runtime
// allocates from these fields (batches are `rows × sequence`, padded to `sequence_multiple`),
// so a hostile or mistyped manifest must fail here, with the field's name, and never reach an
// allocation. They are far above any BERT-family model (MiniLM: 256 tokens, 384 wide).

/// Most tokens per text (`max_length`): the exporter's limit too.
pub const MAX_MAX_LENGTH: usize = 16384;
/// Largest `graph.sequence_multiple` (window attention's block: at most the window plus one).
pub const MAX_SEQUENCE_MULTIPLE: usize = 4096;
/// Largest `hidden_size` (BERT-large: 1024).
pub const MAX_HIDDEN_SIZE: usize = 65536;
/// Most labels (a multi-task package holds every task's labels).
pub const MAX_LABELS: usize = 4096;
/// Longest label name, in bytes.
pub const MAX_LABEL_BYTES: usize = 256;
/// Most files a package lists: a multi-task package has one summary file per task, and up to
/// one task per label, beside the graph, the tokenizer and a few more.
pub const MAX_FILES: usize = MAX_LABELS + 16;
/// Most graph inputs.
pub const MAX_GRAPH_INPUTS: usize = 16;
/// Longest tensor or file name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// What a package computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// The graph outputs one pooled (and possibly normalized) vector per text.
    Embedding,
    /// The graph outputs one logit per label; the runtime applies softmax.
    Classification,
}

/// How token states become one vector (inside the graph).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean over the tokens the attention mask keeps (sentence-transformers).
    Mean,
    /// The `[CLS]` token's state.
    Cls,
    /// The `[CLS]` token through the BERT pooler (dense + tanh), as `BertForSequenceClassification`.
    ClsPooler,
}

/// Which tokens each token attends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Attention {
    /// Every token attends to every token (cost grows with the square of the length).
    Dense,
    /// Sliding window of `window` tokens around each token, plus `global` tokens (from the start)
    /// that attend to and are attended by all.
    Window { window: usize, global: usize },
}

/// How the weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantization {
    None,
    /// int8 weights with per-channel scales, activations quantized at run time.
    Int8,
}

// One home for the text forms of `Attention` and `Quantization`: the CLI parses them, the
// component, `inspect` and the server print them.

impl std::fmt::Display for Attention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attention::Dense => f.write_str("dense"),
            Attention::Window { window, global } => write!(f, "window:{window},global:{global}"),
        }
    }
}

impl std::str::FromStr for Attention {
    type Err = String;

    /// `dense`, or `window:W,global:G` with W ≥ 1 (what [`Display`](std::fmt::Display) prints).
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "dense" {
            return Ok(Attention::Dense);
        }
        let usage =
            || format!("`{s}`: expected dense or window:W,global:G (e.g. window:128,global:1)");
        let rest = s.strip_prefix("window:").ok_or_else(usage)?;
        let (w, g) = rest.split_once(",global:").ok_or_else(usage)?;
        let window = w.parse::<usize>().map_err(|_| usage())?;
        let global = g.parse::<usize>().map_err(|_| usage())?;
        if window == 0 {
            return Err(format!("`{s}`: the window must be at least 1 token"));
        }
        Ok(Attention::Window { window, global })
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Quantization::None => "none",
            Quantization::Int8 => "int8",
        })
    }
}

impl std::str::FromStr for Quantization {
    type Err = String;

    /// `none` (or `fp32`) and `int8`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" | "fp32" => Ok(Quantization::None),
            "int8" => Ok(Quantization::Int8),
            _ => Err(format!("`{s}`: expected none or int8")),
        }
    }
}

/// The graph file and its tensor names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphInfo {
    pub file: String,
    pub opset: i64,
    /// int64 inputs of shape `[batch, sequence]`, in this order.
    pub inputs: Vec<String>,
    /// The one float output: `[batch, labels]` logits or `[batch, hidden]` embeddings.
    pub output: String,
    /// Padded batches must have a sequence length that is a multiple of this (window
    /// attention works on blocks); 1 for dense graphs.
    #[serde(default = "one")]
    pub sequence_multiple: usize,
}

fn one() -> usize {
    1
}

/// Where the model came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The base model's name (from its config) and the sha256 of its weights.
    pub base_model: String,
    pub base_weights_sha256: String,
    /// The adapter's name and the sha256 of its weights, when one was merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_weights_sha256: Option<String>,
    /// `autoglm-export <version>`.
    pub exporter: String,
}

/// Size and digest of one file of the package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub size: u64,
    pub sha256: String,
}

/// `manifest.json`: everything a runtime needs to know to run the package, and the digests that
/// make it tamper-evident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema_version: u32,
    pub kind: ModelKind,
    /// Label names in logit order (empty for an embedding package).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Texts are truncated to this many tokens, special tokens included.
    pub max_length: usize,
    /// Width of the output vector for an embedding package, of the hidden state otherwise.
    pub hidden_size: usize,
    pub pooling: Pooling,
    /// Whether the pooled vector is L2-normalized.
    pub normalize: bool,
    pub attention: Attention,
    pub quantization: Quantization,
    pub graph: GraphInfo,
    pub tokenizer: String,
    pub provenance: Provenance,
    /// Every file of the package but the manifest, by name.
    #[serde(default)]
    pub files: BTreeMap<String, FileEntry>,
    /// A multi-task package's tasks, in logit order (see [`Manifest::task_slices`]); empty (and
    /// absent from the JSON) for any other package.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<Task>,
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PackageError> {
        // Read the version first, so that a newer package says so instead of failing on a field.
        #[derive(Deserialize)]
        struct Version {
            schema_version: u32,
        }
        let version: Version = serde_json::from_slice(bytes).map_err(PackageError::Manifest)?;
        if version.schema_version != SCHEMA_VERSION {
            return Err(PackageError::SchemaVersion {
                found: version.schema_version,
            });
        }
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(PackageError::Manifest)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Pretty JSON with a final newline; field order is fixed, so the bytes are deterministic.
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        bytes.push(b'\n');
        bytes
    }

    pub(crate) fn validate(&self) -> Result<(), PackageError> {
        let bad = |msg: String| Err(PackageError::InvalidManifest(msg));
        if self.schema_version != SCHEMA_VERSION {
            return Err(PackageError::SchemaVersion {
                found: self.schema_version,
            });
        }
        if self.files.len() > MAX_FILES {
            return bad(format!(
                "files lists {} files (at most {MAX_FILES})",
                self.files.len()
            ));
        }
        let mut total: u64 = 0;
        for (name, entry) in &self.files {
            check_file_name(name)?;
            // Sizes are checked before any read: a reader may trust them to bound its buffers.
            if entry.size > MAX_PACKAGE_BYTES {
                return bad(format!(
                    "files.{name}.size {} is over the {MAX_PACKAGE_BYTES}-byte package limit",
                    entry.size
                ));
            }
            total = total.saturating_add(entry.size);
            if entry.sha256.len() != 64 || !entry.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(format!("files.{name}.sha256 is not 64 hex digits"));
            }
        }
        if total > MAX_PACKAGE_BYTES {
            return bad(format!(
                "the files add up to {total} bytes, over the {MAX_PACKAGE_BYTES}-byte package limit"
            ));
        }
        for (what, name) in [
            ("graph.file", &self.graph.file),
            ("tokenizer", &self.tokenizer),
        ] {
            if !self.files.contains_key(name) {
                return bad(format!("{what} `{name}` is not among the package's files"));
            }
        }
        match self.kind {
            ModelKind::Classification if self.labels.len() < 2 => {
                return bad(format!(
                    "a classification package needs at least 2 labels, found {}",
                    self.labels.len()
                ))
            }
            ModelKind::Embedding if !self.labels.is_empty() => {
                return bad("an embedding package has no labels".into())
            }
            _ => {}
        }
        if self.labels.len() > MAX_LABELS {
            return bad(format!(
                "labels has {} entries (at most {MAX_LABELS})",
                self.labels.len()
            ));
        }
        if let Some(l) = self.labels.iter().find(|l| l.len() > MAX_LABEL_BYTES) {
            return bad(format!(
                "label `{}…` is longer than {MAX_LABEL_BYTES} bytes",
                l.chars().take(32).collect::<String>()
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = self.labels.iter().find(|l| !seen.insert(l.as_str())) {
            return bad(format!("label `{dup}` appears twice"));
        }
        if self.max_length < 2 {
            return bad(format!(
                "max_length {} leaves no room for [CLS] and [SEP]",
                self.max_length
            ));
        }
        if self.max_length > MAX_MAX_LENGTH {
            return bad(format!(
                "max_length {} is over the {MAX_MAX_LENGTH}-token limit",
                self.max_length
            ));
        }
        if self.hidden_size == 0 || self.hidden_size > MAX_HIDDEN_SIZE {
            return bad(format!(
                "hidden_size {} must be 1 to {MAX_HIDDEN_SIZE}",
                self.hidden_size
            ));
        }
        if self.graph.inputs.is_empty() || self.graph.inputs.len() > MAX_GRAPH_INPUTS {
            return bad(format!(
                "graph.inputs has {} names (1 to {MAX_GRAPH_INPUTS})",
                self.graph.inputs.len()
            ));
        }
        for (what, name) in self
            .graph
            .inputs
            .iter()
            .map(|n| ("graph.inputs", n))
            .chain([("graph.output", &self.graph.output)])
        {
            if name.is_empty() || name.len() > MAX_NAME_BYTES {
                return bad(format!(
                    "{what}: tensor name of {} bytes (1 to {MAX_NAME_BYTES})",
                    name.len()
                ));
            }
        }
        if let Attention::Window { window, global } = self.attention {
            if window < 2 || window > self.max_length.saturating_mul(2) {
                return bad(format!(
                    "attention.window {window} must be 2 to twice max_length ({})",
                    self.max_length
                ));
            }
            if global >= self.max_length {
                return bad(format!(
                    "attention.global {global} must be below max_length ({})",
                    self.max_length
                ));
            }
        }
        if self.graph.sequence_multiple == 0
            || self.graph.sequence_multiple > self.max_length
            || self.graph.sequence_multiple > MAX_SEQUENCE_MULTIPLE
        {
            return bad(format!(
                "graph.sequence_multiple {} must be 1 to max_length ({}) and at most {MAX_SEQUENCE_MULTIPLE}",
                self.graph.sequence_multiple, self.max_length
            ));
        }
        self.validate_tasks()
    }

    /// A small valid manifest, for examples and tests.
    pub fn example() -> Self {
        Manifest {
            schema_version: SCHEMA_VERSION,
            kind: ModelKind::Classification,
            labels: vec!["negative".into(), "positive".into()],
            max_length: 256,
            hidden_size: 384,
            pooling: Pooling::ClsPooler,
            normalize: false,
            attention: Attention::Dense,
            quantization: Quantization::None,
            graph: GraphInfo {
                file: "model.onnx".into(),
                opset: 17,
                inputs: vec![
                    "input_ids".into(),
                    "attention_mask".into(),
                    "token_type_ids".into(),
                ],
                output: "logits".into(),
                sequence_multiple: 1,
            },
            tokenizer: "tokenizer.json".into(),
            provenance: Provenance {
                base_model: "example".into(),
                base_weights_sha256: "0".repeat(64),
                adapter: None,
                adapter_weights_sha256: None,
                exporter: "autoglm-export test".into(),
            },
            files: BTreeMap::new(),
            tasks: Vec::new(),
        }
    }
}
