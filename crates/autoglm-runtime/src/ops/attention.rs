//! **Fused attention** ([`Attention`]): the encoder's
//! `softmax(scale · Q·Kᵀ + key_bias) · V` as one operator, per (batch item, head), on the
//! `[batch, seq, heads, head_dim]` tensors the graph's reshapes produce, with nothing transposed
//! in the graph: per head, K and V are packed once for our f32 products ([`super::fgemm`],
//! AVX-512 / AVX2+FMA / NEON, chosen at run time), the queries and the
//! probabilities are read where they lie, the output is written in the layout the next `MatMul`
//! reads, and the softmax rows use our own vectorized passes ([`super::softmax`]). Queries go in blocks
//! of [`QUERY_BLOCK`] rows, so the scores of one block of one head are all that is ever held
//! (tract's plain plan holds every head's `seq × seq` scores at once). With a multi-thread
//! executor in scope (the backend's), the heads run in parallel on it: one text on two cores
//! then splits its attention too.
//!
//! `unsafe` here is only the heads' writes into their own columns of the shared output, after
//! the size checks they rely on. The kernel is tested against an f64 reference (below) on every
//! f32 tier and, through the rewrite, against tract's plain plan.

use super::fgemm;
use tract_hir::prelude::*;
use tract_hir::tract_core::internal::*;
use tract_hir::tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_hir::tract_core::ops::einsum::EinSum;
use tract_hir::tract_core::ops::math::{Add, Mul};
use tract_hir::tract_core::ops::nn::{Softmax, SoftmaxKind};

/// Rows of queries whose scores are computed at once (per head).
pub const QUERY_BLOCK: usize = 128;

/// The Q·Kᵀ product of the graphs our exporter writes, as tract declutters it (a: batch, m/n:
/// query/key, b: head, k: head width).
const SCORES_AXES: &str = "ambk,anbk->abmn";
/// The P·V product (a: batch, b: head, m: query, k: key, n: head width).
const CONTEXT_AXES: &str = "abmk,akbn->ambn";

/// `softmax(scale · Q·Kᵀ + bias) · V`: inputs Q, K, V `[batch, seq, heads, head_dim]` and the key
/// bias `[batch, 1, 1, seq]`; output `[batch, seq, heads, head_dim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Attention {
    pub scale: f32,
}

impl Eq for Attention {}

impl Op for Attention {
    fn name(&self) -> StaticName {
        "AutoglmAttention".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("scale: {}", self.scale)])
    }
    op_as_typed_op!();
}

impl TypedOp for Attention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec![f32::datum_type().fact(inputs[0].shape.clone())])
    }
    as_op!();
}

/// The shape of one call: batch items, sequence, heads, head width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl EvalOp for Attention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (q, k, v, bias) = args_4!(inputs);
        let shape = q.shape().to_vec();
        ensure!(
            shape.len() == 4 && k.shape() == shape.as_slice() && v.shape() == shape.as_slice(),
            "AutoglmAttention: Q {:?}, K {:?}, V {:?} must be one [batch, seq, heads, dim] shape",
            q.shape(),
            k.shape(),
            v.shape()
        );
        let dims = Dims {
            batch: shape[0],
            seq: shape[1],
            heads: shape[2],
            head_dim: shape[3],
        };
        ensure!(
            bias.shape() == [dims.batch, 1, 1, dims.seq],
            "AutoglmAttention: key bias {:?} for scores of {dims:?}",
            bias.shape()
        );
        // SAFETY: no value is read before it is written: `attention` writes every row of every
        // head's columns (each head's query blocks cover all rows), and the tensor is returned
        // only after it succeeded (on an error it is dropped unread).
        let mut out = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        {
            let (q, k, v, bias) = (
                q.try_as_plain_ram()?,
                k.try_as_plain_ram()?,
                v.try_as_plain_ram()?,
                bias.try_as_plain_ram()?,
            );
            let mut out_ram = out.try_as_plain_ram_mut()?;
            attention(
                dims,
                self.scale,
                [
                    q.as_slice::<f32>()?,
                    k.as_slice::<f32>()?,
                    v.as_slice::<f32>()?,
                ],
                bias.as_slice::<f32>()?,
                out_ram.as_slice_mut::<f32>()?,
                &tract_linalg::multithread::current_tract_executor(),
            )?;
        }
        Ok(tvec![out.into_tvalue()])
    }
}

