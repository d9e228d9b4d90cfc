//! The BERT encoder as an ONNX graph of standard ops, with symbolic `batch` and `sequence` dims.
//! Mirrors transformers' `models/bert/modeling_bert.py` (BertEmbeddings, BertSelfAttention,
//! BertSelfOutput, BertIntermediate, BertOutput, BertPooler) in eval mode.
//!
//! Two export options change the graph:
//! - **int8**: every encoder linear layer becomes DynamicQuantizeLinear → MatMulInteger with
//!   per-output-channel symmetric weight scales, and the word-embedding table is stored as int8
//!   with one scale per row (see [`quantize_columns`] for the 7-bit weight range);
//! - **window attention**: a blocked, banded attention whose cost grows linearly with the
//!   sequence (see [`Builder::window_attention`]).

use crate::error::Result;
use crate::hf::{BaseModel, Tensor};
use crate::onnx::{Attr, Graph};
use autoglm_package::{Attention, Pooling, Quantization};
use tract_onnx::pb::tensor_proto::DataType;

/// What the graph ends with.
#[derive(Debug, Clone)]
pub enum Head {
    /// Pooled sentence vector, optionally L2-normalized; output `sentence_embedding`.
    Embedding { pooling: Pooling, normalize: bool },
    /// `[CLS]` → pooler (dense + tanh) → classifier; output `logits`.
    Classifier { weight: Tensor, bias: Tensor },
}

/// How attention is laid out in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionGraph {
    /// Full n×n scores.
    Dense,
    /// Blocked sliding window + global tokens: linear in the sequence length.
    Window { window: usize, global: usize },
    /// The same pattern as `Window`, computed densely with an n×n mask: a reference for tests.
    WindowReference { window: usize, global: usize },
}

impl AttentionGraph {
    pub fn from_manifest(a: Attention) -> Self {
        match a {
            Attention::Dense => AttentionGraph::Dense,
            Attention::Window { window, global } => AttentionGraph::Window { window, global },
        }
    }

    /// Sequences must be padded to a multiple of this (the window's block size).
    pub fn sequence_multiple(&self) -> usize {
        match *self {
            AttentionGraph::Dense => 1,
            AttentionGraph::Window { window, .. }
            | AttentionGraph::WindowReference { window, .. } => block_size(window),
        }
    }
}

/// Each token attends to `window / 2` tokens on either side; blocks of that size let a query
/// block find all its keys in itself and its two neighbours.
pub fn block_size(window: usize) -> usize {
    (window / 2).max(1)
}

pub const INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];
const DIMS: [&str; 2] = ["batch", "sequence"];

/// Added to the attention scores of masked-out keys (HF uses the dtype's minimum; any value that
/// underflows `exp` to 0 gives the same probabilities).
const MASKED: f32 = -1.0e9;

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

/// Per-sequence tensors every layer's attention needs.
struct MaskInfo {
    /// `[batch, sequence]` float, 1 for real tokens.
    mask_f: String,
    /// `[batch, 1, 1, sequence]` additive key bias.
    key_bias: String,
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
        let key_bias = self.additive(&mask_f);
        let axes = self.g.i64_tensor("axes", &[2], &[1, 2]);
        let key_bias = self.g.node("Unsqueeze", &[&key_bias, &axes], &[]);
        let masks = MaskInfo {
            mask_f: mask_f.clone(),
            key_bias,
        };
        let window = self.window_masks(&masks)?;

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

