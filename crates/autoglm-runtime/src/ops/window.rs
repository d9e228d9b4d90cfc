//! **Fused window attention** ([`WindowAttention`]): the exporter's blocked sliding-window
//! attention with global keys (`autoglm-export`'s `window.rs`) as one operator. The graph builds,
//! per layer, each query block's three neighbouring key blocks (copies of K and V with zero
//! blocks at the ends), a `[batch, heads, blocks, block, 3·block + G]` score tensor (a concat of
//! window and global scores), its softmax, four slices of it and four products summed: at 2,048
//! tokens that was ~45 % of a run in slices, concats, packing and small products. Here each
//! (batch item, head, query block) scores its keys with our f32 products ([`super::fgemm`]; each
//! key block and V packed once per head, no neighbour copies), adds the band and global biases, applies softmax with tract-linalg's
//! kernels and accumulates the four products into one block of context rows: only one block's
//! scores are ever held (per head), and the heads run in parallel on the backend's threads.
//!
//! What it computes is exactly the graph's definition, including its edge cases: a key block
//! outside the sequence scores 0 (before its bias, which masks it) and contributes nothing.
//!
//! `unsafe` as in `attention.rs`: only each head's writes into its own part of the shared
//! output, after the size checks they rely on.

use super::attention::{
    aligned, biased_scores, einsum, is_bin, run_tasks, single_use, Kernels, OutPtr,
};
use super::fgemm;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::{Slice, TypedConcat};
use tract_onnx::tract_core::ops::math::Add;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

/// Scores of a query block against its key blocks (a: batch, b: head, c: block, m/n: query/key).
const WINDOW_SCORES: &str = "abcmk,abcnk->abcmn";
/// Scores of a query block against the global keys.
const GLOBAL_SCORES: &str = "abcmk,abnk->abcmn";
/// A slice of the probabilities times one neighbouring block of values.
const WINDOW_CONTEXT: &str = "abcmk,abckn->abcmn";
/// The global slice of the probabilities times the global values.
const GLOBAL_CONTEXT: &str = "abcmk,abkn->abcmn";

/// Inputs Q, K, V `[batch, heads, seq, head_dim]` (`seq` whole blocks), the band bias
/// `[batch, 1, blocks, block, 3·block]` and the global-key bias `[batch, 1, 1, 1, global]`;
/// output the context `[batch, heads, blocks, block, head_dim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowAttention {
    pub scale: f32,
    pub block: usize,
    pub global: usize,
}

impl Eq for WindowAttention {}

impl Op for WindowAttention {
    fn name(&self) -> StaticName {
        "AutoglmWindowAttention".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "scale: {}, block: {}, global: {}",
            self.scale, self.block, self.global
        )])
    }
    op_as_typed_op!();
}

impl TypedOp for WindowAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = &inputs[0].shape;
        ensure!(s.rank() == 4, "AutoglmWindowAttention: Q must be rank 4");
        let blocks = s[2].clone() / self.block as u64;
        let shape: TVec<TDim> = tvec![
            s[0].clone(),
            s[1].clone(),
            blocks,
            self.block.into(),
            s[3].clone()
        ];
        Ok(tvec![f32::datum_type().fact(shape)])
    }
    as_op!();
}

/// The shape of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowDims {
    pub batch: usize,
    pub heads: usize,
    pub blocks: usize,
    pub block: usize,
    pub head_dim: usize,
    pub global: usize,
}

impl WindowDims {
    fn seq(&self) -> usize {
        self.blocks * self.block
    }
    /// Columns of one query row's scores: three key blocks, then the global keys.
    fn width(&self) -> usize {
        3 * self.block + self.global
    }
}