/// The output buffer, shared by the heads: each writes only its own `head_dim` columns.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(pub(super) *mut f32);
// SAFETY: the tasks that share it write disjoint elements (one head's columns each) of a
// buffer that outlives them (the scope below joins every task before it returns).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Copies `values` to the buffer from element `at` on.
    ///
    /// # Safety
    /// `at + values.len()` is within the buffer, which is alive, and no other thread touches
    /// these elements meanwhile.
    pub(super) unsafe fn write(self, at: usize, values: &[f32]) {
        // SAFETY: as this function's.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.0.add(at), values.len()) }
    }

    /// The buffer's `len` elements from `at` on.
    ///
    /// # Safety
    /// `at + len` is within the buffer, which outlives `'a`, and nothing else reads or writes
    /// these elements while the slice lives.
    pub(super) unsafe fn slice<'a>(self, at: usize, len: usize) -> &'a mut [f32] {
        // SAFETY: as this function's.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}

/// The kernel: `qkv` and `out` are `[batch, seq, heads, head_dim]`, `bias` `[batch, seq]`; its
/// products on the process's f32 tier ([`fgemm::Tier::chosen`]).
pub fn attention(
    d: Dims,
    scale: f32,
    qkv: [&[f32]; 3],
    bias: &[f32],
    out: &mut [f32],
    executor: &tract_linalg::multithread::Executor,
) -> TractResult<()> {
    attention_on(fgemm::Tier::chosen(), d, scale, qkv, bias, out, executor)
}

/// [`attention`] on a given f32 tier.
pub fn attention_on(
    tier: fgemm::Tier,
    d: Dims,
    scale: f32,
    qkv: [&[f32]; 3],
    bias: &[f32],
    out: &mut [f32],
    executor: &tract_linalg::multithread::Executor,
) -> TractResult<()> {
    let total = d
        .batch
        .checked_mul(d.seq)
        .and_then(|x| x.checked_mul(d.heads))
        .and_then(|x| x.checked_mul(d.head_dim));
    ensure!(
        total.is_some_and(|total| qkv.iter().all(|t| t.len() == total) && out.len() == total)
            && d.batch.checked_mul(d.seq) == Some(bias.len()),
        "AutoglmAttention: buffer sizes do not match {d:?}"
    );
    if out.is_empty() {
        return Ok(());
    }
    let out = OutPtr(out.as_mut_ptr());
    let task = |b: usize, h: usize| -> TractResult<()> {
        SCRATCH.with_borrow_mut(|scratch| {
            one_head(tier, d, scale, qkv, bias, (b, h), scratch, |row, values| {
                let at = ((b * d.seq + row) * d.heads + h) * d.head_dim;
                // SAFETY: the sizes were checked above, so `at + head_dim` is within `out`;
                // each task writes its own head's columns only, and the scope of `run_tasks`
                // joins every task before `out`'s borrow ends.
                unsafe { out.write(at, &values[..d.head_dim]) };
            })
        })
    };
    let tasks: Vec<(usize, usize)> = (0..d.batch)
        .flat_map(|b| (0..d.heads).map(move |h| (b, h)))
        .collect();
    run_task_runs(&tasks, executor, |(b, h)| task(b, h))
}

/// [`run_tasks`] on `tasks` cut into one contiguous run per thread of `executor`, each run's
/// tasks in order. On two threads the fused attention's heads ran 5–16 % faster this way than
/// taken one by one, and the int8 products' panels a few % (BENCHMARKS.md, wave 27). The
/// price: a thread slowed by its core delays the call by its whole run, which taking tasks
/// one by one avoided (wave 14's reason for it).
pub(super) fn run_task_runs<T: Copy + Send + Sync>(
    tasks: &[T],
    executor: &tract_linalg::multithread::Executor,
    task: impl Fn(T) -> TractResult<()> + Sync,
) -> TractResult<()> {
    let threads = super::threads(executor);
    if threads <= 1 || tasks.len() <= 1 {
        return tasks.iter().try_for_each(|&t| task(t));
    }
    let run = tasks.len().div_ceil(threads);
    let starts: Vec<usize> = (0..tasks.len()).step_by(run).collect();
    run_tasks(&starts, executor, |start| {
        tasks[start..tasks.len().min(start + run)]
            .iter()
            .try_for_each(|&t| task(t))
    })
}

/// Runs `task` on every element of `tasks`: in parallel when the executor has a pool, each of
/// its threads taking the next task not yet taken until none is left (a thread slowed by
/// anything else on its core then takes fewer; fixed shares waited for the slowest thread:
/// BENCHMARKS.md, wave 14); else in order. The first error is returned. A task's result must
/// not depend on which thread runs it.
pub(super) fn run_tasks<T: Copy + Send + Sync>(
    tasks: &[T],
    executor: &tract_linalg::multithread::Executor,
    task: impl Fn(T) -> TractResult<()> + Sync,
) -> TractResult<()> {
    match executor {
        #[cfg(not(target_family = "wasm"))]
        tract_linalg::multithread::Executor::MultiThread(pool) if tasks.len() > 1 => {
            use std::sync::atomic::{AtomicUsize, Ordering};
            let threads = pool.current_num_threads().clamp(1, tasks.len());
            let next = AtomicUsize::new(0);
            let failed = std::sync::Mutex::new(None);
            pool.scope(|s| {
                for _ in 0..threads {
                    let (task, next, failed) = (&task, &next, &failed);
                    s.spawn(move |_| loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&t) = tasks.get(i) else {
                            return;
                        };
                        if let Err(e) = task(t) {
                            // No task starts after an error.
                            next.store(tasks.len(), Ordering::Relaxed);
                            failed
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                            return;
                        }
                    });
                }
            });
            match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        _ => tasks.iter().try_for_each(|&t| task(t)),
    }
}

