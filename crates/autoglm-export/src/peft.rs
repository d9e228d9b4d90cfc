//! A PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`): validation and
//! merging into the base weights, W' = W + (lora_alpha / r) · B · A.

use crate::error::{read_json, ExportError, Result};
use crate::hf::{BaseModel, BertConfig, Tensor, Weights};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The fields of PEFT's `LoraConfig` that change what the merged model computes. Any of them
/// set to something we do not implement is refused by name, never ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub target_modules: Option<serde_json::Value>,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub bias: Option<String>,
}

/// PEFT options that change the merged weights (or what is adapted) beyond plain LoRA; any of
/// them set is refused by name rather than ignored.
const CHANGES_THE_MATH: [&str; 14] = [
    "use_dora",
    "use_rslora",
    "fan_in_fan_out",
    "lora_bias",
    "use_qalora",
    "use_bdlora",
    "layers_to_transform",
    "layer_replication",
    "trainable_token_indices",
    "target_parameters",
    "exclude_modules",
    "rank_pattern",
    "alpha_pattern",
    "alora_invocation_tokens",
];

/// Whether a JSON option is set: anything but absent, null, false, 0, "", [] or {}.
fn is_set(v: Option<&serde_json::Value>) -> bool {
    use serde_json::Value;
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Bool(true)) => true,
    }
}

/// The linear layers of a BERT layer that LoRA may target, by PEFT's module name.
pub const TARGETS: [&str; 6] = [
    "query",
    "key",
    "value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

/// Maps a PEFT target name to the module path inside `encoder.layer.N.`.
fn target_path(name: &str) -> Option<&'static str> {
    Some(match name {
        "query" => "attention.self.query",
        "key" => "attention.self.key",
        "value" => "attention.self.value",
        "attention.output.dense" => "attention.output.dense",
        "intermediate.dense" => "intermediate.dense",
        // `dense` alone is ambiguous in BERT: refuse it rather than guess.
        "output.dense" => "output.dense",
        _ => return None,
    })
}

/// A read and checked adapter.
#[derive(Debug)]
pub struct Adapter {
    pub dir: PathBuf,
    pub config: AdapterConfig,
    pub weights: Weights,
    /// Labels from the adapter directory's `config.json` (`id2label`), when present.
    pub labels: Option<Vec<String>>,
}

impl Adapter {
    pub fn read(dir: &Path) -> Result<Self> {
        let config_path = dir.join("adapter_config.json");
        let config: AdapterConfig = read_json(&config_path)?;
        let unsupported = |field: &str, reason: String| ExportError::Unsupported {
            file: config_path.clone(),
            field: field.into(),
            reason,
        };
        if config.peft_type != "LORA" {
            return Err(unsupported(
                "peft_type",
                format!("`{}` (only LORA)", config.peft_type),
            ));
        }
        if config.bias.as_deref().is_some_and(|b| b != "none") {
            return Err(unsupported(
                "bias",
                format!(
                    "`{}` (only `none`)",
                    config.bias.as_deref().unwrap_or_default()
                ),
            ));
        }
        let raw: serde_json::Value = read_json(&config_path)?;
        if let Some(field) = CHANGES_THE_MATH.iter().find(|f| is_set(raw.get(**f))) {
            return Err(unsupported(
                field,
                format!(
                    "`{}` changes what the adapter computes and is not supported",
                    raw[*field]
                ),
            ));
        }
        if config.r == 0 {
            return Err(unsupported("r", "0".into()));
        }
        match config.task_type.as_deref() {
            Some("SEQ_CLS") => {}
            other => {
                return Err(unsupported(
                    "task_type",
                    format!("{other:?} (only SEQ_CLS: a classification adapter)"),
                ))
            }
        }
        for target in config.targets(&config_path)? {
            if target_path(&target).is_none() {
                return Err(unsupported(
                    "target_modules",
                    format!("`{target}` (supported: {})", TARGETS.join(", ")),
                ));
            }
        }
        let weights = Weights::read(&dir.join("adapter_model.safetensors"))?;
        let labels_path = dir.join("config.json");
        let labels = if labels_path.exists() {
            read_json::<LabelsOnly>(&labels_path).map(|c| c.labels())?
        } else {
            None
        };
        Ok(Adapter {
            dir: dir.into(),
            config,
            weights,
            labels,
        })
    }

