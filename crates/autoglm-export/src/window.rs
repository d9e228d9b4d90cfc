//! Blocked sliding-window attention with global tokens: each query block scores its own and
//! its two neighbouring key blocks plus the global keys, so cost and memory grow linearly with
//! the sequence; the first G queries attend densely.

use crate::attention::{
    additive, block_size, dense_attention, scale, AttentionGraph, MaskInfo, MASKED,
};
use crate::error::Result;
use crate::onnx::{Attr, Graph};
use tract_onnx::pb::tensor_proto::DataType;

/// Masks shared by every layer's window attention, built once.
pub struct WindowMasks {
    /// Additive bias over the window keys of each query block, `[b, 1, blocks, block, 3·block]`.
    window_bias: String,
    /// Additive bias over the global keys, `[b, 1, 1, 1, G]`.
    global_bias: String,
    /// For the dense reference: the equivalent `[b, 1, s, s]` bias.
    pub reference_bias: Option<String>,
    block: usize,
    global: usize,
}

/// Splits axis 2 of `x` (`[b, heads|1, s, ...]`) into `[blocks, block]` and builds, for each
/// block, itself with its two neighbours: `[…, blocks, 3·block, …]` along axis 3. Out-of-range
/// neighbours are zeros.
fn neighbours(g: &mut Graph, x: &str, block: usize, tail: &[i64]) -> String {
    let mut shape = vec![0, 0, -1, block as i64];
    shape.extend_from_slice(tail);
    let shape = g.i64_tensor("block_shape", &[shape.len()], &shape);
    let blocks = g.node("Reshape", &[x, &shape], &[]);
    let axis = g.i64_tensor("block_axis", &[1], &[2]);
    let (zero, one, minus_one, end) = (
        g.i64_tensor("i0", &[1], &[0]),
        g.i64_tensor("i1", &[1], &[1]),
        g.i64_tensor("im1", &[1], &[-1]),
        g.i64_tensor("iend", &[1], &[i64::MAX]),
    );
    let first = g.node("Slice", &[&blocks, &zero, &one, &axis], &[]);
    let nothing = g.scalar_f32("zero", 0.0);
    let zeros = g.node("Mul", &[&first, &nothing], &[]);
    let all_but_last = g.node("Slice", &[&blocks, &zero, &minus_one, &axis], &[]);
    let all_but_first = g.node("Slice", &[&blocks, &one, &end, &axis], &[]);
    let prev = g.node(
        "Concat",
        &[&zeros, &all_but_last],
        &[("axis", Attr::Int(2))],
    );
    let next = g.node(
        "Concat",
        &[&all_but_first, &zeros],
        &[("axis", Attr::Int(2))],
    );
    g.node(
        "Concat",
        &[&prev, &blocks, &next],
        &[("axis", Attr::Int(3))],
    )
}