impl EvalOp for WindowAttention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (q, k, v, band, global_bias) = args_5!(inputs);
        let shape = q.shape().to_vec();
        ensure!(
            shape.len() == 4
                && k.shape() == shape.as_slice()
                && v.shape() == shape.as_slice()
                && self.block > 0
                && shape[2] % self.block == 0
                && self.global <= shape[2],
            "AutoglmWindowAttention: Q {:?}, K {:?}, V {:?} must be one [batch, heads, seq, dim] \
             shape, seq whole blocks of {} and at least {} global tokens",
            q.shape(),
            k.shape(),
            v.shape(),
            self.block,
            self.global
        );
        let d = WindowDims {
            batch: shape[0],
            heads: shape[1],
            blocks: shape[2] / self.block,
            block: self.block,
            head_dim: shape[3],
            global: self.global,
        };
        ensure!(
            band.shape() == [d.batch, 1, d.blocks, d.block, 3 * d.block]
                && global_bias.shape() == [d.batch, 1, 1, 1, d.global],
            "AutoglmWindowAttention: biases {:?} and {:?} for {d:?}",
            band.shape(),
            global_bias.shape()
        );
        let mut out = Tensor::zero::<f32>(&[d.batch, d.heads, d.blocks, d.block, d.head_dim])?;
        {
            let (q, k, v, band, global_bias) = (
                q.try_as_plain_ram()?,
                k.try_as_plain_ram()?,
                v.try_as_plain_ram()?,
                band.try_as_plain_ram()?,
                global_bias.try_as_plain_ram()?,
            );
            let mut out_ram = out.try_as_plain_ram_mut()?;
            window_attention(
                d,
                self.scale,
                [
                    q.as_slice::<f32>()?,
                    k.as_slice::<f32>()?,
                    v.as_slice::<f32>()?,
                ],
                [band.as_slice::<f32>()?, global_bias.as_slice::<f32>()?],
                out_ram.as_slice_mut::<f32>()?,
                &tract_linalg::multithread::current_tract_executor(),
            )?;
        }
        Ok(tvec![out.into_tvalue()])
    }
}

/// The kernel: `qkv` and `out` are `[batch, heads, seq, head_dim]`, `bias` the band
/// `[batch, blocks, block, 3·block]` and the global-key bias `[batch, global]`; its products on
/// the process's f32 tier ([`fgemm::Tier::chosen`]).
pub fn window_attention(
    d: WindowDims,
    scale: f32,
    qkv: [&[f32]; 3],
    bias: [&[f32]; 2],
    out: &mut [f32],
    executor: &tract_linalg::multithread::Executor,
) -> TractResult<()> {
    window_attention_on(fgemm::Tier::chosen(), d, scale, qkv, bias, out, executor)
}

/// [`window_attention`] on a given f32 tier.
pub fn window_attention_on(
    tier: fgemm::Tier,
    d: WindowDims,
    scale: f32,
    qkv: [&[f32]; 3],
    bias: [&[f32]; 2],
    out: &mut [f32],
    executor: &tract_linalg::multithread::Executor,
) -> TractResult<()> {
    let total = d.batch * d.heads * d.seq() * d.head_dim;
    ensure!(
        qkv.iter().all(|t| t.len() == total)
            && out.len() == total
            && bias[0].len() == d.batch * d.blocks * d.block * 3 * d.block
            && bias[1].len() == d.batch * d.global
            && d.global <= d.seq(),
        "AutoglmWindowAttention: buffer sizes do not match {d:?}"
    );
    if total == 0 {
        return Ok(());
    }
    let kernels = Kernels::new()?;
    let out = OutPtr(out.as_mut_ptr());
    let tasks: Vec<(usize, usize)> = (0..d.batch)
        .flat_map(|b| (0..d.heads).map(move |h| (b, h)))
        .collect();
    run_tasks(&tasks, executor, |(b, h)| {
        let head = (b * d.heads + h) * d.seq() * d.head_dim;
        let scratch = Scratch::new(tier, d, [&qkv[1][head..], &qkv[2][head..]])?;
        (0..d.blocks).try_for_each(|c| {
            let context = one_block(tier, d, scale, qkv[0], bias, (b, h, c), &kernels, &scratch)?;
            // SAFETY: the sizes were checked above, so this block's `block · head_dim` values
            // are within `out`; each task writes only its own head, and `run_tasks` joins every
            // task before `out`'s borrow ends.
            unsafe { out.write(head + c * d.block * d.head_dim, &context) };
            Ok(())
        })
    })
}

/// One head's working memory: its keys and values packed once for the products, reused by
/// every query block.
struct Scratch {
    /// Kᵀ of each key block (`[head_dim, block]`), and of the global keys.
    key_blocks: Vec<fgemm::Packed>,
    global_keys: fgemm::Packed,
    /// V of the whole head, `[seq, head_dim]`.
    values: fgemm::Packed,
    /// One query block's scores (from a 64-byte boundary on: see [`aligned`]).
    scores: std::cell::RefCell<Vec<f32>>,
    row_bias: std::cell::RefCell<Vec<f32>>,
}