    /// The adapter's name for provenance: its directory name.
    pub fn name(&self) -> String {
        self.dir
            .canonicalize()
            .unwrap_or_else(|_| self.dir.clone())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Merges every LoRA pair into the base weights and checks that no adapter tensor is left
    /// unused (an adapter the exporter half-applies would silently predict something else).
    pub fn merge_into(&self, base: &mut BaseModel) -> Result<()> {
        let cfg = &base.config;
        let scale = (self.config.lora_alpha / self.config.r as f64) as f32;
        let mut used = std::collections::BTreeSet::new();
        let targets = self.config.targets(&self.dir.join("adapter_config.json"))?;
        for layer in 0..cfg.num_hidden_layers {
            for target in &targets {
                let module = target_path(target).expect("targets were checked on read");
                let (out_dim, in_dim) = linear_shape(cfg, module);
                let key = |ab: &str| {
                    format!(
                        "base_model.model.{}encoder.layer.{layer}.{module}.{ab}.weight",
                        self.encoder_prefix()
                    )
                };
                let (ka, kb) = (key("lora_A"), key("lora_B"));
                let a = self.weights.get(&ka, &[self.config.r, in_dim])?;
                let b = self.weights.get(&kb, &[out_dim, self.config.r])?;
                let name = format!("{}encoder.layer.{layer}.{module}.weight", base.prefix);
                base.weights.get(&name, &[out_dim, in_dim])?;
                let w = base
                    .weights
                    .tensors_mut()
                    .get_mut(&name)
                    .expect("checked just above");
                add_low_rank(w, b, a, scale);
                used.insert(ka);
                used.insert(kb);
            }
        }
        for head in HEAD_TENSORS {
            used.insert(format!("base_model.model.{head}"));
        }
        if let Some(unused) = self.weights.names().find(|n| !used.contains(*n)) {
            return Err(ExportError::Unsupported {
                file: self.weights.path.clone(),
                field: unused.into(),
                reason: "this adapter tensor has no place in a BERT LoRA merge".into(),
            });
        }
        Ok(())
    }

    /// `bert.` when the adapter was trained on a task model (`BertForSequenceClassification`).
    fn encoder_prefix(&self) -> &'static str {
        if self
            .weights
            .names()
            .any(|n| n.starts_with("base_model.model.bert."))
        {
            "bert."
        } else {
            ""
        }
    }

    /// The classifier head the adapter saved (`modules_to_save`): weight `[labels, hidden]` and bias.
    pub fn classifier(&self, hidden: usize) -> Result<(Tensor, Tensor)> {
        let name = |p: &str| format!("base_model.model.classifier.{p}");
        let weight_name = name("weight");
        let rows = match self.weights.shape_of(&weight_name) {
            Some(&[rows, h]) if h == hidden => rows,
            _ => {
                return Err(ExportError::MissingTensor {
                    file: self.weights.path.clone(),
                    tensor: format!("{weight_name} [labels, {hidden}]"),
                })
            }
        };
        let weight = self.weights.get(&weight_name, &[rows, hidden])?.clone();
        let bias = self.weights.get(&name("bias"), &[rows])?.clone();
        Ok((weight, bias))
    }
}

/// The adapter tensors a classification head may bring (PEFT saves `modules_to_save` this way).
const HEAD_TENSORS: [&str; 2] = ["classifier.weight", "classifier.bias"];

impl AdapterConfig {
    /// `target_modules` as a list of names (PEFT also allows a regex string, which we refuse).
    fn targets(&self, path: &Path) -> Result<Vec<String>> {
        let unsupported = |reason: String| ExportError::Unsupported {
            file: path.into(),
            field: "target_modules".into(),
            reason,
        };
        match &self.target_modules {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| unsupported(format!("`{v}` is not a module name")))
                })
                .collect::<Result<Vec<_>>>()
                .map(|mut v| {
                    v.sort();
                    v
                }),
            Some(other) => Err(unsupported(format!(
                "`{other}` (a list of module names is required)"
            ))),
            None => Err(unsupported("missing".into())),
        }
    }
}

#[derive(Deserialize)]
struct LabelsOnly {
    #[serde(default)]
    id2label: Option<BTreeMap<String, String>>,
}

impl LabelsOnly {
    fn labels(self) -> Option<Vec<String>> {
        let map = self.id2label?;
        let mut pairs: Vec<(usize, String)> = map
            .into_iter()
            .filter_map(|(k, v)| k.parse().ok().map(|k| (k, v)))
            .collect();
        pairs.sort();
        Some(pairs.into_iter().map(|(_, v)| v).collect())
    }
}

/// `(out, in)` of a BERT linear layer.
fn linear_shape(cfg: &BertConfig, module: &str) -> (usize, usize) {
    match module {
        "intermediate.dense" => (cfg.intermediate_size, cfg.hidden_size),
        "output.dense" => (cfg.hidden_size, cfg.intermediate_size),
        _ => (cfg.hidden_size, cfg.hidden_size),
    }
}

/// w += scale · b · a, with w `[out, in]`, b `[out, r]`, a `[r, in]`; accumulated in f64 so the
/// merge adds no rounding of its own beyond the final f32 store.
fn add_low_rank(w: &mut Tensor, b: &Tensor, a: &Tensor, scale: f32) {
    let (out_dim, in_dim, r) = (w.shape[0], w.shape[1], a.shape[0]);
    for o in 0..out_dim {
        for i in 0..in_dim {
            let delta: f64 = (0..r)
                .map(|k| b.data[o * r + k] as f64 * a.data[k * in_dim + i] as f64)
                .sum();
            w.data[o * in_dim + i] += (scale as f64 * delta) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_rank_update_is_scale_times_b_a() {
        // w [2, 3], b [2, 1], a [1, 3]: b·a is the outer product.
        let mut w = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = Tensor::new(vec![2, 1], vec![1.0, -2.0]);
        let a = Tensor::new(vec![1, 3], vec![0.5, 0.0, 1.0]);
        add_low_rank(&mut w, &b, &a, 2.0);
        assert_eq!(w.data, vec![2.0, 2.0, 5.0, 2.0, 5.0, 2.0]);
    }
}
