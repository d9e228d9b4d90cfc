//! A tiny random BERT checkpoint and LoRA adapter on disk, in the Hugging Face and PEFT file
//! formats, for tests that must not depend on downloaded assets (and for breaking on purpose).

use safetensors::tensor::{serialize, Dtype, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

pub const HIDDEN: usize = 8;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 2;
pub const INTERMEDIATE: usize = 16;
pub const POSITIONS: usize = 32;
pub const WORDS: [&str; 12] = [
    "the", "film", "was", "good", "bad", "not", "very", "a", "movie", "##s", "great", "!",
];

/// Deterministic pseudo-random values in [-0.5, 0.5) (the fixture's weights; tests reuse it).
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// Writes `tensors` as a safetensors file.
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) {
    let bytes: BTreeMap<&String, Vec<u8>> = tensors
        .iter()
        .map(|(k, (_, d))| (k, d.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(&String, TensorView)> = tensors
        .iter()
        .map(|(k, (shape, _))| {
            (
                k,
                TensorView::new(Dtype::F32, shape.clone(), &bytes[k]).expect("view"),
            )
        })
        .collect();
    std::fs::write(path, serialize(views, None).expect("serialize")).expect("write safetensors");
}

pub fn vocab_size() -> usize {
    WORDS.len() + 4
}

/// The tensors of a tiny `BertModel` (no `bert.` prefix, with a pooler).
pub fn base_tensors() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut t = BTreeMap::new();
    let mut seed = 0;
    let mut add = |name: String, shape: Vec<usize>| {
        seed += 1;
        let n = shape.iter().product();
        let data = if name.ends_with("LayerNorm.weight") {
            values(seed, n).iter().map(|v| 1.0 + v * 0.2).collect()
        } else {
            values(seed, n)
        };
        t.insert(name, (shape, data));
    };
    add(
        "embeddings.word_embeddings.weight".into(),
        vec![vocab_size(), HIDDEN],
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        vec![POSITIONS, HIDDEN],
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, HIDDEN],
    );
    add("embeddings.LayerNorm.weight".into(), vec![HIDDEN]);
    add("embeddings.LayerNorm.bias".into(), vec![HIDDEN]);
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}.");
        for m in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ] {
            add(format!("{p}{m}.weight"), vec![HIDDEN, HIDDEN]);
            add(format!("{p}{m}.bias"), vec![HIDDEN]);
        }
        add(
            format!("{p}intermediate.dense.weight"),
            vec![INTERMEDIATE, HIDDEN],
        );
        add(format!("{p}intermediate.dense.bias"), vec![INTERMEDIATE]);
        add(
            format!("{p}output.dense.weight"),
            vec![HIDDEN, INTERMEDIATE],
        );
        add(format!("{p}output.dense.bias"), vec![HIDDEN]);
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(format!("{p}{ln}.weight"), vec![HIDDEN]);
            add(format!("{p}{ln}.bias"), vec![HIDDEN]);
        }
    }
    add("pooler.dense.weight".into(), vec![HIDDEN, HIDDEN]);
    add("pooler.dense.bias".into(), vec![HIDDEN]);
    t
}

pub fn config_json() -> serde_json::Value {
    serde_json::json!({
        "model_type": "bert", "_name_or_path": "tiny-bert", "vocab_size": vocab_size(), "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "intermediate_size": INTERMEDIATE,
        "hidden_act": "gelu", "max_position_embeddings": POSITIONS, "type_vocab_size": 2, "layer_norm_eps": 1e-12
    })
}

/// A BERT WordPiece `tokenizer.json` over `WORDS`, as Hugging Face tokenizers writes one.
pub fn tokenizer_json() -> String {
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
    let vocab: serde_json::Map<String, serde_json::Value> = specials
        .iter()
        .chain(WORDS.iter())
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(i, w)| serde_json::json!({"id": i, "content": w, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab}
    })
    .to_string()
}

/// Writes a tiny base model into `dir`.
pub fn write_base(dir: &Path) {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config_json()).expect("json"),
    )
    .expect("write");
    write_safetensors(&dir.join("model.safetensors"), &base_tensors());
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).expect("write");
}