impl Scratch {
    /// `kv`: the head's K and V, from its first token on.
    fn new(tier: fgemm::Tier, d: WindowDims, kv: [&[f32]; 2]) -> TractResult<Scratch> {
        let dh = d.head_dim;
        let key_blocks = (0..d.blocks)
            .map(|n| {
                let mut packed = fgemm::Packed::default();
                packed.pack(tier, &kv[0][n * d.block * dh..], (dh, d.block), (1, dh))?;
                Ok(packed)
            })
            .collect::<TractResult<Vec<_>>>()?;
        let mut global_keys = fgemm::Packed::default();
        global_keys.pack(tier, kv[0], (dh, d.global), (1, dh))?;
        let mut values = fgemm::Packed::default();
        values.pack(tier, kv[1], (d.seq(), dh), (dh, 1))?;
        Ok(Scratch {
            key_blocks,
            global_keys,
            values,
            scores: vec![0f32; d.block * d.width() + 16].into(),
            row_bias: vec![0f32; d.width()].into(),
        })
    }
}

/// One query block `c` of head `h` of item `b`: its scores, softmax, and context rows
/// (`[block, head_dim]`), returned.
#[allow(clippy::too_many_arguments)]
fn one_block(
    tier: fgemm::Tier,
    d: WindowDims,
    scale: f32,
    queries: &[f32],
    bias: [&[f32]; 2],
    (b, h, c): (usize, usize, usize),
    kernels: &Kernels,
    scratch: &Scratch,
) -> TractResult<Vec<f32>> {
    let (block, dh, width) = (d.block, d.head_dim, d.width());
    let head = (b * d.heads + h) * d.seq() * dh;
    let q = fgemm::Strided {
        data: &queries[head + c * block * dh..],
        row: dh,
    };
    let mut scores = scratch.scores.borrow_mut();
    let scores = aligned(&mut scores, block * width);
    // Key blocks c-1, c, c+1 in columns [0, block), [block, 2·block), [2·block, 3·block); a
    // block outside the sequence is the graph's zero block: scores 0.
    let neighbours = |j: usize| (c + j).checked_sub(1).filter(|&n| n < d.blocks);
    // scores[.., col..] = scale · Q(block) · keys
    let score = |scores: &mut [f32], keys: fgemm::PackedRows, col: usize| {
        let store = fgemm::Store::Overwrite;
        fgemm::gemm(
            tier,
            block,
            scale,
            q,
            keys,
            store,
            &mut scores[col..],
            width,
        )
    };
    for j in 0..3 {
        match neighbours(j) {
            Some(n) => score(scores, scratch.key_blocks[n].rows(0..dh), j * block)?,
            None => {
                for row in scores.chunks_mut(width) {
                    row[j * block..(j + 1) * block].fill(0.0);
                }
            }
        }
    }
    if d.global > 0 {
        score(scores, scratch.global_keys.rows(0..dh), 3 * block)?;
    }
    // Bias, then softmax, row by row: the band row of this block, then the global keys'.
    let band = &bias[0][(b * d.blocks + c) * block * 3 * block..][..block * 3 * block];
    let global = &bias[1][b * d.global..(b + 1) * d.global];
    let mut row_bias = scratch.row_bias.borrow_mut();
    row_bias[3 * block..].copy_from_slice(global);
    for (row, band_row) in scores.chunks_mut(width).zip(band.chunks(3 * block)) {
        row_bias[..3 * block].copy_from_slice(band_row);
        kernels.softmax(row, &row_bias)?;
    }
    // context = P[:, window j] · V(block) for the blocks in range (the centre first, which is
    // always there), + P[:, global] · V[..global].
    let mut context = vec![0f32; block * dh];
    let mut first = true;
    let mut accumulate = |col: usize, keys: usize, values: usize| {
        let p = fgemm::Strided {
            data: &scores[col..],
            row: width,
        };
        let v = scratch.values.rows(values..values + keys);
        let store = if first {
            fgemm::Store::Overwrite
        } else {
            fgemm::Store::Accumulate
        };
        let r = fgemm::gemm(tier, block, 1.0, p, v, store, &mut context, dh);
        first = false;
        r
    };
    for j in [1, 0, 2] {
        if let Some(n) = neighbours(j) {
            accumulate(j * block, block, n * block)?;
        }
    }
    if d.global > 0 {
        accumulate(3 * block, d.global, 0)?;
    }
    Ok(context)
}

