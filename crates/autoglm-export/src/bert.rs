//! The BERT encoder as an ONNX graph of standard ops, with symbolic `batch` and `sequence` dims.
//! Mirrors transformers' `models/bert/modeling_bert.py` (BertEmbeddings, BertSelfAttention,
//! BertSelfOutput, BertIntermediate, BertOutput, BertPooler) in eval mode.
//!
//! Two export options change the graph:
//! - **int8**: every encoder linear layer becomes DynamicQuantizeLinear → MatMulInteger with
//!   per-output-channel symmetric weight scales, and the word-embedding table is stored as int8
//!   with one scale per row (see [`crate::quantize`] for the 7-bit weight range);
//! - **window attention**: a blocked, banded attention whose cost grows linearly with the
//!   sequence (see [`crate::window`]).

use crate::attention::{additive, dense_attention, MaskInfo};
use crate::error::Result;
use crate::hf::{BaseModel, Tensor};
use crate::onnx::{Attr, Graph};
use crate::window::{self, WindowMasks};
use autoglm_package::{Pooling, Quantization};

// Their home before attention and quantization had files of their own (tests name them here).
pub use crate::attention::{block_size, AttentionGraph};
pub use crate::quantize::{quantize_columns, quantize_rows};
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

/// Graph options.
#[derive(Debug, Clone, Copy)]
pub struct GraphOptions {
    pub quantization: Quantization,
    pub attention: AttentionGraph,
    /// Rows of the position table in the graph (≥ the model's when positions were extended).
    pub positions: usize,
}

/// Builds the graph; returns the ONNX bytes and the output name.
pub fn build(
    base: &BaseModel,
    head: &Head,
    options: GraphOptions,
) -> Result<(Vec<u8>, &'static str)> {
    let mut b = Builder {
        g: Graph::default(),
        base,
        options,
    };
    let output = b.encoder(head)?;
    let doc = format!(
        "BERT encoder exported from {} by autoglm-export",
        base.name()
    );
    Ok((b.g.into_model_bytes(&doc), output))
}

struct Builder<'a> {
    g: Graph,
    base: &'a BaseModel,
    options: GraphOptions,
}

