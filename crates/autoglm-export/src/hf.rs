//! Readers for a Hugging Face BERT-family checkpoint: `config.json`, `model.safetensors`,
//! `tokenizer.json`, and sentence-transformers' pooling configuration when present.

use crate::error::{read, read_json, ExportError, Result};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The fields of a BERT `config.json` the exporter uses; see transformers'
/// `models/bert/configuration_bert.py` for their meaning.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub model_type: String,
    #[serde(default)]
    pub _name_or_path: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_pos")]
    pub position_embedding_type: String,
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_pos() -> String {
    "absolute".into()
}

impl BertConfig {
    pub fn read(path: &Path) -> Result<Self> {
        let config: BertConfig = read_json(path)?;
        let unsupported = |field: &str, reason: String| ExportError::Unsupported {
            file: path.into(),
            field: field.into(),
            reason,
        };
        if config.model_type != "bert" {
            return Err(unsupported(
                "model_type",
                format!("`{}` (only `bert` is supported)", config.model_type),
            ));
        }
        if config.hidden_act != "gelu" {
            return Err(unsupported(
                "hidden_act",
                format!("`{}` (only `gelu` is supported)", config.hidden_act),
            ));
        }
        if config.position_embedding_type != "absolute" {
            return Err(unsupported(
                "position_embedding_type",
                format!("`{}` (only `absolute`)", config.position_embedding_type),
            ));
        }
        if config.num_attention_heads == 0 || config.hidden_size % config.num_attention_heads != 0 {
            return Err(unsupported(
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    config.num_attention_heads, config.hidden_size
                ),
            ));
        }
        Ok(config)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Labels in id order, when `id2label` is given.
    pub fn labels(&self, path: &Path) -> Result<Option<Vec<String>>> {
        let Some(map) = &self.id2label else {
            return Ok(None);
        };
        let mut labels = vec![None; map.len()];
        for (id, label) in map {
            let slot = id.parse::<usize>().ok().and_then(|i| labels.get_mut(i));
            match slot {
                Some(slot) => *slot = Some(label.clone()),
                None => {
                    return Err(ExportError::Unsupported {
                        file: path.into(),
                        field: "id2label".into(),
                        reason: format!("ids must be 0..{}, found `{id}`", map.len()),
                    })
                }
            }
        }
        Ok(Some(
            labels.into_iter().map(|l| l.unwrap_or_default()).collect(),
        ))
    }
}

/// A float tensor read from a safetensors file.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data }
    }

    /// The transpose of a 2-D tensor.
    pub fn t(&self) -> Tensor {
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut data = vec![0.0; r * c];
        for i in 0..r {
            for j in 0..c {
                data[j * r + i] = self.data[i * c + j];
            }
        }
        Tensor::new(vec![c, r], data)
    }
}

/// All float tensors of a safetensors file, by name, plus the file's sha256.
#[derive(Debug)]
pub struct Weights {
    pub path: PathBuf,
    pub sha256: String,
    tensors: BTreeMap<String, Tensor>,
}

impl Weights {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = read(path)?;
        let bad = |reason: String| ExportError::Safetensors {
            path: path.into(),
            reason,
        };
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let data = match view.dtype() {
                Dtype::F32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                // Integer buffers (e.g. `position_ids`) are not weights: skip them.
                Dtype::I64 | Dtype::I32 | Dtype::U8 | Dtype::BOOL => continue,
                other => {
                    return Err(ExportError::DType {
                        file: path.into(),
                        tensor: name,
                        dtype: format!("{other:?}"),
                    })
                }
            };
            tensors.insert(name, Tensor { shape, data });
        }
        Ok(Weights {
            path: path.into(),
            sha256: autoglm_package::sha256_hex(&bytes),
            tensors,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor called `name`, checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| ExportError::MissingTensor {
                file: self.path.clone(),
                tensor: name.into(),
            })?;
        if t.shape != shape {
            return Err(ExportError::Shape {
                file: self.path.clone(),
                tensor: name.into(),
                expected: shape.into(),
                actual: t.shape.clone(),
            });
        }
        Ok(t)
    }

    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub(crate) fn tensors_mut(&mut self) -> &mut BTreeMap<String, Tensor> {
        &mut self.tensors
    }
}

/// A base model directory.
#[derive(Debug)]
pub struct BaseModel {
    pub dir: PathBuf,
    pub config: BertConfig,
    pub weights: Weights,
    /// The tensor-name prefix of the encoder (`""` for a `BertModel`, `"bert."` for a task model).
    pub prefix: String,
    pub tokenizer_json: Vec<u8>,
    pub sentence: SentenceConfig,
}

/// What sentence-transformers' modules say about pooling, normalization and length.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceConfig {
    pub pooling: autoglm_package::Pooling,
    pub normalize: bool,
    pub max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct StModule {
    #[serde(rename = "type")]
    kind: String,
    path: String,
}

#[derive(Deserialize)]
struct StPooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct StBertConfig {
    max_seq_length: Option<usize>,
}

impl SentenceConfig {
    /// Reads `modules.json` (+ the pooling module's config, `sentence_bert_config.json`);
    /// without them: mean pooling, normalized, the sentence-transformers default for encoders.
    fn read(dir: &Path) -> Result<Self> {
        let mut config = SentenceConfig {
            pooling: autoglm_package::Pooling::Mean,
            normalize: true,
            max_seq_length: None,
        };
        let modules_path = dir.join("modules.json");
        if modules_path.exists() {
            let modules: Vec<StModule> = read_json(&modules_path)?;
            config.normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
            if let Some(pool) = modules.iter().find(|m| m.kind.ends_with(".Pooling")) {
                let path = dir.join(&pool.path).join("config.json");
                let p: StPooling = read_json(&path)?;
                let unsupported = || ExportError::Unsupported {
                    file: path.clone(),
                    field: "pooling_mode_*".into(),
                    reason: "exactly one of mean or cls pooling is supported".into(),
                };
                config.pooling = match (
                    p.pooling_mode_mean_tokens,
                    p.pooling_mode_cls_token,
                    p.pooling_mode_max_tokens || p.pooling_mode_mean_sqrt_len_tokens,
                ) {
                    (true, false, false) => autoglm_package::Pooling::Mean,
                    (false, true, false) => autoglm_package::Pooling::Cls,
                    _ => return Err(unsupported()),
                };
            }
        }
        let st_path = dir.join("sentence_bert_config.json");
        if st_path.exists() {
            config.max_seq_length = read_json::<StBertConfig>(&st_path)?.max_seq_length;
        }
        Ok(config)
    }
}

impl BaseModel {
    pub fn read(dir: &Path) -> Result<Self> {
        let config = BertConfig::read(&dir.join("config.json"))?;
        let weights = Weights::read(&dir.join("model.safetensors"))?;
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer_json = read(&tokenizer_path)?;
        let prefix = if weights.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        }
        .to_string();
        let sentence = SentenceConfig::read(dir)?;
        Ok(BaseModel {
            dir: dir.into(),
            config,
            weights,
            prefix,
            tokenizer_json,
            sentence,
        })
    }

    /// The base tensor `name` (without the encoder prefix), checked against `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<&Tensor> {
        self.weights.get(&format!("{}{name}", self.prefix), shape)
    }

    /// Name of the model for provenance: the config's `_name_or_path`, else the directory name.
    pub fn name(&self) -> String {
        self.config
            ._name_or_path
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                self.dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
    }
}
