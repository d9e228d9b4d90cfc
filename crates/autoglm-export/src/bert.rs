//! The BERT encoder as an ONNX graph of standard ops, with symbolic `batch` and `sequence` dims.
//! Mirrors transformers' `models/bert/modeling_bert.py` (BertEmbeddings, BertSelfAttention,
//! BertSelfOutput, BertIntermediate, BertOutput, BertPooler) in eval mode.

use crate::error::Result;
use crate::hf::{BaseModel, Tensor};
use crate::onnx::{Attr, Graph};
use autoglm_package::Pooling;
use tract_onnx::pb::tensor_proto::DataType;

/// What the graph ends with.
#[derive(Debug, Clone)]
pub enum Head {
    /// Pooled sentence vector, optionally L2-normalized; output `sentence_embedding`.
    Embedding { pooling: Pooling, normalize: bool },
    /// `[CLS]` → pooler (dense + tanh) → classifier; output `logits`.
    Classifier { weight: Tensor, bias: Tensor },
}

pub const INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];
const DIMS: [&str; 2] = ["batch", "sequence"];

/// Added to the attention scores of masked-out keys (HF uses the dtype's minimum; any value that
/// underflows `exp` to 0 gives the same probabilities).
const MASKED: f32 = -1.0e9;

/// Builds the graph; returns the ONNX bytes and the output name.
pub fn build(base: &BaseModel, head: &Head) -> Result<(Vec<u8>, &'static str)> {
    let cfg = &base.config;
    let h = cfg.hidden_size;
    let mut g = Graph::default();
    let ids = g.input(INPUTS[0], DataType::Int64, &DIMS);
    let mask = g.input(INPUTS[1], DataType::Int64, &DIMS);
    let types = g.input(INPUTS[2], DataType::Int64, &DIMS);

    // Embeddings: word + position + token type, then LayerNorm.
    g.set_scope("embeddings");
    let word = base.tensor("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?;
    let pos = base.tensor(
        "embeddings.position_embeddings.weight",
        &[cfg.max_position_embeddings, h],
    )?;
    let tt = base.tensor(
        "embeddings.token_type_embeddings.weight",
        &[cfg.type_vocab_size, h],
    )?;
    let word = g.f32_tensor("word_embeddings", &word.shape, &word.data);
    let pos = g.f32_tensor("position_embeddings", &pos.shape, &pos.data);
    let tt = g.f32_tensor("token_type_embeddings", &tt.shape, &tt.data);
    let x_word = g.node("Gather", &[&word, &ids], &[("axis", Attr::Int(0))]);
    let seq_len = sequence_length(&mut g, &ids);
    let zero = g.i64_tensor("zero", &[1], &[0]);
    let pos_rows = g.node("Slice", &[&pos, &zero, &seq_len, &zero], &[]);
    let x_tt = g.node("Gather", &[&tt, &types], &[("axis", Attr::Int(0))]);
    let x = g.node("Add", &[&x_word, &pos_rows], &[]);
    let x = g.node("Add", &[&x, &x_tt], &[]);
    let mut x = layer_norm(&mut g, base, &x, "embeddings.LayerNorm")?;

    // The additive attention mask, [batch, 1, 1, sequence].
    g.set_scope("mask");
    let mask_f = g.node(
        "Cast",
        &[&mask],
        &[("to", Attr::Int(DataType::Float as i64))],
    );
    let one = g.scalar_f32("one", 1.0);
    let inverted = g.node("Sub", &[&one, &mask_f], &[]);
    let masked = g.scalar_f32("masked", MASKED);
    let bias = g.node("Mul", &[&inverted, &masked], &[]);
    let axes = g.i64_tensor("axes", &[2], &[1, 2]);
    let attention_bias = g.node("Unsqueeze", &[&bias, &axes], &[]);

    for layer in 0..cfg.num_hidden_layers {
        g.set_scope(format!("layer{layer}"));
        let p = format!("encoder.layer.{layer}.");
        let attn = self_attention(&mut g, base, &x, &attention_bias, &p)?;
        let attn = linear(
            &mut g,
            base,
            &attn,
            &format!("{p}attention.output.dense"),
            h,
            h,
        )?;
        let attn = g.node("Add", &[&attn, &x], &[]);
        let x1 = layer_norm(
            &mut g,
            base,
            &attn,
            &format!("{p}attention.output.LayerNorm"),
        )?;
        let inter = linear(
            &mut g,
            base,
            &x1,
            &format!("{p}intermediate.dense"),
            cfg.intermediate_size,
            h,
        )?;
        let inter = gelu(&mut g, &inter);
        let out = linear(
            &mut g,
            base,
            &inter,
            &format!("{p}output.dense"),
            h,
            cfg.intermediate_size,
        )?;
        let out = g.node("Add", &[&out, &x1], &[]);
        x = layer_norm(&mut g, base, &out, &format!("{p}output.LayerNorm"))?;
    }

    g.set_scope("head");
    let (value, output, dims) = match head {
        Head::Embedding { pooling, normalize } => {
            let pooled = pool(&mut g, base, &x, &mask_f, *pooling)?;
            let v = if *normalize {
                l2_normalize(&mut g, &pooled)
            } else {
                pooled
            };
            (
                v,
                "sentence_embedding",
                ["batch".to_string(), h.to_string()],
            )
        }
        Head::Classifier { weight, bias } => {
            let pooled = pool(&mut g, base, &x, &mask_f, Pooling::ClsPooler)?;
            let w = g.f32_tensor(
                "classifier.weight_t",
                &[h, weight.shape[0]],
                &weight.t().data,
            );
            let b = g.f32_tensor("classifier.bias", &bias.shape, &bias.data);
            let logits = g.node("MatMul", &[&pooled, &w], &[]);
            let logits = g.node("Add", &[&logits, &b], &[]);
            (
                logits,
                "logits",
                ["batch".to_string(), weight.shape[0].to_string()],
            )
        }
    };
    g.output(&value, output, DataType::Float, &[&dims[0], &dims[1]]);
    let doc = format!(
        "BERT encoder exported from {} by autoglm-export",
        base.name()
    );
    Ok((g.into_model_bytes(&doc), output))
}

/// `[sequence]` as a 1-element int64 tensor.
fn sequence_length(g: &mut Graph, ids: &str) -> String {
    let shape = g.node("Shape", &[ids], &[]);
    let one = g.i64_tensor("index1", &[1], &[1]);
    g.node("Gather", &[&shape, &one], &[("axis", Attr::Int(0))])
}

fn layer_norm(g: &mut Graph, base: &BaseModel, x: &str, name: &str) -> Result<String> {
    let h = base.config.hidden_size;
    let w = base.tensor(&format!("{name}.weight"), &[h])?;
    let b = base.tensor(&format!("{name}.bias"), &[h])?;
    let w = g.f32_tensor("ln.weight", &[h], &w.data);
    let b = g.f32_tensor("ln.bias", &[h], &b.data);
    Ok(g.node(
        "LayerNormalization",
        &[x, &w, &b],
        &[
            ("axis", Attr::Int(-1)),
            ("epsilon", Attr::Float(base.config.layer_norm_eps as f32)),
        ],
    ))
}

/// x · Wᵀ + b for the linear layer `name` (weight `[out, in]` as torch stores it).
fn linear(
    g: &mut Graph,
    base: &BaseModel,
    x: &str,
    name: &str,
    out_dim: usize,
    in_dim: usize,
) -> Result<String> {
    let w = base.tensor(&format!("{name}.weight"), &[out_dim, in_dim])?;
    let b = base.tensor(&format!("{name}.bias"), &[out_dim])?;
    let w = g.f32_tensor("weight_t", &[in_dim, out_dim], &w.t().data);
    let b = g.f32_tensor("bias", &[out_dim], &b.data);
    let y = g.node("MatMul", &[x, &w], &[]);
    Ok(g.node("Add", &[&y, &b], &[]))
}

/// Exact (erf) GELU: x · ½ · (1 + erf(x / √2)).
fn gelu(g: &mut Graph, x: &str) -> String {
    let inv_sqrt2 = g.scalar_f32("inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2);
    let one = g.scalar_f32("one", 1.0);
    let half = g.scalar_f32("half", 0.5);
    let scaled = g.node("Mul", &[x, &inv_sqrt2], &[]);
    let erf = g.node("Erf", &[&scaled], &[]);
    let erf1 = g.node("Add", &[&erf, &one], &[]);
    let y = g.node("Mul", &[x, &erf1], &[]);
    g.node("Mul", &[&y, &half], &[])
}

/// Multi-head self-attention; returns the context `[batch, sequence, hidden]` before the output dense.
fn self_attention(
    g: &mut Graph,
    base: &BaseModel,
    x: &str,
    attention_bias: &str,
    p: &str,
) -> Result<String> {
    let cfg = &base.config;
    let (h, heads, dh) = (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim());
    let split = g.i64_tensor("split_heads", &[4], &[0, 0, heads as i64, dh as i64]);
    let project = |g: &mut Graph, which: &str, perm: [i64; 4]| -> Result<String> {
        let y = linear(g, base, x, &format!("{p}attention.self.{which}"), h, h)?;
        let y = g.node("Reshape", &[&y, &split], &[]);
        Ok(g.node("Transpose", &[&y], &[("perm", Attr::Ints(perm.to_vec()))]))
    };
    let q = project(g, "query", [0, 2, 1, 3])?; // [b, heads, s, dh]
    let k = project(g, "key", [0, 2, 3, 1])?; // [b, heads, dh, s]
    let v = project(g, "value", [0, 2, 1, 3])?; // [b, heads, s, dh]
    let scores = g.node("MatMul", &[&q, &k], &[]);
    let scale = g.scalar_f32("scale", 1.0 / (dh as f32).sqrt());
    let scores = g.node("Mul", &[&scores, &scale], &[]);
    let scores = g.node("Add", &[&scores, attention_bias], &[]);
    let probs = g.node("Softmax", &[&scores], &[("axis", Attr::Int(-1))]);
    let ctx = g.node("MatMul", &[&probs, &v], &[]);
    let ctx = g.node(
        "Transpose",
        &[&ctx],
        &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
    );
    let merge = g.i64_tensor("merge_heads", &[3], &[0, 0, h as i64]);
    Ok(g.node("Reshape", &[&ctx, &merge], &[]))
}

/// Pools token states `[batch, sequence, hidden]` into `[batch, hidden]`.
fn pool(
    g: &mut Graph,
    base: &BaseModel,
    x: &str,
    mask_f: &str,
    pooling: Pooling,
) -> Result<String> {
    let h = base.config.hidden_size;
    match pooling {
        Pooling::Mean => {
            // sum(x · mask) / max(sum(mask), 1e-9), as sentence-transformers' Pooling.
            let axis2 = g.i64_tensor("axis2", &[1], &[2]);
            let m = g.node("Unsqueeze", &[mask_f, &axis2], &[]);
            let masked = g.node("Mul", &[x, &m], &[]);
            let axis1 = g.i64_tensor("axis1", &[1], &[1]);
            let sum = g.node(
                "ReduceSum",
                &[&masked, &axis1],
                &[("keepdims", Attr::Int(0))],
            );
            let count = g.node("ReduceSum", &[&m, &axis1], &[("keepdims", Attr::Int(0))]);
            let eps = g.scalar_f32("eps", 1e-9);
            let count = g.node("Max", &[&count, &eps], &[]);
            Ok(g.node("Div", &[&sum, &count], &[]))
        }
        Pooling::Cls | Pooling::ClsPooler => {
            let first = g.i64_tensor("cls", &[], &[0]);
            let cls = g.node("Gather", &[x, &first], &[("axis", Attr::Int(1))]);
            if pooling == Pooling::Cls {
                return Ok(cls);
            }
            let y = linear(g, base, &cls, "pooler.dense", h, h)?;
            Ok(g.node("Tanh", &[&y], &[]))
        }
    }
}

/// x / max(‖x‖₂, 1e-12) over the last axis, as torch's `F.normalize`.
fn l2_normalize(g: &mut Graph, x: &str) -> String {
    let sq = g.node("Mul", &[x, x], &[]);
    let axis = g.i64_tensor("axis", &[1], &[-1]);
    let sum = g.node("ReduceSum", &[&sq, &axis], &[("keepdims", Attr::Int(1))]);
    let norm = g.node("Sqrt", &[&sum], &[]);
    let eps = g.scalar_f32("eps", 1e-12);
    let norm = g.node("Max", &[&norm, &eps], &[]);
    g.node("Div", &[x, &norm], &[])
}