impl Builder<'_> {
    fn encoder(&mut self, head: &Head) -> Result<&'static str> {
        let base = self.base;
        let cfg = &base.config;
        let h = cfg.hidden_size;
        let ids = self.g.input(INPUTS[0], DataType::Int64, &DIMS);
        let mask = self.g.input(INPUTS[1], DataType::Int64, &DIMS);
        let types = self.g.input(INPUTS[2], DataType::Int64, &DIMS);

        // Embeddings: word + position + token type, then LayerNorm.
        self.g.set_scope("embeddings");
        let x_word = self.word_embeddings(&ids)?;
        let pos = base.tensor(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, h],
        )?;
        let pos = extend_positions(pos, self.options.positions);
        let tt = base.tensor(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, h],
        )?;
        let pos = self
            .g
            .f32_tensor("position_embeddings", &pos.shape, &pos.data);
        let tt = self
            .g
            .f32_tensor("token_type_embeddings", &tt.shape, &tt.data);
        let seq_len = self.sequence_length(&ids);
        let zero = self.g.i64_tensor("zero", &[1], &[0]);
        let pos_rows = self.g.node("Slice", &[&pos, &zero, &seq_len, &zero], &[]);
        let x_tt = self
            .g
            .node("Gather", &[&tt, &types], &[("axis", Attr::Int(0))]);
        let x = self.g.node("Add", &[&x_word, &pos_rows], &[]);
        let x = self.g.node("Add", &[&x, &x_tt], &[]);
        let mut x = self.layer_norm(&x, "embeddings.LayerNorm")?;

        self.g.set_scope("mask");
        let mask_f = self.g.node(
            "Cast",
            &[&mask],
            &[("to", Attr::Int(DataType::Float as i64))],
        );
        let key_bias = additive(&mut self.g, &mask_f);
        let axes = self.g.i64_tensor("axes", &[2], &[1, 2]);
        let key_bias = self.g.node("Unsqueeze", &[&key_bias, &axes], &[]);
        let masks = MaskInfo {
            mask_f: mask_f.clone(),
            key_bias,
        };
        let window = window::masks(&mut self.g, self.options.attention, &masks)?;

        for layer in 0..cfg.num_hidden_layers {
            self.g.set_scope(format!("layer{layer}"));
            let p = format!("encoder.layer.{layer}.");
            let attn = self.self_attention(&x, &masks, window.as_ref(), &p)?;
            let attn = self.linear(&attn, &format!("{p}attention.output.dense"), h, h)?;
            let attn = self.g.node("Add", &[&attn, &x], &[]);
            let x1 = self.layer_norm(&attn, &format!("{p}attention.output.LayerNorm"))?;
            let inter = self.linear(
                &x1,
                &format!("{p}intermediate.dense"),
                cfg.intermediate_size,
                h,
            )?;
            let inter = self.gelu(&inter);
            let out = self.linear(
                &inter,
                &format!("{p}output.dense"),
                h,
                cfg.intermediate_size,
            )?;
            let out = self.g.node("Add", &[&out, &x1], &[]);
            x = self.layer_norm(&out, &format!("{p}output.LayerNorm"))?;
        }

        self.g.set_scope("head");
        let (value, output, width) = match head {
            Head::Embedding { pooling, normalize } => {
                let pooled = self.pool(&x, &mask_f, *pooling)?;
                let v = if *normalize {
                    self.l2_normalize(&pooled)
                } else {
                    pooled
                };
                (v, "sentence_embedding", h)
            }
            Head::Classifier { weight, bias } => {
                let pooled = self.pool(&x, &mask_f, Pooling::ClsPooler)?;
                let w = self.g.f32_tensor(
                    "classifier.weight_t",
                    &[h, weight.shape[0]],
                    &weight.t().data,
                );
                let b = self
                    .g
                    .f32_tensor("classifier.bias", &bias.shape, &bias.data);
                let logits = self.g.node("MatMul", &[&pooled, &w], &[]);
                (
                    self.g.node("Add", &[&logits, &b], &[]),
                    "logits",
                    weight.shape[0],
                )
            }
        };
        self.g.output(
            &value,
            output,
            DataType::Float,
            &["batch", &width.to_string()],
        );
        Ok(output)
    }

    /// Word embeddings `[batch, sequence, hidden]`: a Gather from the fp32 table, or from an
    /// int8 table with one scale per row (the table is a quarter of MiniLM's weights).
    fn word_embeddings(&mut self, ids: &str) -> Result<String> {
        let cfg = &self.base.config;
        let word = self.base.tensor(
            "embeddings.word_embeddings.weight",
            &[cfg.vocab_size, cfg.hidden_size],
        )?;
        let gather = [("axis", Attr::Int(0))];
        match self.options.quantization {
            Quantization::None => {
                let table = self
                    .g
                    .f32_tensor("word_embeddings", &word.shape, &word.data);
                return Ok(self.g.node("Gather", &[&table, ids], &gather));
            }
            Quantization::Int8 => {}
        }
        let (q, scales) = quantize_rows(word, 127);
        let table = self.g.i8_tensor("word_embeddings_int8", &word.shape, &q);
        let scales = self
            .g
            .f32_tensor("word_embeddings_scale", &[cfg.vocab_size, 1], &scales);
        let rows = self.g.node("Gather", &[&table, ids], &gather);
        let rows = self.g.node(
            "Cast",
            &[&rows],
            &[("to", Attr::Int(DataType::Float as i64))],
        );
        let row_scales = self.g.node("Gather", &[&scales, ids], &gather);
        Ok(self.g.node("Mul", &[&rows, &row_scales], &[]))
    }

    /// `[sequence]` as a 1-element int64 tensor.
    fn sequence_length(&mut self, ids: &str) -> String {
        let shape = self.g.node("Shape", &[ids], &[]);
        let one = self.g.i64_tensor("index1", &[1], &[1]);
        self.g
            .node("Gather", &[&shape, &one], &[("axis", Attr::Int(0))])
    }

    fn layer_norm(&mut self, x: &str, name: &str) -> Result<String> {
        let h = self.base.config.hidden_size;
        let w = self.base.tensor(&format!("{name}.weight"), &[h])?;
        let b = self.base.tensor(&format!("{name}.bias"), &[h])?;
        let w = self.g.f32_tensor("ln.weight", &[h], &w.data);
        let b = self.g.f32_tensor("ln.bias", &[h], &b.data);
        let eps = self.base.config.layer_norm_eps as f32;
        Ok(self.g.node(
            "LayerNormalization",
            &[x, &w, &b],
            &[("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))],
        ))
    }

    /// x · Wᵀ + b for the linear layer `name` (weight `[out, in]` as torch stores it), in fp32 or,
    /// for int8 packages, as DynamicQuantizeLinear → MatMulInteger → per-channel rescale.
    fn linear(&mut self, x: &str, name: &str, out_dim: usize, in_dim: usize) -> Result<String> {
        let w = self
            .base
            .tensor(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let b = self.base.tensor(&format!("{name}.bias"), &[out_dim])?;
        let wt = w.t();
        let bias = self.g.f32_tensor("bias", &[out_dim], &b.data);
        let y = match self.options.quantization {
            Quantization::None => {
                let w = self.g.f32_tensor("weight_t", &[in_dim, out_dim], &wt.data);
                self.g.node("MatMul", &[x, &w], &[])
            }
            Quantization::Int8 => {
                let (q, scales) = quantize_columns(&wt, 63);
                let w = self.g.i8_tensor("weight_t_int8", &[in_dim, out_dim], &q);
                let w_scale = self.g.f32_tensor("weight_scale", &[out_dim], &scales);
                let xq = self.g.node_n("DynamicQuantizeLinear", &[x], &[], 3);
                let acc = self.g.node("MatMulInteger", &[&xq[0], &w, &xq[2]], &[]);
                let acc = self.g.node(
                    "Cast",
                    &[&acc],
                    &[("to", Attr::Int(DataType::Float as i64))],
                );
                let scale = self.g.node("Mul", &[&xq[1], &w_scale], &[]);
                self.g.node("Mul", &[&acc, &scale], &[])
            }
        };
        Ok(self.g.node("Add", &[&y, &bias], &[]))
    }

    /// Exact (erf) GELU: x · ½ · (1 + erf(x / √2)).
    fn gelu(&mut self, x: &str) -> String {
        let inv_sqrt2 = self
            .g
            .scalar_f32("inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2);
        let one = self.g.scalar_f32("one", 1.0);
        let half = self.g.scalar_f32("half", 0.5);
        let scaled = self.g.node("Mul", &[x, &inv_sqrt2], &[]);
        let erf = self.g.node("Erf", &[&scaled], &[]);
        let erf1 = self.g.node("Add", &[&erf, &one], &[]);
        let y = self.g.node("Mul", &[x, &erf1], &[]);
        self.g.node("Mul", &[&y, &half], &[])
    }

    /// Multi-head self-attention; returns the context `[batch, sequence, hidden]` before the
    /// output dense.
    fn self_attention(
        &mut self,
        x: &str,
        masks: &MaskInfo,
        window: Option<&WindowMasks>,
        p: &str,
    ) -> Result<String> {
        let cfg = &self.base.config;
        let (h, heads, dh) = (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim());
        let split = self
            .g
            .i64_tensor("split_heads", &[4], &[0, 0, heads as i64, dh as i64]);
        let project = |this: &mut Self, which: &str| -> Result<String> {
            let y = this.linear(x, &format!("{p}attention.self.{which}"), h, h)?;
            let y = this.g.node("Reshape", &[&y, &split], &[]);
            Ok(this.g.node(
                "Transpose",
                &[&y],
                &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
            ))
        };
        // [batch, heads, sequence, head_dim] each.
        let q = project(self, "query")?;
        let k = project(self, "key")?;
        let v = project(self, "value")?;
        let ctx = match (self.options.attention, window) {
            (AttentionGraph::Window { .. }, Some(w)) => {
                window::attention(&mut self.g, &q, &k, &v, masks, w, dh)
            }
            (AttentionGraph::WindowReference { .. }, Some(w)) => {
                let bias = w
                    .reference_bias
                    .clone()
                    .expect("reference masks were built");
                dense_attention(&mut self.g, &q, &k, &v, &bias, dh)
            }
            _ => dense_attention(&mut self.g, &q, &k, &v, &masks.key_bias, dh),
        };
        let ctx = self.g.node(
            "Transpose",
            &[&ctx],
            &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        );
        let merge = self.g.i64_tensor("merge_heads", &[3], &[0, 0, h as i64]);
        Ok(self.g.node("Reshape", &[&ctx, &merge], &[]))
    }

    /// Pools token states `[batch, sequence, hidden]` into `[batch, hidden]`.
    fn pool(&mut self, x: &str, mask_f: &str, pooling: Pooling) -> Result<String> {
        let h = self.base.config.hidden_size;
        match pooling {
            Pooling::Mean => {
                // sum(x · mask) / max(sum(mask), 1e-9), as sentence-transformers' Pooling.
                let axis2 = self.g.i64_tensor("axis2", &[1], &[2]);
                let m = self.g.node("Unsqueeze", &[mask_f, &axis2], &[]);
                let masked = self.g.node("Mul", &[x, &m], &[]);
                let axis1 = self.g.i64_tensor("axis1", &[1], &[1]);
                let sum = self.g.node(
                    "ReduceSum",
                    &[&masked, &axis1],
                    &[("keepdims", Attr::Int(0))],
                );
                let count = self
                    .g
                    .node("ReduceSum", &[&m, &axis1], &[("keepdims", Attr::Int(0))]);
                let eps = self.g.scalar_f32("eps", 1e-9);
                let count = self.g.node("Max", &[&count, &eps], &[]);
                Ok(self.g.node("Div", &[&sum, &count], &[]))
            }
            Pooling::Cls | Pooling::ClsPooler => {
                let first = self.g.i64_tensor("cls", &[], &[0]);
                let cls = self
                    .g
                    .node("Gather", &[x, &first], &[("axis", Attr::Int(1))]);
                if pooling == Pooling::Cls {
                    return Ok(cls);
                }
                // The pooler stays fp32: one small product per text.
                let w = self.base.tensor("pooler.dense.weight", &[h, h])?.t();
                let b = self.base.tensor("pooler.dense.bias", &[h])?;
                let w = self.g.f32_tensor("pooler.weight_t", &[h, h], &w.data);
                let b = self.g.f32_tensor("pooler.bias", &[h], &b.data);
                let y = self.g.node("MatMul", &[&cls, &w], &[]);
                let y = self.g.node("Add", &[&y, &b], &[]);
                Ok(self.g.node("Tanh", &[&y], &[]))
            }
        }
    }

    /// x / max(‖x‖₂, 1e-12) over the last axis, as torch's `F.normalize`.
    fn l2_normalize(&mut self, x: &str) -> String {
        let sq = self.g.node("Mul", &[x, x], &[]);
        let axis = self.g.i64_tensor("axis", &[1], &[-1]);
        let sum = self
            .g
            .node("ReduceSum", &[&sq, &axis], &[("keepdims", Attr::Int(1))]);
        let norm = self.g.node("Sqrt", &[&sum], &[]);
        let eps = self.g.scalar_f32("eps", 1e-12);
        let norm = self.g.node("Max", &[&norm, &eps], &[]);
        self.g.node("Div", &[x, &norm], &[])
    }
}

/// Position embeddings for `rows` positions: the learned table, repeated (Longformer's recipe:
/// copy the learned positions to fill the longer table; no retraining here).
fn extend_positions(pos: &Tensor, rows: usize) -> Tensor {
    let (n, h) = (pos.shape[0], pos.shape[1]);
    if rows <= n {
        return pos.clone();
    }
    let data = (0..rows)
        .flat_map(|r| pos.data[(r % n) * h..(r % n + 1) * h].iter().copied())
        .collect();
    Tensor::new(vec![rows, h], data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_extended_by_copying() {
        let p = Tensor::new(vec![2, 1], vec![1.0, 2.0]);
        assert_eq!(extend_positions(&p, 5).data, vec![1.0, 2.0, 1.0, 2.0, 1.0]);
    }
}
