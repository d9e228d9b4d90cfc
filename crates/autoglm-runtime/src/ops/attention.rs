//! **Fused attention** ([`Attention`]): the encoder's
//! `softmax(scale · Q·Kᵀ + key_bias) · V` as one operator, per (batch item, head), on the
//! `[batch, seq, heads, head_dim]` tensors the graph's reshapes produce, with nothing transposed
//! or packed in between: the two products read Q, K and V in place through their strides
//! (`matrixmultiply`'s `sgemm`, which takes any strides and picks AVX-512 / AVX2+FMA / NEON at
//! run time), the output is written in place in the layout the next `MatMul` reads, and the
//! softmax rows use tract-linalg's own vectorized kernels. Queries go in blocks of
//! [`QUERY_BLOCK`] rows, so the scores of one block of one head are all that is ever held
//! (tract's plain plan holds every head's `seq × seq` scores at once). With a multi-thread
//! executor in scope (the backend's), the heads run in parallel on it: one text on two cores
//! then splits its attention too.
//!
//! `unsafe` is confined to this module: `sgemm` takes raw pointers and strides. Every call is
//! preceded by the bounds it relies on (checked, not assumed), and the kernel is tested against
//! a scalar reference (below) and, through the rewrite, against tract's plain plan.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::{Add, Mul};
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

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
        let mut out = Tensor::zero::<f32>(&shape)?;
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

/// The kernel: `qkv` and `out` are `[batch, seq, heads, head_dim]`, `bias` `[batch, seq]`.
pub fn attention(
    d: Dims,
    scale: f32,
    qkv: [&[f32]; 3],
    bias: &[f32],
    out: &mut [f32],
    executor: &tract_linalg::multithread::Executor,
) -> TractResult<()> {
    let total = d.batch * d.seq * d.heads * d.head_dim;
    ensure!(
        qkv.iter().all(|t| t.len() == total) && out.len() == total && bias.len() == d.batch * d.seq,
        "AutoglmAttention: buffer sizes do not match {d:?}"
    );
    if total == 0 {
        return Ok(());
    }
    let kernels = Kernels::new()?;
    let out = OutPtr(out.as_mut_ptr());
    let task = |b: usize, h: usize| -> TractResult<()> {
        // SAFETY: the sizes were checked above; (b, h) is in range; each task writes its own
        // head's columns only.
        unsafe { one_head(d, scale, qkv, bias, out, b, h, &kernels) }
    };
    let tasks: Vec<(usize, usize)> = (0..d.batch)
        .flat_map(|b| (0..d.heads).map(move |h| (b, h)))
        .collect();
    run_tasks(&tasks, executor, |(b, h)| task(b, h))
}

/// Runs `task` on every element of `tasks`: in parallel, in one contiguous share per thread,
/// when the executor has a pool; else in order. The first error is returned.
pub(super) fn run_tasks<T: Copy + Send + Sync>(
    tasks: &[T],
    executor: &tract_linalg::multithread::Executor,
    task: impl Fn(T) -> TractResult<()> + Sync,
) -> TractResult<()> {
    match executor {
        #[cfg(not(target_family = "wasm"))]
        tract_linalg::multithread::Executor::MultiThread(pool) if tasks.len() > 1 => {
            let threads = pool.current_num_threads().max(1);
            let results = std::sync::Mutex::new(Vec::new());
            pool.scope(|s| {
                for part in tasks.chunks(tasks.len().div_ceil(threads)) {
                    let (task, results) = (&task, &results);
                    s.spawn(move |_| {
                        let r = part.iter().try_for_each(|&t| task(t));
                        results.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                    });
                }
            });
            let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
            results.into_iter().collect()
        }
        _ => tasks.iter().try_for_each(|&t| task(t)),
    }
}

/// tract-linalg's vectorized row kernels (those of its own `Softmax`).
pub(super) struct Kernels {
    max: Box<dyn tract_linalg::reduce::Reduce<f32>>,
    exp_sum: Box<dyn tract_linalg::reduce::MapReduce<f32, f32>>,
    scale: Box<dyn tract_linalg::element_wise::ElementWise<f32, f32>>,
}

impl Kernels {
    pub(super) fn new() -> TractResult<Kernels> {
        use tract_linalg::Func;
        Ok(Kernels {
            max: Func::ReduceMax.reduce_f32()?,
            exp_sum: Func::Softmax2.map_reduce_f32()?,
            scale: Func::MulByScalar.ew_f32_param()?,
        })
    }

    /// `row += bias`, then softmax in place.
    pub(super) fn softmax(&self, row: &mut [f32], bias: &[f32]) -> TractResult<()> {
        for (s, b) in row.iter_mut().zip(bias) {
            *s += *b;
        }
        let max = self.max.run(row)?;
        let sum = self.exp_sum.run_with_params(row, max)?;
        self.scale.run_with_params(row, sum.recip())
    }
}