/// Replaces every window attention of the exporter's graph (the softmax over its concatenated
/// window and global scores, everything from Q, K and V to the summed context) by
/// [`WindowAttention`]; returns how many. Run before the key-bias adds are rewritten.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    super::fuse_matches(
        model,
        "autoglm fused window attention",
        "autoglm_window_attention",
        |model, id| Ok(matches(model, id)?.map(|f| (f.inputs, f.op, f.context))),
    )
}

struct Found {
    /// Q, K, V, band bias, global bias.
    inputs: [OutletId; 5],
    op: WindowAttention,
    /// The summed context the op replaces.
    context: OutletId,
}

fn op_at<O: Op>(model: &TypedModel, outlet: OutletId) -> Option<(&TypedNode, &O)> {
    let node = model.node(outlet.node);
    (outlet.slot == 0).then_some(())?;
    node.op_as::<O>().map(|op| (node, op))
}

/// `x` split into blocks: `[b, h, s, dh]` reshaped at axis 2 to `[b, h, blocks, block, dh]`;
/// then `x` and `block`.
fn unblocked(model: &TypedModel, outlet: OutletId) -> Option<(OutletId, usize)> {
    let (node, op) = op_at::<AxisOp>(model, outlet)?;
    let AxisOp::Reshape(2, from, to) = op else {
        return None;
    };
    let block = to.get(1)?.to_usize().ok()?;
    (from.len() == 1 && to.len() == 2 && block > 0).then_some((node.inputs[0], block))
}

/// `Slice(x, axis, start..end)` with concrete bounds: `x`, start, end.
fn sliced(model: &TypedModel, outlet: OutletId, axis: usize) -> Option<(OutletId, TDim, TDim)> {
    let (node, op) = op_at::<Slice>(model, outlet)?;
    (op.axis == axis).then(|| (node.inputs[0], op.start.clone(), op.end.clone()))
}

fn is_zeros(model: &TypedModel, outlet: OutletId) -> bool {
    let Ok(fact) = model.outlet_fact(outlet) else {
        return false;
    };
    let zero = |t: &Arc<Tensor>| {
        t.try_as_plain_ram()
            .ok()
            .and_then(|r| {
                r.as_slice::<f32>()
                    .ok()
                    .map(|v| v.iter().all(|x| *x == 0.0))
            })
            .unwrap_or(false)
    };
    fact.datum_type == f32::datum_type()
        && (fact.uniform.as_ref().is_some_and(zero) || fact.konst.as_ref().is_some_and(zero))
}

/// The three neighbour blocks of `x` along axis 2 as `neighbours` builds them: `[zeros,
/// x[..blocks-1]]`, `x`, `[x[1..], zeros]` (each `[b, h, blocks, block, dh]`). Returns the
/// unblocked tensor and the block size when `outlets` are exactly these.
fn neighbour_blocks(model: &TypedModel, outlets: [OutletId; 3]) -> Option<(OutletId, usize)> {
    let centre = outlets[1];
    let (x, block) = unblocked(model, centre)?;
    let blocks = model.outlet_fact(centre).ok()?.shape.get(2)?.clone();
    let shifted = |outlet: OutletId, zeros_first: bool| -> Option<()> {
        let (node, op) = op_at::<TypedConcat>(model, outlet)?;
        let [a, b] = node.inputs.as_slice() else {
            return None;
        };
        let (zeros, part) = if zeros_first { (*a, *b) } else { (*b, *a) };
        let (from, start, end) = sliced(model, part, 2)?;
        let (want_start, want_end) = if zeros_first {
            (TDim::Val(0), blocks.clone() - 1)
        } else {
            (TDim::Val(1), blocks.clone())
        };
        let same = |a: &TDim, b: &TDim| (a.clone() - b.clone()).simplify() == TDim::Val(0);
        let zeros_one_block = model
            .outlet_fact(zeros)
            .ok()
            .is_some_and(|f| f.rank() == 5 && f.shape[2] == TDim::Val(1));
        (op.axis == 2
            && is_zeros(model, zeros)
            && zeros_one_block
            && unblocked(model, from) == Some((x, block))
            && same(&start, &want_start)
            && same(&end, &want_end))
        .then_some(())
    };
    shifted(outlets[0], true)?;
    shifted(outlets[2], false)?;
    Some((x, block))
}

