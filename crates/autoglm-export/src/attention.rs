//! Attention in the graph: its layout (dense, or blocked window + global tokens), the masks
//! every layer shares, and dense attention `softmax(q·kᵀ·scale + bias)·v`.

use crate::onnx::{Attr, Graph};
use autoglm_package::Attention;

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

/// Added to the attention scores of masked-out keys (HF uses the dtype's minimum; any value that
/// underflows `exp` to 0 gives the same probabilities).
pub const MASKED: f32 = -1.0e9;

/// Per-sequence tensors every layer's attention needs.
pub struct MaskInfo {
    /// `[batch, sequence]` float, 1 for real tokens.
    pub mask_f: String,
    /// `[batch, 1, 1, sequence]` additive key bias.
    pub key_bias: String,
}

/// `(1 - m) · MASKED`: 0 where `m` is 1, a large negative number where it is 0.
pub fn additive(g: &mut Graph, m: &str) -> String {
    let one = g.scalar_f32("one", 1.0);
    let inverted = g.node("Sub", &[&one, m], &[]);
    let masked = g.scalar_f32("masked", MASKED);
    g.node("Mul", &[&inverted, &masked], &[])
}

/// `1/√head_dim`, the scores' scale.
pub fn scale(g: &mut Graph, head_dim: usize) -> String {
    let dh = head_dim;
    g.scalar_f32("scale", 1.0 / (dh as f32).sqrt())
}

/// softmax(q·kᵀ·scale + bias)·v over all keys: `[b, heads, s, dh]` in and out.
pub fn dense_attention(
    g: &mut Graph,
    q: &str,
    k: &str,
    v: &str,
    bias: &str,
    head_dim: usize,
) -> String {
    let kt = g.node("Transpose", &[k], &[("perm", Attr::Ints(vec![0, 1, 3, 2]))]);
    let scores = g.node("MatMul", &[q, &kt], &[]);
    let scale = scale(g, head_dim);
    let scores = g.node("Mul", &[&scores, &scale], &[]);
    let scores = g.node("Add", &[&scores, bias], &[]);
    let probs = g.node("Softmax", &[&scores], &[("axis", Attr::Int(-1))]);
    g.node("MatMul", &[&probs, v], &[])
}