/// One (batch item, head): blocks of queries, their scores, softmax, and their context rows.
///
/// # Safety
/// `qkv[i]` and the buffer behind `out` hold `d.batch · d.seq · d.heads · d.head_dim` values,
/// `bias` `d.batch · d.seq`, `b < d.batch`, `h < d.heads`, and no other thread writes this
/// head's columns of `out`.
#[allow(clippy::too_many_arguments)]
unsafe fn one_head(
    d: Dims,
    scale: f32,
    qkv: [&[f32]; 3],
    bias: &[f32],
    out: OutPtr,
    b: usize,
    h: usize,
    kernels: &Kernels,
) -> TractResult<()> {
    let base = b * d.seq * d.heads * d.head_dim + h * d.head_dim;
    let bias = &bias[b * d.seq..(b + 1) * d.seq];
    let block = QUERY_BLOCK.min(d.seq);
    // `sgemm`'s results depend on where its output lies (its kernels store aligned and
    // unaligned tiles differently): both products write into 64-byte aligned scratch, so an
    // answer never depends on the allocator or on the thread (int8 graphs quantize it).
    // The scratch is the thread's own and kept between calls (grown, never shrunk): a fresh
    // zeroed buffer per head was 72 allocations and ~6 MB of zeroing per inference at 128 tokens.
    SCRATCH.with_borrow_mut(|buf| {
        let (scores_len, context_len) = (block * d.seq, block * d.head_dim);
        let (scores_room, context_room) = (scores_len + 16, context_len + 16);
        if buf.len() < scores_room + context_room {
            buf.resize(scores_room + context_room, 0.0);
        }
        let (scores_buf, context_buf) = buf.split_at_mut(scores_room);
        let scores_all = aligned(scores_buf, scores_len);
        let context_all = aligned(&mut context_buf[..context_room], context_len);
        // SAFETY: as this function's.
        unsafe {
            head_blocks(
                d,
                scale,
                qkv,
                bias,
                out,
                base,
                kernels,
                scores_all,
                context_all,
            )
        }
    })
}

thread_local! {
    /// Each thread's attention scratch: one block of scores and one of context rows.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The query blocks of one (batch item, head) whose first value is at `base`, with the
/// scratch blocks given.
///
/// # Safety
/// As [`one_head`]'s, with `base` the offset of (b, h).
#[allow(clippy::too_many_arguments)]
unsafe fn head_blocks(
    d: Dims,
    scale: f32,
    qkv: [&[f32]; 3],
    bias: &[f32],
    out: OutPtr,
    base: usize,
    kernels: &Kernels,
    scores_all: &mut [f32],
    context_all: &mut [f32],
) -> TractResult<()> {
    let row = (d.heads * d.head_dim) as isize; // stride between tokens
    let block = QUERY_BLOCK.min(d.seq);
    for start in (0..d.seq).step_by(block) {
        let rows = block.min(d.seq - start);
        let first = base + start * d.heads * d.head_dim;
        let scores = &mut scores_all[..rows * d.seq];
        // scores[rows × seq] = scale · Q[start.., h] · K[.., h]ᵀ
        unsafe {
            matrixmultiply::sgemm(
                rows,
                d.head_dim,
                d.seq,
                scale,
                qkv[0].as_ptr().add(first),
                row,
                1,
                qkv[1].as_ptr().add(base),
                1,
                row,
                0.0,
                scores.as_mut_ptr(),
                d.seq as isize,
                1,
            );
        }
        for r in scores.chunks_mut(d.seq) {
            kernels.softmax(r, bias)?;
        }
        // context[rows × head_dim] = P · V[.., h], then into out[start.., h].
        let context = &mut context_all[..rows * d.head_dim];
        unsafe {
            matrixmultiply::sgemm(
                rows,
                d.seq,
                d.head_dim,
                1.0,
                scores.as_ptr(),
                d.seq as isize,
                1,
                qkv[2].as_ptr().add(base),
                row,
                1,
                0.0,
                context.as_mut_ptr(),
                d.head_dim as isize,
                1,
            );
        }
        for (r, values) in context.chunks(d.head_dim).enumerate() {
            unsafe {
                std::ptr::copy_nonoverlapping(
                    values.as_ptr(),
                    out.0.add(first + r * row as usize),
                    d.head_dim,
                );
            }
        }
    }
    Ok(())
}

/// `len` values of `buf` (which has 16 more) starting at a 64-byte boundary.
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
            let mut first: Option<Vec<f32>> = None;
            for executor in [
                tract_linalg::multithread::Executor::SingleThread,
                pool.clone(),
            ] {
                let mut got = vec![f32::NAN; n];
                attention(d, 0.177, [&q, &k, &v], &bias, &mut got, &executor).unwrap();
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst < 1e-5, "{d:?}: max |Δ| {worst}");
                // Bit for bit whatever the threads: an int8 graph quantizes this output.
                match &first {
                    Some(f) => assert!(f == &got, "{d:?}: threads change the result"),
                    None => first = Some(got),
                }
            }
            // Nor where the tensors lie: the same values one element further on.
            let shifted = |t: &[f32]| [&[0.0][..], t].concat();
            let (q1, k1, v1) = (shifted(&q), shifted(&k), shifted(&v));
            let mut out1 = vec![0f32; n + 1];
            let single = tract_linalg::multithread::Executor::SingleThread;
            attention(
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
                "{d:?}: alignment changes the result"
            );
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
}