    /// `(1 - m) · MASKED`: 0 where `m` is 1, a large negative number where it is 0.
    fn additive(&mut self, m: &str) -> String {
        let one = self.g.scalar_f32("one", 1.0);
        let inverted = self.g.node("Sub", &[&one, m], &[]);
        let masked = self.g.scalar_f32("masked", MASKED);
        self.g.node("Mul", &[&inverted, &masked], &[])
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
            (AttentionGraph::Window { .. }, Some(w)) => self.window_attention(&q, &k, &v, masks, w),
            (AttentionGraph::WindowReference { .. }, Some(w)) => {
                let bias = w
                    .reference_bias
                    .clone()
                    .expect("reference masks were built");
                self.dense_attention(&q, &k, &v, &bias)
            }
            _ => self.dense_attention(&q, &k, &v, &masks.key_bias),
        };
        let ctx = self.g.node(
            "Transpose",
            &[&ctx],
            &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        );
        let merge = self.g.i64_tensor("merge_heads", &[3], &[0, 0, h as i64]);
        Ok(self.g.node("Reshape", &[&ctx, &merge], &[]))
    }

    fn scale(&mut self) -> String {
        let dh = self.base.config.head_dim();
        self.g.scalar_f32("scale", 1.0 / (dh as f32).sqrt())
    }

    /// softmax(q·kᵀ·scale + bias)·v over all keys: `[b, heads, s, dh]` in and out.
    fn dense_attention(&mut self, q: &str, k: &str, v: &str, bias: &str) -> String {
        let kt = self
            .g
            .node("Transpose", &[k], &[("perm", Attr::Ints(vec![0, 1, 3, 2]))]);
        let scores = self.g.node("MatMul", &[q, &kt], &[]);
        let scale = self.scale();
        let scores = self.g.node("Mul", &[&scores, &scale], &[]);
        let scores = self.g.node("Add", &[&scores, bias], &[]);
        let probs = self
            .g
            .node("Softmax", &[&scores], &[("axis", Attr::Int(-1))]);
        self.g.node("MatMul", &[&probs, v], &[])
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

/// Masks shared by every layer's window attention, built once.
struct WindowMasks {
    /// Additive bias over the window keys of each query block, `[b, 1, blocks, block, 3·block]`.
    window_bias: String,
    /// Additive bias over the global keys, `[b, 1, 1, 1, G]`.
    global_bias: String,
    /// For the dense reference: the equivalent `[b, 1, s, s]` bias.
    reference_bias: Option<String>,
    block: usize,
    global: usize,
}

impl Builder<'_> {
    /// Splits axis 2 of `x` (`[b, heads|1, s, ...]`) into `[blocks, block]` and builds, for each
    /// block, itself with its two neighbours: `[…, blocks, 3·block, …]` along axis 3. Out-of-range
    /// neighbours are zeros.
    fn neighbours(&mut self, x: &str, block: usize, tail: &[i64]) -> String {
        let mut shape = vec![0, 0, -1, block as i64];
        shape.extend_from_slice(tail);
        let shape = self.g.i64_tensor("block_shape", &[shape.len()], &shape);
        let blocks = self.g.node("Reshape", &[x, &shape], &[]);
        let axis = self.g.i64_tensor("block_axis", &[1], &[2]);
        let (zero, one, minus_one, end) = (
            self.g.i64_tensor("i0", &[1], &[0]),
            self.g.i64_tensor("i1", &[1], &[1]),
            self.g.i64_tensor("im1", &[1], &[-1]),
            self.g.i64_tensor("iend", &[1], &[i64::MAX]),
        );
        let first = self.g.node("Slice", &[&blocks, &zero, &one, &axis], &[]);
        let nothing = self.g.scalar_f32("zero", 0.0);
        let zeros = self.g.node("Mul", &[&first, &nothing], &[]);
        let all_but_last = self
            .g
            .node("Slice", &[&blocks, &zero, &minus_one, &axis], &[]);
        let all_but_first = self.g.node("Slice", &[&blocks, &one, &end, &axis], &[]);
        let prev = self.g.node(
            "Concat",
            &[&zeros, &all_but_last],
            &[("axis", Attr::Int(2))],
        );
        let next = self.g.node(
            "Concat",
            &[&all_but_first, &zeros],
            &[("axis", Attr::Int(2))],
        );
        self.g.node(
            "Concat",
            &[&prev, &blocks, &next],
            &[("axis", Attr::Int(3))],
        )
    }

    /// The masks of window attention, shared by all layers (None for dense attention).
    fn window_masks(&mut self, masks: &MaskInfo) -> Result<Option<WindowMasks>> {
        let (window, global, reference) = match self.options.attention {
            AttentionGraph::Dense => return Ok(None),
            AttentionGraph::Window { window, global } => (window, global, false),
            AttentionGraph::WindowReference { window, global } => (window, global, true),
        };
        let block = block_size(window);
        let radius = (window / 2) as i64;
        self.g.set_scope("window");
        // Token positions 0..s from the mask's shape (CumSum of ones), as floats: [b, s].
        let zero = self.g.scalar_f32("zero", 0.0);
        let one = self.g.scalar_f32("one", 1.0);
        let ones = self.g.node("Mul", &[&masks.mask_f, &zero], &[]);
        let ones = self.g.node("Add", &[&ones, &one], &[]);
        let axis1 = self.g.i64_tensor("axis1", &[], &[1]);
        let pos = self
            .g
            .node("CumSum", &[&ones, &axis1], &[("exclusive", Attr::Int(1))]);
        // Key validity in the window part: a real token, in range, and not a global token (those
        // are attended through the global part; counting them twice would change the softmax).
        // [b, s] → [b, 1, s] so that `neighbours` sees axis 2 as the sequence.
        let unsq1 = self.g.i64_tensor("axis1", &[1], &[1]);
        let m = self.g.node("Unsqueeze", &[&masks.mask_f, &unsq1], &[]);
        let pos3 = self.g.node("Unsqueeze", &[&pos, &unsq1], &[]);
        let m_win = self.neighbours(&m, block, &[]); // [b, 1, blocks, 3·block]
                                                     // Out-of-range neighbour positions are 0-filled: give them -1 instead via pos + 1 - 1.
        let pos_plus = self.g.node("Add", &[&pos3, &one], &[]);
        let pos_win = self.neighbours(&pos_plus, block, &[]); // 0 where out of range, else pos + 1
                                                              // pos + 1 < G + ½ ⇔ pos < G; out-of-range keys (0) count as global, so they are masked.
        let g_limit = self.g.scalar_f32("global_limit", global as f32 + 0.5);
        let is_global = self.g.node("Less", &[&pos_win, &g_limit], &[]);
        let is_global = self.g.node(
            "Cast",
            &[&is_global],
            &[("to", Attr::Int(DataType::Float as i64))],
        );
        let not_global = self.g.node("Sub", &[&one, &is_global], &[]);
        let ok = self.g.node("Mul", &[&m_win, &not_global], &[]);
        let key_bias = self.additive(&ok); // [b, 1, blocks, 3·block]
        let axis3 = self.g.i64_tensor("axis3", &[1], &[3]);
        let key_bias = self.g.node("Unsqueeze", &[&key_bias, &axis3], &[]); // [b, 1, blocks, 1, 3·block]
                                                                            // The band inside a block triple: query i (0..block) sits at block + i; key j (0..3·block)
                                                                            // is allowed when |j - block - i| ≤ radius.
        let band: Vec<f32> = (0..block as i64)
            .flat_map(|i| {
                (0..3 * block as i64).map(move |j| {
                    if (j - block as i64 - i).abs() <= radius {
                        0.0
                    } else {
                        MASKED
                    }
                })
            })
            .collect();
        let band = self
            .g
            .f32_tensor("band", &[1, 1, 1, block, 3 * block], &band);
        let window_bias = self.g.node("Add", &[&key_bias, &band], &[]);
        // Global keys: the first G tokens, masked where they are padding.
        let (z, gl, ax) = (
            self.g.i64_tensor("i0", &[1], &[0]),
            self.g.i64_tensor("g", &[1], &[global as i64]),
            self.g.i64_tensor("ax", &[1], &[3]),
        );
        let global_bias = self.g.node("Slice", &[&masks.key_bias, &z, &gl, &ax], &[]); // [b, 1, 1, G]
        let global_bias = self.g.node("Unsqueeze", &[&global_bias, &axis3], &[]); // [b, 1, 1, 1, G]
        let reference_bias = reference.then(|| {
            // |i - j| ≤ radius, or i < G, or j < G; and j a real token.
            let col = self.g.i64_tensor("col", &[1], &[2]);
            let row_axis = self.g.i64_tensor("row", &[1], &[1]);
            let pi = self.g.node("Unsqueeze", &[&pos, &col], &[]); // [b, s, 1]
            let pj = self.g.node("Unsqueeze", &[&pos, &row_axis], &[]); // [b, 1, s]
            let d = self.g.node("Sub", &[&pi, &pj], &[]);
            let d = self.g.node("Abs", &[&d], &[]);
            let r = self.g.scalar_f32("radius", radius as f32 + 0.5);
            let near = self.g.node("Less", &[&d, &r], &[]);
            let g_raw = self.g.scalar_f32("global_limit", global as f32 - 0.5);
            let gi = self.g.node("Less", &[&pi, &g_raw], &[]);
            let gj = self.g.node("Less", &[&pj, &g_raw], &[]);
            let any = self.g.node("Or", &[&near, &gi], &[]);
            let any = self.g.node("Or", &[&any, &gj], &[]);
            let allowed = self.g.node(
                "Cast",
                &[&any],
                &[("to", Attr::Int(DataType::Float as i64))],
            );
            let allowed = self.g.node("Mul", &[&allowed, &m], &[]); // [b, s, s] · [b, 1, s]
            let bias = self.additive(&allowed);
            let head_axis = self.g.i64_tensor("heads", &[1], &[1]);
            self.g.node("Unsqueeze", &[&bias, &head_axis], &[]) // [b, 1, s, s]
        });
        Ok(Some(WindowMasks {
            window_bias,
            global_bias,
            reference_bias,
            block,
            global,
        }))
    }

    /// Blocked sliding-window attention with global tokens, `[b, heads, s, dh]` in and out, `s` a
    /// multiple of the block size (the runtime pads). Each query block scores 3 blocks of keys
    /// plus the G global keys: cost and memory grow linearly with `s`. The first G queries
    /// (global) attend to every key.
    fn window_attention(
        &mut self,
        q: &str,
        k: &str,
        v: &str,
        masks: &MaskInfo,
        w: &WindowMasks,
    ) -> String {
        let dh = self.base.config.head_dim() as i64;
        let block = w.block;
        let shape = self
            .g
            .i64_tensor("q_blocks", &[5], &[0, 0, -1, block as i64, dh]);
        let qb = self.g.node("Reshape", &[q, &shape], &[]); // [b, h, blocks, block, dh]
        let kw = self.neighbours(k, block, &[dh]); // [b, h, blocks, 3·block, dh]
        let vw = self.neighbours(v, block, &[dh]);
        let kwt = self.g.node(
            "Transpose",
            &[&kw],
            &[("perm", Attr::Ints(vec![0, 1, 2, 4, 3]))],
        );
        let scale = self.scale();
        let s_win = self.g.node("MatMul", &[&qb, &kwt], &[]); // [b, h, blocks, block, 3·block]
        let s_win = self.g.node("Mul", &[&s_win, &scale], &[]);
        let s_win = self.g.node("Add", &[&s_win, &w.window_bias], &[]);
        let mut scores = vec![s_win];
        let (z, gl, ax) = (
            self.g.i64_tensor("i0", &[1], &[0]),
            self.g.i64_tensor("g", &[1], &[w.global as i64]),
            self.g.i64_tensor("ax", &[1], &[2]),
        );
        let axis2 = self.g.i64_tensor("axis2", &[1], &[2]);
        let vg = if w.global > 0 {
            let kg = self.g.node("Slice", &[k, &z, &gl, &ax], &[]); // [b, h, G, dh]
            let vg = self.g.node("Slice", &[v, &z, &gl, &ax], &[]);
            let kgt = self.g.node(
                "Transpose",
                &[&kg],
                &[("perm", Attr::Ints(vec![0, 1, 3, 2]))],
            );
            let kgt = self.g.node("Unsqueeze", &[&kgt, &axis2], &[]); // [b, h, 1, dh, G]
            let s_g = self.g.node("MatMul", &[&qb, &kgt], &[]); // [b, h, blocks, block, G]
            let s_g = self.g.node("Mul", &[&s_g, &scale], &[]);
            scores.push(self.g.node("Add", &[&s_g, &w.global_bias], &[]));
            Some(vg)
        } else {
            None
        };
        let refs: Vec<&str> = scores.iter().map(String::as_str).collect();
        let scores = if refs.len() == 1 {
            scores[0].clone()
        } else {
            self.g.node("Concat", &refs, &[("axis", Attr::Int(-1))])
        };
        let probs = self
            .g
            .node("Softmax", &[&scores], &[("axis", Attr::Int(-1))]);
        let ctx = if let Some(vg) = &vg {
            let w3 = 3 * block as i64;
            let (s0, s1, s2, last) = (
                self.g.i64_tensor("i0", &[1], &[0]),
                self.g.i64_tensor("w3", &[1], &[w3]),
                self.g.i64_tensor("end", &[1], &[i64::MAX]),
                self.g.i64_tensor("last", &[1], &[-1]),
            );
            let p_win = self.g.node("Slice", &[&probs, &s0, &s1, &last], &[]);
            let p_g = self.g.node("Slice", &[&probs, &s1, &s2, &last], &[]);
            let c_win = self.g.node("MatMul", &[&p_win, &vw], &[]);
            let vg = self.g.node("Unsqueeze", &[vg, &axis2], &[]); // [b, h, 1, G, dh]
            let c_g = self.g.node("MatMul", &[&p_g, &vg], &[]);
            self.g.node("Add", &[&c_win, &c_g], &[])
        } else {
            self.g.node("MatMul", &[&probs, &vw], &[])
        };
        let back = self.g.i64_tensor("unblock", &[4], &[0, 0, -1, dh]);
        let ctx = self.g.node("Reshape", &[&ctx, &back], &[]); // [b, h, s, dh]
        if w.global == 0 {
            return ctx;
        }
        // Global queries attend to all keys (G rows: linear in s).
        let qg = self.g.node("Slice", &[q, &z, &gl, &ax], &[]); // [b, h, G, dh]
        let ctx_g = self.dense_attention(&qg, k, v, &masks.key_bias); // [b, h, G, dh]
        let end = self.g.i64_tensor("end", &[1], &[i64::MAX]);
        let rest = self.g.node("Slice", &[&ctx, &gl, &end, &ax], &[]);
        self.g
            .node("Concat", &[&ctx_g, &rest], &[("axis", Attr::Int(2))])
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

/// Symmetric per-column quantization of `w` `[in, out]` to `[-limit, limit]`: one scale per
/// output channel. Linear weights use limit 63 (7 bits): x86 CPUs without VNNI multiply u8×s8
/// pairs into saturating i16 sums (`vpmaddubsw`), so 255·127·2 would overflow and ONNX Runtime
/// would compute something else than the graph says; 255·63·2 fits.
pub fn quantize_columns(w: &Tensor, limit: i32) -> (Vec<i8>, Vec<f32>) {
    let (rows, cols) = (w.shape[0], w.shape[1]);
    let scales: Vec<f32> = (0..cols)
        .map(|c| {
            let max = (0..rows)
                .map(|r| w.data[r * cols + c].abs())
                .fold(0.0f32, f32::max);
            if max > 0.0 {
                max / limit as f32
            } else {
                1.0
            }
        })
        .collect();
    let q = w
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            (v / scales[i % cols])
                .round()
                .clamp(-limit as f32, limit as f32) as i8
        })
        .collect();
    (q, scales)
}