/// A thread's working memory for one head at a time, kept between calls (grown, never
/// shrunk): a fresh zeroed buffer per head was 72 allocations and ~6 MB of zeroing per
/// inference at 128 tokens.
#[derive(Default)]
struct HeadScratch {
    /// Kᵀ `[head_dim, seq]` and V `[seq, head_dim]` of the head, packed.
    keys: fgemm::Packed,
    values: fgemm::Packed,
    /// One query block's scores `[rows, seq]` (from a 64-byte boundary on, [`aligned`]) and
    /// context rows `[rows, head_dim]`.
    scores: Vec<f32>,
    context: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<HeadScratch> =
        std::cell::RefCell::new(HeadScratch::default());
}

/// One (batch item, head): K and V packed, then blocks of queries: their scores, softmax (its
/// division applied to the context rows) and context rows, each context row handed to
/// `write(token, values)`.
#[allow(clippy::too_many_arguments)]
fn one_head(
    tier: fgemm::Tier,
    d: Dims,
    scale: f32,
    qkv: [&[f32]; 3],
    bias: &[f32],
    (b, h): (usize, usize),
    scratch: &mut HeadScratch,
    mut write: impl FnMut(usize, &[f32]),
) -> TractResult<()> {
    let row = d.heads * d.head_dim; // stride between tokens
    let base = b * d.seq * row + h * d.head_dim;
    let bias = &bias[b * d.seq..(b + 1) * d.seq];
    let (q, k, v) = (&qkv[0][base..], &qkv[1][base..], &qkv[2][base..]);
    let HeadScratch {
        keys,
        values,
        scores,
        context,
    } = scratch;
    // Kᵀ: B[i, j] = K[token j, i]; V: B[i, j] = V[token i, j].
    keys.pack(tier, k, (d.head_dim, d.seq), (1, row))?;
    values.pack(tier, v, (d.seq, d.head_dim), (row, 1))?;
    let block = QUERY_BLOCK.min(d.seq);
    if scores.len() < block * d.seq + 16 {
        scores.resize(block * d.seq + 16, 0.0);
    }
    context.resize(block * d.head_dim, 0.0);
    let scores = aligned(scores, block * d.seq);
    for start in (0..d.seq).step_by(block) {
        let rows = block.min(d.seq - start);
        let scores = &mut scores[..rows * d.seq];
        // scores[rows × seq] = scale · Q[start.., h] · K[.., h]ᵀ + bias
        let queries = fgemm::Strided {
            data: &q[start * row..],
            row,
        };
        let all_keys = keys.rows(0..d.head_dim);
        let store = fgemm::Store::AddRow(bias);
        fgemm::gemm(tier, rows, scale, queries, all_keys, store, scores, d.seq)?;
        // Each row's e^(s − max); the context rows are divided by the sums instead (head_dim
        // values a row, not seq).
        let mut inverse = [0f32; QUERY_BLOCK];
        for (r, scores) in scores.chunks_mut(d.seq).enumerate() {
            inverse[r] = super::softmax::softmax_unnormalized(tier, scores);
        }
        // context[rows × head_dim] = P · V[.., h]
        let context = &mut context[..rows * d.head_dim];
        let probabilities = fgemm::Strided {
            data: scores,
            row: d.seq,
        };
        let all_values = values.rows(0..d.seq);
        let store = fgemm::Store::Overwrite;
        fgemm::gemm(
            tier,
            rows,
            1.0,
            probabilities,
            all_values,
            store,
            context,
            d.head_dim,
        )?;
        for (r, values) in context.chunks_mut(d.head_dim).enumerate() {
            values.iter_mut().for_each(|v| *v *= inverse[r]);
            write(start + r, values);
        }
    }
    Ok(())
}