/// The masks of window attention, shared by all layers (None for dense attention).
pub fn masks(
    g: &mut Graph,
    attention: AttentionGraph,
    masks: &MaskInfo,
) -> Result<Option<WindowMasks>> {
    let (window, global, reference) = match attention {
        AttentionGraph::Dense => return Ok(None),
        AttentionGraph::Window { window, global } => (window, global, false),
        AttentionGraph::WindowReference { window, global } => (window, global, true),
    };
    let block = block_size(window);
    let radius = (window / 2) as i64;
    g.set_scope("window");
    // Token positions 0..s from the mask's shape (CumSum of ones), as floats: [b, s].
    let zero = g.scalar_f32("zero", 0.0);
    let one = g.scalar_f32("one", 1.0);
    let ones = g.node("Mul", &[&masks.mask_f, &zero], &[]);
    let ones = g.node("Add", &[&ones, &one], &[]);
    let axis1 = g.i64_tensor("axis1", &[], &[1]);
    let pos = g.node("CumSum", &[&ones, &axis1], &[("exclusive", Attr::Int(1))]);
    // Key validity in the window part: a real token, in range, and not a global token (those
    // are attended through the global part; counting them twice would change the softmax).
    // [b, s] → [b, 1, s] so that `neighbours` sees axis 2 as the sequence.
    let unsq1 = g.i64_tensor("axis1", &[1], &[1]);
    let m = g.node("Unsqueeze", &[&masks.mask_f, &unsq1], &[]);
    let pos3 = g.node("Unsqueeze", &[&pos, &unsq1], &[]);
    let m_win = neighbours(g, &m, block, &[]); // [b, 1, blocks, 3·block]
                                               // Out-of-range neighbour positions are 0-filled: give them -1 instead via pos + 1 - 1.
    let pos_plus = g.node("Add", &[&pos3, &one], &[]);
    let pos_win = neighbours(g, &pos_plus, block, &[]); // 0 where out of range, else pos + 1
                                                        // pos + 1 < G + ½ ⇔ pos < G; out-of-range keys (0) count as global, so they are masked.
    let g_limit = g.scalar_f32("global_limit", global as f32 + 0.5);
    let is_global = g.node("Less", &[&pos_win, &g_limit], &[]);
    let is_global = g.node(
        "Cast",
        &[&is_global],
        &[("to", Attr::Int(DataType::Float as i64))],
    );
    let not_global = g.node("Sub", &[&one, &is_global], &[]);
    let ok = g.node("Mul", &[&m_win, &not_global], &[]);
    let key_bias = additive(g, &ok); // [b, 1, blocks, 3·block]
    let axis3 = g.i64_tensor("axis3", &[1], &[3]);
    let key_bias = g.node("Unsqueeze", &[&key_bias, &axis3], &[]); // [b, 1, blocks, 1, 3·block]
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
    let band = g.f32_tensor("band", &[1, 1, 1, block, 3 * block], &band);
    let window_bias = g.node("Add", &[&key_bias, &band], &[]);
    // Global keys: the first G tokens, masked where they are padding.
    let (z, gl, ax) = (
        g.i64_tensor("i0", &[1], &[0]),
        g.i64_tensor("g", &[1], &[global as i64]),
        g.i64_tensor("ax", &[1], &[3]),
    );
    let global_bias = g.node("Slice", &[&masks.key_bias, &z, &gl, &ax], &[]); // [b, 1, 1, G]
    let global_bias = g.node("Unsqueeze", &[&global_bias, &axis3], &[]); // [b, 1, 1, 1, G]
    let reference_bias = reference.then(|| {
        // |i - j| ≤ radius, or i < G, or j < G; and j a real token.
        let col = g.i64_tensor("col", &[1], &[2]);
        let row_axis = g.i64_tensor("row", &[1], &[1]);
        let pi = g.node("Unsqueeze", &[&pos, &col], &[]); // [b, s, 1]
        let pj = g.node("Unsqueeze", &[&pos, &row_axis], &[]); // [b, 1, s]
        let d = g.node("Sub", &[&pi, &pj], &[]);
        let d = g.node("Abs", &[&d], &[]);
        let r = g.scalar_f32("radius", radius as f32 + 0.5);
        let near = g.node("Less", &[&d, &r], &[]);
        let g_raw = g.scalar_f32("global_limit", global as f32 - 0.5);
        let gi = g.node("Less", &[&pi, &g_raw], &[]);
        let gj = g.node("Less", &[&pj, &g_raw], &[]);
        let any = g.node("Or", &[&near, &gi], &[]);
        let any = g.node("Or", &[&any, &gj], &[]);
        let allowed = g.node(
            "Cast",
            &[&any],
            &[("to", Attr::Int(DataType::Float as i64))],
        );
        let allowed = g.node("Mul", &[&allowed, &m], &[]); // [b, s, s] · [b, 1, s]
        let bias = additive(g, &allowed);
        let head_axis = g.i64_tensor("heads", &[1], &[1]);
        g.node("Unsqueeze", &[&bias, &head_axis], &[]) // [b, 1, s, s]
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
pub fn attention(
    g: &mut Graph,
    q: &str,
    k: &str,
    v: &str,
    masks: &MaskInfo,
    w: &WindowMasks,
    head_dim: usize,
) -> String {
    let dh = head_dim as i64;
    let block = w.block;
    let shape = g.i64_tensor("q_blocks", &[5], &[0, 0, -1, block as i64, dh]);
    let qb = g.node("Reshape", &[q, &shape], &[]); // [b, h, blocks, block, dh]
    let kw = neighbours(g, k, block, &[dh]); // [b, h, blocks, 3·block, dh]
    let vw = neighbours(g, v, block, &[dh]);
    let kwt = g.node(
        "Transpose",
        &[&kw],
        &[("perm", Attr::Ints(vec![0, 1, 2, 4, 3]))],
    );
    let scale = scale(g, head_dim);
    let s_win = g.node("MatMul", &[&qb, &kwt], &[]); // [b, h, blocks, block, 3·block]
    let s_win = g.node("Mul", &[&s_win, &scale], &[]);
    let s_win = g.node("Add", &[&s_win, &w.window_bias], &[]);
    let mut scores = vec![s_win];
    let (z, gl, ax) = (
        g.i64_tensor("i0", &[1], &[0]),
        g.i64_tensor("g", &[1], &[w.global as i64]),
        g.i64_tensor("ax", &[1], &[2]),
    );
    let axis2 = g.i64_tensor("axis2", &[1], &[2]);
    let vg = if w.global > 0 {
        let kg = g.node("Slice", &[k, &z, &gl, &ax], &[]); // [b, h, G, dh]
        let vg = g.node("Slice", &[v, &z, &gl, &ax], &[]);
        let kgt = g.node(
            "Transpose",
            &[&kg],
            &[("perm", Attr::Ints(vec![0, 1, 3, 2]))],
        );
        let kgt = g.node("Unsqueeze", &[&kgt, &axis2], &[]); // [b, h, 1, dh, G]
        let s_g = g.node("MatMul", &[&qb, &kgt], &[]); // [b, h, blocks, block, G]
        let s_g = g.node("Mul", &[&s_g, &scale], &[]);
        scores.push(g.node("Add", &[&s_g, &w.global_bias], &[]));
        Some(vg)
    } else {
        None
    };
    let refs: Vec<&str> = scores.iter().map(String::as_str).collect();
    let scores = if refs.len() == 1 {
        scores[0].clone()
    } else {
        g.node("Concat", &refs, &[("axis", Attr::Int(-1))])
    };
    let probs = g.node("Softmax", &[&scores], &[("axis", Attr::Int(-1))]);
    let ctx = if let Some(vg) = &vg {
        let w3 = 3 * block as i64;
        let (s0, s1, s2, last) = (
            g.i64_tensor("i0", &[1], &[0]),
            g.i64_tensor("w3", &[1], &[w3]),
            g.i64_tensor("end", &[1], &[i64::MAX]),
            g.i64_tensor("last", &[1], &[-1]),
        );
        let p_win = g.node("Slice", &[&probs, &s0, &s1, &last], &[]);
        let p_g = g.node("Slice", &[&probs, &s1, &s2, &last], &[]);
        let c_win = g.node("MatMul", &[&p_win, &vw], &[]);
        let vg = g.node("Unsqueeze", &[vg, &axis2], &[]); // [b, h, 1, G, dh]
        let c_g = g.node("MatMul", &[&p_g, &vg], &[]);
        g.node("Add", &[&c_win, &c_g], &[])
    } else {
        g.node("MatMul", &[&probs, &vw], &[])
    };
    let back = g.i64_tensor("unblock", &[4], &[0, 0, -1, dh]);
    let ctx = g.node("Reshape", &[&ctx, &back], &[]); // [b, h, s, dh]
    if w.global == 0 {
        return ctx;
    }
    // Global queries attend to all keys (G rows: linear in s).
    let qg = g.node("Slice", &[q, &z, &gl, &ax], &[]); // [b, h, G, dh]
    let ctx_g = dense_attention(g, &qg, k, v, &masks.key_bias, head_dim); // [b, h, G, dh]
    let end = g.i64_tensor("end", &[1], &[i64::MAX]);
    let rest = g.node("Slice", &[&ctx, &gl, &end, &ax], &[]);
    g.node("Concat", &[&ctx_g, &rest], &[("axis", Attr::Int(2))])
}