/// Symmetric per-row quantization of `w` `[rows, cols]` (embedding tables: one scale per token).
pub fn quantize_rows(w: &Tensor, limit: i32) -> (Vec<i8>, Vec<f32>) {
    let (q, scales) = quantize_columns(&w.t(), limit);
    let qt = Tensor::new(
        vec![w.shape[1], w.shape[0]],
        q.iter().map(|&v| v as f32).collect(),
    )
    .t();
    (qt.data.iter().map(|&v| v as i8).collect(), scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_quantization_round_trips_within_half_a_step() {
        let w = Tensor::new(vec![3, 2], vec![0.5, -2.0, -1.0, 1.0, 0.25, 0.0]);
        let (q, s) = quantize_columns(&w, 63);
        assert_eq!(s, vec![1.0 / 63.0, 2.0 / 63.0]);
        for (i, &v) in w.data.iter().enumerate() {
            let back = q[i] as f32 * s[i % 2];
            assert!((back - v).abs() <= s[i % 2] / 2.0 + 1e-7);
        }
        assert_eq!(q[1], -63);
        let (qr, sr) = quantize_rows(&w, 127);
        assert_eq!(sr.len(), 3);
        assert_eq!(qr[1], -127);
        assert_eq!(
            quantize_columns(&Tensor::new(vec![1, 1], vec![0.0]), 63).1,
            vec![1.0]
        );
    }

    #[test]
    fn positions_are_extended_by_copying() {
        let p = Tensor::new(vec![2, 1], vec![1.0, 2.0]);
        assert_eq!(extend_positions(&p, 5).data, vec![1.0, 2.0, 1.0, 2.0, 1.0]);
    }
}