/// `len` values of `buf` (which has 16 more) starting at a 64-byte boundary: the scores' rows
/// then begin on whole cache lines wherever the allocator put the buffer (the softmax's
/// results do not depend on it, [`super::softmax`]; tract-linalg's kernels, used before,
/// split rows at aligned boundaries, so theirs did).
pub(super) fn aligned(buf: &mut [f32], len: usize) -> &mut [f32] {
    let skip = buf.as_ptr().align_offset(64);
    let skip = if skip + len <= buf.len() { skip } else { 0 };
    &mut buf[skip..skip + len]
}

/// Replaces every `softmax(scale · Q·Kᵀ + key_bias) · V` of the exporter's attention by
/// [`Attention`]; returns how many. Run before the key-bias adds are rewritten.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    super::fuse_matches(
        model,
        "autoglm fused attention",
        "autoglm_attention",
        |model, id| {
            Ok(matches(model, id)?
                .map(|(inputs, scale, context)| (inputs, Attention { scale }, context.into())))
        },
    )
}

pub(super) fn einsum_axes(model: &TypedModel, outlet: OutletId) -> Option<(&TypedNode, String)> {
    let node = model.node(outlet.node);
    let op = node.op_as::<EinSum>()?;
    (op.q_params.is_none() && op.operating_dt == f32::datum_type())
        .then(|| (node, op.axes.to_string()))
}

pub(super) fn is_bin<O: BinMiniOp>(node: &TypedNode) -> bool {
    node.op_as::<TypedBinOp>()
        .is_some_and(|bin| bin.0.is::<O>() && bin.1.is_none())
        && node.inputs.len() == 2
}

pub(super) fn single_use(model: &TypedModel, outlet: OutletId) -> bool {
    model.outlet_successors(outlet).len() == 1
}

/// `einsum(axes)` at `outlet`: its two inputs.
pub(super) fn einsum(model: &TypedModel, outlet: OutletId, axes: &str) -> Option<[OutletId; 2]> {
    let (node, a) = einsum_axes(model, outlet)?;
    (a == axes && outlet.slot == 0 && node.inputs.len() == 2)
        .then(|| [node.inputs[0], node.inputs[1]])
}

/// `add(mul(einsum(axes), scale), bias)` at `outlet`, each used once: the einsum's inputs,
/// the scale, the bias.
pub(super) fn biased_scores(
    model: &TypedModel,
    outlet: OutletId,
    axes: &str,
) -> TractResult<Option<([OutletId; 2], f32, OutletId)>> {
    let add = model.node(outlet.node);
    if !is_bin::<Add>(add) || !single_use(model, outlet) {
        return Ok(None);
    }
    let facts = model.node_input_facts(add.id)?;
    let (mul_slot, bias) = match (
        super::is_key_bias(facts[0], facts[1]),
        super::is_key_bias(facts[1], facts[0]),
    ) {
        (true, _) => (0, add.inputs[1]),
        (_, true) => (1, add.inputs[0]),
        _ => return Ok(None),
    };
    let mul = model.node(add.inputs[mul_slot].node);
    if !is_bin::<Mul>(mul) || !single_use(model, add.inputs[mul_slot]) {
        return Ok(None);
    }
    let mut scale = None;
    let mut scores = None;
    for &input in &mul.inputs {
        match &model.outlet_fact(input)?.konst {
            Some(k) if k.len() == 1 && k.datum_type() == f32::datum_type() => {
                scale = k.try_as_plain_ram()?.as_slice::<f32>()?.first().copied()
            }
            _ => scores = Some(input),
        }
    }
    let (Some(scale), Some(scores)) = (scale, scores) else {
        return Ok(None);
    };
    if !single_use(model, scores) {
        return Ok(None);
    }
    Ok(einsum(model, scores, axes).map(|inputs| (inputs, scale, bias)))
}