/// Whether `id` is the softmax of one of the exporter's window attentions (with global keys).
fn matches(model: &TypedModel, id: usize) -> TractResult<Option<Found>> {
    let softmax = model.node(id);
    let Some(op) = softmax.op_as::<Softmax>() else {
        return Ok(None);
    };
    let fact = &softmax.outputs[0].fact;
    if fact.rank() != 5
        || fact.datum_type != f32::datum_type()
        || op.axes.as_slice() != [4]
        || op.kind != SoftmaxKind::Softmax
        || op.quant_output_dt.is_some()
        || softmax.outputs.len() != 1
    {
        return Ok(None);
    }
    // Scores: concat(window scores, global scores) on the last axis.
    let Some((concat, cat)) = op_at::<TypedConcat>(model, softmax.inputs[0]) else {
        return Ok(None);
    };
    let [window_scores, global_scores] = concat.inputs.as_slice() else {
        return Ok(None);
    };
    if cat.axis != 4 || !single_use(model, softmax.inputs[0]) {
        return Ok(None);
    }
    let Some(([qb, kw], scale, band)) = biased_scores(model, *window_scores, WINDOW_SCORES)? else {
        return Ok(None);
    };
    let Some(([qb_g, kg], scale_g, global_bias)) =
        biased_scores(model, *global_scores, GLOBAL_SCORES)?
    else {
        return Ok(None);
    };
    if qb_g != qb || scale_g != scale {
        return Ok(None);
    }
    let Some((q, block)) = unblocked(model, qb) else {
        return Ok(None);
    };
    let Some((kw_node, kw_cat)) = op_at::<TypedConcat>(model, kw) else {
        return Ok(None);
    };
    let Ok(kw_parts) = <[OutletId; 3]>::try_from(kw_node.inputs.as_slice()) else {
        return Ok(None);
    };
    let k = match neighbour_blocks(model, kw_parts) {
        Some((k, b)) if kw_cat.axis == 3 && b == block => k,
        _ => return Ok(None),
    };
    let global = match sliced(model, kg, 2) {
        Some((from, TDim::Val(0), end)) if from == k => match end.to_usize() {
            Ok(g) if g > 0 => g,
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    // The context: four slices of the probabilities (three key blocks, the global keys), each
    // times its values, summed.
    let successors = model.outlet_successors(OutletId::new(id, 0));
    if successors.len() != 4 {
        return Ok(None);
    }
    let mut v = None;
    let mut window_values: [Option<OutletId>; 3] = [None; 3];
    let mut products = vec![];
    for inlet in successors {
        let slice_out = OutletId::new(inlet.node, 0);
        let Some((_, start, end)) = sliced(model, slice_out, 4) else {
            return Ok(None);
        };
        let (Ok(start), Ok(end)) = (start.to_usize(), end.to_usize()) else {
            return Ok(None);
        };
        if !single_use(model, slice_out) {
            return Ok(None);
        }
        let product = model.outlet_successors(slice_out)[0];
        if product.slot != 0 {
            return Ok(None);
        }
        let product = OutletId::new(product.node, 0);
        if start == 3 * block && end == 3 * block + global {
            let Some([_, vg]) = einsum(model, product, GLOBAL_CONTEXT) else {
                return Ok(None);
            };
            match sliced(model, vg, 2) {
                Some((from, TDim::Val(0), end)) if end == TDim::from(global) => v = Some(from),
                _ => return Ok(None),
            }
        } else if start % block == 0 && end == start + block && end <= 3 * block {
            let Some([_, values]) = einsum(model, product, WINDOW_CONTEXT) else {
                return Ok(None);
            };
            window_values[start / block] = Some(values);
        } else {
            return Ok(None);
        }
        products.push(product);
    }
    let (Some(v), [Some(v0), Some(v1), Some(v2)]) = (v, window_values) else {
        return Ok(None);
    };
    if neighbour_blocks(model, [v0, v1, v2]) != Some((v, block)) {
        return Ok(None);
    }
    // The products are summed by a tree of adds, each value used once: its root is the context.
    let mut terms = products;
    while terms.len() > 1 {
        let next = terms.iter().enumerate().find_map(|(i, &t)| {
            let succ = model.outlet_successors(t);
            let [inlet] = succ else {
                return None;
            };
            let add = model.node(inlet.node);
            let other = add.inputs[1 - inlet.slot.min(1)];
            let j = terms.iter().position(|&u| u == other && u != t)?;
            (is_bin::<Add>(add) && single_use(model, other)).then_some((i, j, add.id))
        });
        let Some((i, j, add)) = next else {
            return Ok(None);
        };
        let (a, b) = (terms[i], terms[j]);
        terms.retain(|&u| u != a && u != b);
        terms.push(OutletId::new(add, 0));
    }
    let context = terms[0];
    // Shapes: Q, K, V one [b, h, s, dh] f32 shape; the biases what the op reads.
    let qf = model.outlet_fact(q)?;
    if qf.rank() != 4 || qf.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let same = [k, v].iter().all(|o| {
        model
            .outlet_fact(*o)
            .is_ok_and(|f| f.shape == qf.shape && f.datum_type == qf.datum_type)
    });
    let bf = model.outlet_fact(band)?;
    let gf = model.outlet_fact(global_bias)?;
    let sf = model.outlet_fact(*window_scores)?;
    let one = TDim::Val(1);
    let band_ok = bf.rank() == 5
        && sf.rank() == 5
        && bf.shape[0] == qf.shape[0]
        && bf.shape[1] == one
        && (2..5).all(|i| bf.shape[i] == sf.shape[i])
        && sf.shape[4] == TDim::from(3 * block);
    let global_ok = gf.rank() == 5
        && gf.shape[0] == qf.shape[0]
        && (1..4).all(|i| gf.shape[i] == one)
        && gf.shape[4] == TDim::from(global);
    let context_ok = model.outlet_fact(context)?.rank() == 5;
    if !same || !band_ok || !global_ok || !context_ok {
        return Ok(None);
    }
    Ok(Some(Found {
        inputs: [q, k, v, band, global_bias],
        op: WindowAttention {
            scale,
            block,
            global,
        },
        context,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attention::tests::values;

    /// The graph's definition in f64: each query block scores its three neighbouring key
    /// blocks (zero keys outside the sequence) and the global keys, plus the biases.
    fn reference(d: WindowDims, scale: f32, qkv: [&[f32]; 3], bias: [&[f32]; 2]) -> Vec<f32> {
        let at = |b: usize, h: usize, t: usize, i: usize| {
            ((b * d.heads + h) * d.seq() + t) * d.head_dim + i
        };
        let mut out = vec![0f32; qkv[0].len()];
        for b in 0..d.batch {
            for h in 0..d.heads {
                for c in 0..d.blocks {
                    for r in 0..d.block {
                        let m = c * d.block + r;
                        // (key token or None for a zero key, bias)
                        let mut keys: Vec<(Option<usize>, f64)> = vec![];
                        for j in 0..3 {
                            for x in 0..d.block {
                                let n = (c + j).checked_sub(1).filter(|&n| n < d.blocks);
                                let band =
                                    bias[0][((b * d.blocks + c) * d.block + r) * 3 * d.block
                                        + j * d.block
                                        + x];
                                keys.push((n.map(|n| n * d.block + x), f64::from(band)));
                            }
                        }
                        for g in 0..d.global {
                            keys.push((Some(g), f64::from(bias[1][b * d.global + g])));
                        }
                        let scores: Vec<f64> = keys
                            .iter()
                            .map(|(key, bias)| {
                                let dot: f64 = key.map_or(0.0, |n| {
                                    (0..d.head_dim)
                                        .map(|i| {
                                            f64::from(qkv[0][at(b, h, m, i)])
                                                * f64::from(qkv[1][at(b, h, n, i)])
                                        })
                                        .sum()
                                });
                                dot * f64::from(scale) + bias
                            })
                            .collect();
                        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                        let sum: f64 = e.iter().sum();
                        for i in 0..d.head_dim {
                            out[at(b, h, m, i)] = keys
                                .iter()
                                .zip(&e)
                                .map(|((key, _), e)| {
                                    key.map_or(0.0, |n| e / sum * f64::from(qkv[2][at(b, h, n, i)]))
                                })
                                .sum::<f64>()
                                as f32;
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_kernel_equals_the_definition_on_shapes_and_padding() {
        let pool = tract_linalg::multithread::Executor::multithread(2);
        for (i, &(batch, heads, blocks, block, head_dim, global)) in [
            (1, 1, 1, 1, 1, 1),
            (1, 2, 1, 4, 3, 1),
            (2, 3, 3, 2, 5, 1),
            (1, 2, 5, 8, 32, 2),
            (2, 1, 4, 16, 7, 3),
            (1, 12, 3, 128, 32, 1),
        ]
        .iter()
        .enumerate()
        {
            let d = WindowDims {
                batch,
                heads,
                blocks,
                block,
                head_dim,
                global,
            };
            let n = batch * heads * d.seq() * head_dim;
            let seed = 10 * i as u64;
            let (q, k, v) = (
                values(n, seed + 1),
                values(n, seed + 2),
                values(n, seed + 3),
            );
            // The band: |offset| within block (the exporter's radius), keys of padding (the
            // last b·seq/3 tokens of item b) and out-of-range blocks masked; the globals are
            // masked where they are padding.
            let seq = d.seq();
            let padded = |b: usize, t: usize| t >= 1 && t >= seq - b * seq / 3;
            let mut band = vec![0f32; batch * blocks * block * 3 * block];
            for b in 0..batch {
                for c in 0..blocks {
                    for r in 0..block {
                        for j in 0..3 * block {
                            let key = (c * block + j).checked_sub(block);
                            let near =
                                (j as isize - block as isize - r as isize).abs() <= block as isize;
                            let ok = key.is_some_and(|t| t < seq && t >= global && !padded(b, t))
                                && near;
                            band[((b * blocks + c) * block + r) * 3 * block + j] =
                                if ok { 0.0 } else { -1e9 };
                        }
                    }
                }
            }
            let global_bias: Vec<f32> = (0..batch)
                .flat_map(|b| (0..global).map(move |g| if padded(b, g) { -1e9 } else { 0.0 }))
                .collect();
            let want = reference(d, 0.177, [&q, &k, &v], [&band, &global_bias]);
            for tier in fgemm::Tier::available() {
                let mut first: Option<Vec<f32>> = None;
                for executor in [
                    tract_linalg::multithread::Executor::SingleThread,
                    pool.clone(),
                ] {
                    let mut got = vec![f32::NAN; n];
                    window_attention_on(
                        tier,
                        d,
                        0.177,
                        [&q, &k, &v],
                        [&band, &global_bias],
                        &mut got,
                        &executor,
                    )
                    .unwrap();
                    let worst = autoglm_testkit::max_abs_diff(&got, &want);
                    assert!(worst < 1e-5, "{tier:?} {d:?}: max |Δ| {worst}");
                    match &first {
                        Some(f) => assert!(f == &got, "{tier:?} {d:?}: threads change the result"),
                        None => first = Some(got),
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_sizes_are_refused() {
        let d = WindowDims {
            batch: 1,
            heads: 1,
            blocks: 2,
            block: 2,
            head_dim: 2,
            global: 1,
        };
        let x = vec![0f32; 8];
        let band = vec![0f32; 2 * 2 * 6];
        let mut out = vec![0f32; 8];
        let exec = tract_linalg::multithread::Executor::SingleThread;
        let run = |qkv: [&[f32]; 3], bias: [&[f32]; 2], out: &mut [f32]| {
            window_attention(d, 1.0, qkv, bias, out, &exec)
        };
        assert!(run([&x, &x, &x], [&band, &[0.0]], &mut out).is_ok());
        assert!(run([&x, &x, &x[..7]], [&band, &[0.0]], &mut out).is_err());
        assert!(run([&x, &x, &x], [&band[1..], &[0.0]], &mut out).is_err());
        assert!(run([&x, &x, &x], [&band, &[0.0, 0.0]], &mut out).is_err());
    }
}