pub fn adapter_config() -> serde_json::Value {
    serde_json::json!({
        "peft_type": "LORA", "task_type": "SEQ_CLS", "r": 2, "lora_alpha": 4, "lora_dropout": 0.1,
        "target_modules": ["query", "value"], "modules_to_save": ["classifier", "score"], "bias": "none",
        "use_dora": false, "use_rslora": false, "fan_in_fan_out": false, "base_model_name_or_path": "tiny-bert"
    })
}

/// Adapter tensors for `adapter_config()` on the tiny base, with a 3-label classifier.
pub fn adapter_tensors() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut t = BTreeMap::new();
    let mut seed = 100;
    for l in 0..LAYERS {
        for m in ["query", "value"] {
            let p = format!("base_model.model.bert.encoder.layer.{l}.attention.self.{m}");
            seed += 2;
            t.insert(
                format!("{p}.lora_A.weight"),
                (vec![2, HIDDEN], values(seed, 2 * HIDDEN)),
            );
            t.insert(
                format!("{p}.lora_B.weight"),
                (vec![HIDDEN, 2], values(seed + 1, 2 * HIDDEN)),
            );
        }
    }
    t.insert(
        "base_model.model.classifier.weight".into(),
        (vec![3, HIDDEN], values(7, 3 * HIDDEN)),
    );
    t.insert(
        "base_model.model.classifier.bias".into(),
        (vec![3], values(8, 3)),
    );
    t
}

/// Writes a tiny adapter (with `config.json` labels) into `dir`.
pub fn write_adapter(dir: &Path) {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_vec_pretty(&adapter_config()).expect("json"),
    )
    .expect("write");
    write_safetensors(&dir.join("adapter_model.safetensors"), &adapter_tensors());
    let labels = serde_json::json!({"id2label": {"0": "bad", "1": "neutral", "2": "good"}});
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec(&labels).expect("json"),
    )
    .expect("write");
}

/// The tasks of the tiny multi-task package the tests build: `sentiment` (neg, pos: whether a
/// text says "good") and `noun` (film, movie, none: what it is about).
pub const TASKS: [&str; 2] = ["sentiment", "noun"];

/// Training data over [`WORDS`] for `task` (one of [`TASKS`]), as JSON lines for
/// `autoglm adapt`: 48 texts of the same few phrases, each labelled for the task.
pub fn task_data(task: &str) -> String {
    let fillers = [
        "the film was",
        "a movie",
        "very",
        "the films were not",
        "!",
        "a",
    ];
    let lines: Vec<String> = (0..48)
        .map(|i| {
            let word = ["good", "bad", "great"][i % 3];
            let text = format!("{} {word} {}", fillers[i % 6], fillers[(i / 6) % 6]);
            let label = match task {
                "sentiment" if text.contains("good") => "pos",
                "sentiment" => "neg",
                "noun" if text.contains("film") => "film",
                "noun" if text.contains("movie") => "movie",
                "noun" => "none",
                other => panic!("no fixture data for task `{other}`"),
            };
            serde_json::json!({"text": text, "label": label}).to_string()
        })
        .collect();
    lines.join("\n")
}

/// Writes the tiny base model under `dir` (`base/`) and, with `adapter`, the tiny adapter
/// (`adapter/`), unless they are there already; returns the export options of the tiny
/// classification package (adapter merged) or embedding package (none).
pub fn options(dir: &Path, adapter: bool) -> crate::ExportOptions {
    let base = dir.join("base");
    if !base.exists() {
        write_base(&base);
    }
    let options = crate::ExportOptions::new(base);
    if !adapter {
        return options;
    }
    let adapter = dir.join("adapter");
    if !adapter.exists() {
        write_adapter(&adapter);
    }
    options.with_adapter(adapter)
}

/// The tiny classification package (adapter merged), its sources written under `dir`.
pub fn classification_package(dir: &Path) -> autoglm_package::Package {
    crate::export(&options(dir, true)).expect("the fixture package exports")
}