/// Whether `id` is the softmax of a fusable attention: then its Q, K, V and bias outlets, the
/// scale and the P·V node (whose output the fused op replaces).
#[allow(clippy::type_complexity)]
fn matches(model: &TypedModel, id: usize) -> TractResult<Option<([OutletId; 4], f32, usize)>> {
    let softmax = model.node(id);
    let Some(op) = softmax.op_as::<Softmax>() else {
        return Ok(None);
    };
    let fact = &softmax.outputs[0].fact;
    if fact.rank() != 4
        || fact.datum_type != f32::datum_type()
        || op.axes.as_slice() != [3]
        || op.kind != SoftmaxKind::Softmax
        || op.quant_output_dt.is_some()
    {
        return Ok(None);
    }
    // softmax → P·V, its only successor.
    if softmax.outputs.len() != 1 || !single_use(model, OutletId::new(id, 0)) {
        return Ok(None);
    }
    let succ = softmax.outputs[0].successors[0];
    let Some((context, axes)) = einsum_axes(model, OutletId::new(succ.node, 0)) else {
        return Ok(None);
    };
    if axes != CONTEXT_AXES || succ.slot != 0 {
        return Ok(None);
    }
    let v = context.inputs[1];
    // add(mul(Q·Kᵀ, scale), bias) → softmax.
    let Some(([q, k], scale, bias)) = biased_scores(model, softmax.inputs[0], SCORES_AXES)? else {
        return Ok(None);
    };
    let qf = model.outlet_fact(q)?;
    let same = [k, v]
        .iter()
        .map(|o| {
            model
                .outlet_fact(*o)
                .map(|f| f.shape == qf.shape && f.datum_type == qf.datum_type)
        })
        .collect::<TractResult<Vec<bool>>>()?;
    let bf = model.outlet_fact(bias)?;
    let bias_ok = bf.rank() == 4
        && bf.shape[0] == qf.shape[0]
        && bf.shape[1] == TDim::Val(1)
        && bf.shape[2] == TDim::Val(1)
        && bf.shape[3] == qf.shape[1];
    if qf.rank() != 4 || qf.datum_type != f32::datum_type() || !same.iter().all(|s| *s) || !bias_ok
    {
        return Ok(None);
    }
    Ok(Some(([q, k, v, bias], scale, context.id)))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The definition, in f64, one query at a time.
    fn reference(d: Dims, scale: f32, qkv: [&[f32]; 3], bias: &[f32]) -> Vec<f32> {
        let at = |b: usize, s: usize, h: usize, i: usize| {
            ((b * d.seq + s) * d.heads + h) * d.head_dim + i
        };
        let mut out = vec![0f32; qkv[0].len()];
        for b in 0..d.batch {
            for h in 0..d.heads {
                for m in 0..d.seq {
                    let scores: Vec<f64> = (0..d.seq)
                        .map(|n| {
                            let dot: f64 = (0..d.head_dim)
                                .map(|i| {
                                    f64::from(qkv[0][at(b, m, h, i)])
                                        * f64::from(qkv[1][at(b, n, h, i)])
                                })
                                .sum();
                            dot * f64::from(scale) + f64::from(bias[b * d.seq + n])
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for i in 0..d.head_dim {
                        let v: f64 = (0..d.seq)
                            .map(|n| e[n] / sum * f64::from(qkv[2][at(b, n, h, i)]))
                            .sum();
                        out[at(b, m, h, i)] = v as f32;
                    }
                }
            }
        }
        out
    }

    /// A seeded xorshift, values in [-1, 1).
    pub(in crate::ops) fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn the_kernel_equals_the_definition_on_shapes_tails_and_padding() {
        let pool = tract_linalg::multithread::Executor::multithread(2);
        // Sequences below, at and across the query block (tails), several batch items with
        // different padding, odd head widths.
        for (i, &(batch, seq, heads, head_dim)) in [
            (1, 1, 1, 1),
            (1, 7, 2, 3),
            (2, 33, 3, 32),
            (1, QUERY_BLOCK, 2, 16),
            (2, QUERY_BLOCK + 5, 4, 8),
            (3, 2 * QUERY_BLOCK + 31, 2, 32),
        ]
        .iter()
        .enumerate()
        {
            let d = Dims {
                batch,
                seq,
                heads,
                head_dim,
            };
            let n = batch * seq * heads * head_dim;
            let (q, k, v) = (
                values(n, 3 * i as u64 + 1),
                values(n, 3 * i as u64 + 2),
                values(n, 3 * i as u64 + 3),
            );
            // Item b has its last b·seq/4 keys padded (-1e9), as the graph's mask makes them.
            let bias: Vec<f32> = (0..batch)
                .flat_map(|b| {
                    (0..seq).map(move |s| {
                        if s >= 1 && s >= seq - b * seq / 4 {
                            -1e9
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            let want = reference(d, 0.177, [&q, &k, &v], &bias);
            for tier in fgemm::Tier::available() {
                let mut first: Option<Vec<f32>> = None;
                for executor in [
                    tract_linalg::multithread::Executor::SingleThread,
                    pool.clone(),
                ] {
                    let mut got = vec![f32::NAN; n];
                    attention_on(tier, d, 0.177, [&q, &k, &v], &bias, &mut got, &executor).unwrap();
                    let worst = autoglm_testkit::max_abs_diff(&got, &want);
                    assert!(worst < 1e-5, "{tier:?} {d:?}: max |Δ| {worst}");
                    // Bit for bit whatever the threads: an int8 graph quantizes this output.
                    match &first {
                        Some(f) => assert!(f == &got, "{tier:?} {d:?}: threads change the result"),
                        None => first = Some(got),
                    }
                }
                // Nor where the tensors lie: the same values one element further on.
                let shifted = |t: &[f32]| [&[0.0][..], t].concat();
                let (q1, k1, v1) = (shifted(&q), shifted(&k), shifted(&v));
                let mut out1 = vec![0f32; n + 1];
                let single = tract_linalg::multithread::Executor::SingleThread;
                attention_on(
                    tier,
                    d,
                    0.177,
                    [&q1[1..], &k1[1..], &v1[1..]],
                    &bias,
                    &mut out1[1..],
                    &single,
                )
                .unwrap();
                assert!(
                    first.as_deref() == Some(&out1[1..]),
                    "{tier:?} {d:?}: alignment changes the result"
                );
            }
        }
    }

    #[test]
    fn wrong_sizes_are_refused() {
        let d = Dims {
            batch: 1,
            seq: 4,
            heads: 2,
            head_dim: 2,
        };
        let x = vec![0f32; 16];
        let mut out = vec![0f32; 16];
        let exec = tract_linalg::multithread::Executor::SingleThread;
        assert!(attention(d, 1.0, [&x, &x, &x[..15]], &[0.0; 4], &mut out, &exec).is_err());
        assert!(attention(d, 1.0, [&x, &x, &x], &[0.0; 3], &mut out, &exec).is_err());
    }

    /// Every task runs once, on one thread or a pool, whatever the counts, taken one by one
    /// (`run_tasks`) or in runs (`run_task_runs`, each run's tasks in order); a failing task's
    /// error is returned (and the others' work is not mistaken for success).
    #[test]
    fn every_task_runs_once_and_errors_come_back() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        type Runner = fn(
            &[usize],
            &tract_linalg::multithread::Executor,
            &(dyn Fn(usize) -> TractResult<()> + Sync),
        ) -> TractResult<()>;
        let runners: [(&str, Runner); 2] = [
            ("one by one", |t, e, f| run_tasks(t, e, f)),
            ("in runs", |t, e, f| run_task_runs(t, e, f)),
        ];
        let executors = [
            tract_linalg::multithread::Executor::SingleThread,
            tract_linalg::multithread::Executor::multithread(2),
            tract_linalg::multithread::Executor::multithread(3),
        ];
        for (name, runner) in runners {
            for executor in &executors {
                for count in [0usize, 1, 2, 5, 7, 64] {
                    let runs: Vec<AtomicUsize> = (0..count).map(|_| AtomicUsize::new(0)).collect();
                    // The last task each run saw, to check that a run goes in order.
                    let last = std::sync::Mutex::new(std::collections::HashMap::new());
                    let tasks: Vec<usize> = (0..count).collect();
                    runner(&tasks, executor, &|i| {
                        runs[i].fetch_add(1, Ordering::Relaxed);
                        let thread = std::thread::current().id();
                        let mut last = last.lock().expect("not poisoned");
                        if name == "in runs" {
                            if let Some(before) = last.insert(thread, i) {
                                ensure!(before < i, "{before} then {i} in one run");
                            }
                        }
                        Ok(())
                    })
                    .expect("no task fails");
                    assert!(
                        runs.iter().all(|r| r.load(Ordering::Relaxed) == 1),
                        "{name}: {count}"
                    );
                }
                let tasks: Vec<usize> = (0..40).collect();
                let err = runner(&tasks, executor, &|i| {
                    if i == 17 {
                        bail!("task {i} failed")
                    }
                    Ok(())
                })
                .expect_err("a task fails");
                assert!(err.to_string().contains("task 17"), "{name}: {err}");
            }
        }
    }
}
