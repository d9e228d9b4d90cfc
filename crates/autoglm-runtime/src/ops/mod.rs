//! Our own tract operators, patched into the decluttered graph at load. The package stays
//! standard ONNX (ONNX Runtime runs the very same file); only tract's plan changes.
//!
//! **Key-bias add.** Attention adds the key-padding bias (`[batch, 1, 1, keys]`, 0 or -1e9) to
//! the scores (`[batch, heads, queries, keys]`). tract runs that broadcast `Add` through its
//! generic broadcasting path at ~13 ns per element: at 512 tokens the six of them took 28 % of
//! the whole inference (BENCHMARKS.md, "Where the time goes"). [`KeyBiasAdd`] adds the bias row
//! to every row of the scores, in place when the scores are not shared: a streaming add.
//!
//! **Residual add** ([`SameShapeAdd`]): the encoder's twelve residual adds (and the
//! embeddings' sum) add two tensors of one shape; with symbolic dims tract takes its generic
//! broadcasting path (~4 ns per element, 2.4 ms of 37 at 128 tokens). This one adds in place
//! into whichever input is not shared. Natively, those before a LayerNorm then go into it
//! ([`AddLayerNorm`]), and the embeddings' position add, which repeats over the batch, is
//! [`RepeatAdd`].
//!
//! **Fused attention** ([`Attention`], in `attention.rs`; native builds): the whole
//! `softmax(scale · Q·Kᵀ + key_bias) · V` of each layer in one operator, heads in parallel on
//! the backend's threads, its products on our f32 kernels (`fgemm.rs`).
//!
//! **Fused window attention** ([`WindowAttention`], in `window.rs`; native builds): the
//! exporter's blocked sliding-window attention with global keys, from Q, K and V to the summed
//! context, in one operator that never copies the neighbouring key blocks.
//!
//! **Dynamic quantization** ([`DynamicQuantize`], in `quantize.rs`): the int8 graph's
//! `DynamicQuantizeLinear`, bit-identical to tract's and vectorized.
//!
//! **LayerNorm** ([`LayerNorm`], in `layernorm.rs`): tract's five-operator expansion of ONNX
//! `LayerNormalization` as one kernel per row; [`AddLayerNorm`] with the residual add before it.
//!
//! **f32 linear layers** ([`LinearF32`], in `flinear.rs`; native builds): `x·W + bias` on our
//! f32 kernels, split over the backend's threads for a single text. Fused when the plan is
//! built ([`flinear::fuse`], after the plan cache).
//!
//! **Int8 linear layers** ([`LinearI8`], in `qlinear.rs`, on the integer kernels of
//! `qgemm.rs`, native and in the component): the product of the quantized activations by the int8 weights, its
//! zero-point correction, rescale and bias in one pass, on the CPU's integer instructions. The
//! exporter's layers are fused in the ONNX graph, before tract types it
//! ([`qlinear::fuse_onnx`]): load time.

#[allow(unsafe_code)]
pub mod attention;
#[allow(unsafe_code)]
pub mod fgemm;
#[allow(unsafe_code)]
pub mod flinear;
#[allow(unsafe_code)]
pub mod layernorm;
#[allow(unsafe_code)]
pub mod qgemm;
pub mod qlinear;
#[allow(unsafe_code)]
pub mod quantize;
#[allow(unsafe_code)]
pub mod softmax;
#[allow(unsafe_code)]
pub mod window;

pub use attention::Attention;
pub use flinear::LinearF32;
pub use layernorm::{AddLayerNorm, LayerNorm};
pub use qlinear::LinearI8;
pub use quantize::DynamicQuantize;
pub use window::WindowAttention;

use tract_hir::prelude::*;
use tract_hir::tract_core::internal::*;
use tract_hir::tract_core::ops::binary::TypedBinOp;
use tract_hir::tract_core::ops::math::Add;

/// What the backend fuses into a native plan after the plan cache (whose plans keep their
/// graph, so that these need no serializer): the f32 linear layers where
/// [`flinear::chosen`], the int8 layers' GELU ([`qlinear::fuse_gelu`]), the residual adds
/// into the LayerNorms after them ([`layernorm::fuse_residual`]; in the component, where the
/// adds are ~0.5 % of a run, it made no difference: BENCHMARKS.md, wave 27) and the
/// embeddings' position add ([`fuse_repeat_adds`]). The profile example does the same.
/// Returns how many nodes were replaced.
pub fn fuse_after_cache(model: &mut TypedModel) -> TractResult<usize> {
    Ok(flinear::fuse_if_chosen(model)?
        + qlinear::fuse_gelu(model)?
        + layernorm::fuse_residual(model)?
        + fuse_repeat_adds(model)?)
}

/// Below this many values an element-wise pass runs on one thread (a split costs a few
/// microseconds of scheduling: ~10 µs of this pass's work).
pub(crate) const SPLIT_VALUES: usize = 1 << 15;

/// `0..len` cut into one contiguous range per thread of `executor` (multiples of 64 values but
/// the last), or into one range without a pool or below [`SPLIT_VALUES`].
pub(crate) fn parts(
    len: usize,
    executor: &tract_linalg::multithread::Executor,
) -> Vec<(usize, usize)> {
    parts_of(len, 64, executor)
}

/// [`parts`] in multiples of `unit` values (but the last): whole rows of `unit` values.
pub(crate) fn parts_of(
    len: usize,
    unit: usize,
    executor: &tract_linalg::multithread::Executor,
) -> Vec<(usize, usize)> {
    let threads = threads(executor);
    if threads <= 1 || len < SPLIT_VALUES || unit == 0 {
        return vec![(0, len)];
    }
    let step = len.div_ceil(threads).next_multiple_of(unit);
    (0..len)
        .step_by(step)
        .map(|s| (s, len.min(s + step)))
        .collect()
}

/// The threads of `executor`'s pool (1 without one).
pub(crate) fn threads(executor: &tract_linalg::multithread::Executor) -> usize {
    match executor {
        #[cfg(not(target_family = "wasm"))]
        tract_linalg::multithread::Executor::MultiThread(pool) => pool.current_num_threads(),
        _ => 1,
    }
}

/// `f(offset, part)` on each of the [`parts`] of `data`, in parallel on `executor`'s pool.
pub(crate) fn for_parts_mut<T: Send>(
    data: &mut [T],
    executor: &tract_linalg::multithread::Executor,
    f: impl Fn(usize, &mut [T]) -> TractResult<()> + Sync,
) -> TractResult<()> {
    for_parts_of_mut(data, 64, executor, f)
}

/// [`for_parts_mut`] on [`parts_of`]`(data.len(), unit, executor)`: each part whole rows of
/// `unit` values.
pub(crate) fn for_parts_of_mut<T: Send>(
    data: &mut [T],
    unit: usize,
    executor: &tract_linalg::multithread::Executor,
    f: impl Fn(usize, &mut [T]) -> TractResult<()> + Sync,
) -> TractResult<()> {
    let ranges = parts_of(data.len(), unit, executor);
    if ranges.len() <= 1 {
        return f(0, data);
    }
    // Each task takes its own part (its lock is never contended).
    let mut rest = data;
    let mut owned = Vec::with_capacity(ranges.len());
    for &(start, end) in &ranges {
        let (part, tail) = std::mem::take(&mut rest).split_at_mut(end - start);
        owned.push(std::sync::Mutex::new((start, part)));
        rest = tail;
    }
    let ids: Vec<usize> = (0..owned.len()).collect();
    attention::run_tasks(&ids, executor, |i| {
        let mut part = owned[i].lock().unwrap_or_else(|e| e.into_inner());
        let (offset, values) = &mut *part;
        f(*offset, values)
    })
}

/// The kernel tier `requested` names (`AUTOGLM_INT8_KERNEL`, `AUTOGLM_F32_KERNEL`) if it is
/// among `available` (this CPU's tiers, best first); else the best one.
pub(crate) fn pick_tier<T: Copy + PartialEq>(
    available: &[T],
    name: impl Fn(T) -> &'static str,
    requested: Option<&str>,
) -> T {
    requested
        .and_then(|wanted| {
            available
                .iter()
                .copied()
                .find(|t| name(*t) == wanted.trim())
        })
        .unwrap_or(available[0])
}

/// `scores + bias` where `bias` has the scores' first axis, then 1s, then the scores' own
/// trailing axes: the bias block of batch item `b` is added to every block of `scores[b]` (dense
/// attention: a row of keys onto every query row of every head; window attention: the band of
/// every query block onto every head).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyBiasAdd;

impl Op for KeyBiasAdd {
    fn name(&self) -> StaticName {
        "AutoglmKeyBiasAdd".into()
    }
    op_as_typed_op!();
}

impl EvalOp for KeyBiasAdd {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (scores, bias) = args_2!(inputs);
        let mut scores = scores.into_tensor();
        let shape = scores.shape().to_vec();
        let b = bias.shape();
        let shared = (1..shape.len())
            .rev()
            .take_while(|&i| b.get(i) == shape.get(i))
            .count();
        ensure!(
            b.len() == shape.len()
                && shape.len() >= 2
                && b[0] == shape[0]
                && shared >= 1
                && b[1..shape.len() - shared].iter().all(|d| *d == 1),
            "AutoglmKeyBiasAdd: bias {:?} does not broadcast as a row over scores {:?}",
            bias.shape(),
            shape
        );
        let batch = shape[0];
        {
            let bias_ram = bias.try_as_plain_ram()?;
            let bias = bias_ram.as_slice::<f32>()?;
            let mut scores_ram = scores.try_as_plain_ram_mut()?;
            let scores = scores_ram.as_slice_mut::<f32>()?;
            add_key_bias(scores, bias, batch);
        }
        Ok(tvec![scores.into_tvalue()])
    }
}

/// The kernel: `scores` is `batch` equal parts, each of whole blocks of `bias.len() / batch`
/// values; block `j` of part `b` gets bias block `b` added.
pub fn add_key_bias(scores: &mut [f32], bias: &[f32], batch: usize) {
    if batch == 0 || scores.is_empty() {
        return;
    }
    let keys = bias.len() / batch;
    let per_item = scores.len() / batch;
    for (item, bias) in scores.chunks_mut(per_item).zip(bias.chunks(keys)) {
        for row in item.chunks_mut(keys) {
            for (s, b) in row.iter_mut().zip(bias) {
                *s += *b;
            }
        }
    }
}

impl TypedOp for KeyBiasAdd {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec![inputs[0].datum_type.fact(inputs[0].shape.clone())])
    }
    as_op!();
}

/// `a + b` for two f32 tensors of the same shape, written into whichever is not shared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SameShapeAdd;

impl Op for SameShapeAdd {
    fn name(&self) -> StaticName {
        "AutoglmSameShapeAdd".into()
    }
    op_as_typed_op!();
}

impl EvalOp for SameShapeAdd {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = args_2!(inputs);
        ensure!(
            a.shape() == b.shape(),
            "AutoglmSameShapeAdd: shapes {:?} and {:?} differ",
            a.shape(),
            b.shape()
        );
        // IEEE addition commutes exactly: either operand may take the result.
        let (mut sum, other) = unshared_first(a, b);
        {
            let other_ram = other.try_as_plain_ram()?;
            let other = other_ram.as_slice::<f32>()?;
            let mut sum_ram = sum.try_as_plain_ram_mut()?;
            for (s, o) in sum_ram.as_slice_mut::<f32>()?.iter_mut().zip(other) {
                *s += *o;
            }
        }
        Ok(tvec![sum.into_tvalue()])
    }
}

impl TypedOp for SameShapeAdd {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec![inputs[0].datum_type.fact(inputs[0].shape.clone())])
    }
    as_op!();
}

/// `a + b` for f32 tensors of one rank where `b` is 1 on `a`'s first axes and equal to it on
/// the others: `b` repeats over `a`'s first axes (the embeddings' positions `[1, seq, width]`
/// onto the tokens' `[batch, seq, width]`).
/// Written into `a` when it is not shared. tract takes its generic broadcasting path for it
/// (~1.2 ns per value, 60 µs at 128 tokens).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RepeatAdd;

impl Op for RepeatAdd {
    fn name(&self) -> StaticName {
        "AutoglmRepeatAdd".into()
    }
    op_as_typed_op!();
}

impl EvalOp for RepeatAdd {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = args_2!(inputs);
        let ones = b.shape().iter().take_while(|d| **d == 1).count();
        ensure!(
            a.rank() == b.rank() && a.shape()[ones..] == b.shape()[ones..],
            "AutoglmRepeatAdd: {:?} does not repeat over {:?}",
            b.shape(),
            a.shape()
        );
        let mut sum = a.into_tensor();
        {
            let b_ram = b.try_as_plain_ram()?;
            let b = b_ram.as_slice::<f32>()?;
            let mut sum_ram = sum.try_as_plain_ram_mut()?;
            if !b.is_empty() {
                for part in sum_ram.as_slice_mut::<f32>()?.chunks_exact_mut(b.len()) {
                    for (s, x) in part.iter_mut().zip(b) {
                        *s += *x;
                    }
                }
            }
        }
        Ok(tvec![sum.into_tvalue()])
    }
}

impl TypedOp for RepeatAdd {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec![f32::fact(inputs[0].shape.clone())])
    }
    as_op!();
}

/// Whether `b` repeats over `a` as [`RepeatAdd`] adds it: f32, not constant (tract folds
/// constant biases into its own operators), one rank, `b` 1 on `a`'s first axes (not all of
/// them, and not where `a` is 1 too) and equal to it on the others (at least one).
fn is_repeat(a: &TypedFact, b: &TypedFact) -> bool {
    let one = TDim::Val(1);
    let (ad, bd) = (a.shape.dims(), b.shape.dims());
    let ones = bd.iter().take_while(|d| **d == one).count();
    a.datum_type == f32::datum_type()
        && b.datum_type == f32::datum_type()
        && a.konst.is_none()
        && b.konst.is_none()
        && ad.len() == bd.len()
        && ones < bd.len()
        && ad[..ones].iter().any(|d| *d != one)
        && ad[ones..] == bd[ones..]
}

/// Replaces every `Add` of a tensor and one that repeats over it ([`is_repeat`]) by
/// [`RepeatAdd`]; returns how many. After the plan cache (native plans), so no serializer.
pub fn fuse_repeat_adds(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let Some(inputs) = add_operands(model, id, is_repeat)? else {
            continue;
        };
        let patch = TypedModelPatch::replace_single_op(model, model.node(id), &inputs, RepeatAdd)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// For a commutative pass over `a` and `b` written into one of them: the one no other value
/// shares (moved out, not copied; a copy of `a` if both are shared), and the other.
pub(crate) fn unshared_first(a: TValue, b: TValue) -> (Tensor, Arc<Tensor>) {
    let (a, b) = (a.into_arc_tensor(), b.into_arc_tensor());
    match Arc::try_unwrap(a) {
        Ok(a) => (a, b),
        Err(a) => match Arc::try_unwrap(b) {
            Ok(b) => (b, a),
            Err(b) => ((*a).clone(), b),
        },
    }
}

/// Whether an add of `a` and `b` is one [`SameShapeAdd`] does: f32, one shape, not a scalar.
fn is_same_shape(a: &TypedFact, b: &TypedFact) -> bool {
    a.datum_type == f32::datum_type()
        && b.datum_type == f32::datum_type()
        && a.shape == b.shape
        && a.rank() >= 2
        && a.shape.iter().any(|d| *d != TDim::Val(1))
}

/// Whether `bias` broadcasts onto `scores` as [`KeyBiasAdd`] adds it; f32 only. The bias's
/// first axis is the scores' (the batch), then comes a run of 1s where the scores have more (the
/// heads, and for dense attention the queries), then the scores' own trailing axes: dense
/// attention's key bias `[b, 1, 1, keys]`, window attention's band `[b, 1, blocks, block, 3·block]`
/// over scores `[b, heads, blocks, block, 3·block]`.
fn is_key_bias(scores: &TypedFact, bias: &TypedFact) -> bool {
    let (s, b) = (scores.shape.dims(), bias.shape.dims());
    let rank = s.len();
    if scores.datum_type != f32::datum_type()
        || bias.datum_type != f32::datum_type()
        || rank < 3
        || b.len() != rank
        || b[0] != s[0]
    {
        return false;
    }
    // The trailing axes the bias shares with the scores (at least the last one).
    let shared = (1..rank).rev().take_while(|&i| b[i] == s[i]).count();
    let middle = 1..rank - shared;
    shared >= 1
        && !middle.is_empty()
        && b[middle.clone()].iter().all(|d| *d == TDim::Val(1))
        && s[middle].iter().any(|d| *d != TDim::Val(1))
}

/// Wires `op` in place of every match of `find`, in evaluation order: a match gives the new
/// node's inputs, its op, and the outlet whose uses it takes over (the matched nodes that are
/// then unused go with `compact`). The new node is named after the matched one plus `suffix`.
/// Returns how many were replaced.
pub(crate) fn fuse_matches<I: AsRef<[OutletId]>, O: TypedOp>(
    model: &mut TypedModel,
    label: &str,
    suffix: &str,
    mut find: impl FnMut(&TypedModel, usize) -> TractResult<Option<(I, O, OutletId)>>,
) -> TractResult<usize> {
    let mut fused = 0;
    for id in model.eval_order()? {
        if let Some((inputs, op, replaced)) = find(model, id)? {
            let mut patch = TypedModelPatch::new(label);
            let taps = patch.taps(model, inputs.as_ref())?;
            let name = format!("{}.{suffix}", model.node(id).name);
            let out = patch.wire_node(name, op, &taps)?;
            patch.shunt_outside(model, replaced, out[0])?;
            patch.apply(model)?;
            fused += 1;
        }
    }
    if fused > 0 {
        model.compact()?;
    }
    Ok(fused)
}

/// The `n` constant f32 values at `outlet`, if it is a constant of `n` f32 values.
pub(crate) fn const_f32(
    model: &TypedModel,
    outlet: OutletId,
    n: usize,
) -> TractResult<Option<Vec<f32>>> {
    match &model.outlet_fact(outlet)?.konst {
        Some(k) if k.datum_type() == f32::datum_type() && k.len() == n => {
            Ok(Some(k.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()))
        }
        _ => Ok(None),
    }
}

/// The tiny fixture model exported with `quantization`, decluttered as the backend loads it
/// (before our rewrites): what the operators' tests fuse and compare with tract's plan.
#[cfg(test)]
pub(crate) fn fixture_graph(
    quantization: autoglm_package::Quantization,
) -> TractResult<TypedModel> {
    let dir = tempfile::tempdir()?;
    autoglm_export::fixture::write_base(&dir.path().join("base"));
    let mut options = autoglm_export::ExportOptions::new(dir.path().join("base"));
    options.quantization = quantization;
    let package = autoglm_export::export(&options)?;
    let onnx = package.file(&package.manifest().graph.file)?;
    tract_onnx::onnx()
        .model_for_read(&mut &onnx[..])?
        .into_typed()?
        .into_decluttered()
}

/// `model`'s plan (optimized by tract) run on `inputs` on one thread, and on a pool of two.
#[cfg(test)]
pub(crate) fn run_one_and_two_threads(
    model: TypedModel,
    inputs: impl Fn() -> TractResult<TVec<TValue>> + Send,
) -> TractResult<[TVec<TValue>; 2]> {
    let plan = model.into_optimized()?.into_runnable()?;
    let single = plan.run(inputs()?)?;
    let pool = tract_linalg::multithread::Executor::multithread(2);
    let threaded =
        tract_linalg::multithread::multithread_tract_scope(pool, || plan.run(inputs()?))?;
    Ok([single, threaded])
}

/// How many of tract's exact GELUs `model` has.
#[cfg(test)]
pub(crate) fn gelu_count(model: &TypedModel) -> usize {
    model.nodes().iter().filter(|n| flinear::is_gelu(n)).count()
}

/// Inputs for [`fixture_graph`]'s model: `batch` texts of `seq` tokens, text `b` padded after
/// its first `seq - b` tokens (every text but the first has padding), token ids spread over
/// the fixture's vocabulary.
#[cfg(test)]
pub(crate) fn fixture_inputs(
    model: &TypedModel,
    batch: usize,
    seq: usize,
) -> TractResult<TVec<TValue>> {
    let vocab = autoglm_export::fixture::vocab_size();
    model
        .input_outlets()?
        .iter()
        .map(|o| {
            let name = &model.node(o.node).name;
            let values: Vec<i64> = (0..batch * seq)
                .map(|i| {
                    if name.contains("mask") {
                        i64::from(i % seq < seq - i / seq)
                    } else if name.contains("type") {
                        0
                    } else {
                        (i * 11 % vocab) as i64
                    }
                })
                .collect();
            Ok(Tensor::from_shape(&[batch, seq], &values)?.into_tvalue())
        })
        .collect()
}

/// Fuses attention ([`attention::fuse`], [`window::fuse`]) and the int8 linear layers
/// ([`qlinear::fuse`]; attention native only) and the LayerNorms ([`layernorm::fuse`]), then
/// replaces every remaining broadcast
/// `Add` of a key bias onto attention scores by [`KeyBiasAdd`], every
/// other `Add` of two f32 tensors of one shape by [`SameShapeAdd`], and tract's dynamic
/// quantization by [`DynamicQuantize`]. Returns how many nodes were replaced.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    // Fused attention native only. In the component, on our `simd128` products, it measured
    // slower than tract's plan (BENCHMARKS.md, wave 7: 127 → 132–148 ms at 128 tokens), which
    // runs its wasm 8 × 8 product kernel and its wasm softmax rows.
    let mut replaced = if cfg!(target_family = "wasm") {
        0
    } else {
        attention::fuse(model)?
            + window::fuse(model)?
            + window::fuse_global_queries(model)?
            + window::fuse_token_major(model)?
            + window::fuse_token_major_out(model)?
    };
    if !cfg!(target_family = "wasm") || cfg!(target_feature = "simd128") {
        replaced += qlinear::fuse(model)?;
    }
    replaced += layernorm::fuse(model)?;
    for id in model.eval_order()? {
        let node = model.node(id);
        if node.op().name() == quantize::TRACT_OP
            && node.outputs.len() == 3
            && model.node_input_facts(id)?.first().map(|f| f.datum_type) == Some(f32::datum_type())
        {
            let inputs = node.inputs.clone();
            let patch = TypedModelPatch::replace_single_op(model, node, &inputs, DynamicQuantize)?;
            patch.apply(model)?;
            replaced += 1;
            continue;
        }
        let patch = if let Some(inputs) = add_operands(model, id, is_key_bias)? {
            TypedModelPatch::replace_single_op(model, node, &inputs, KeyBiasAdd)?
        } else if let Some(inputs) = add_operands(model, id, is_same_shape)? {
            TypedModelPatch::replace_single_op(model, node, &inputs, SameShapeAdd)?
        } else {
            continue;
        };
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The two operands of node `id` if it is a plain `Add` (no constant folded into it) and
/// `fits(first, second)` holds in one of their two orders (the node's own first), in that
/// order.
fn add_operands(
    model: &TypedModel,
    id: usize,
    fits: impl Fn(&TypedFact, &TypedFact) -> bool,
) -> TractResult<Option<[OutletId; 2]>> {
    let node = model.node(id);
    let is_add = node
        .op_as::<TypedBinOp>()
        .is_some_and(|bin| bin.0.is::<Add>() && bin.1.is_none());
    if !is_add || node.inputs.len() != 2 {
        return Ok(None);
    }
    let facts = model.node_input_facts(id)?;
    let (a, b) = (node.inputs[0], node.inputs[1]);
    Ok(if fits(facts[0], facts[1]) {
        Some([a, b])
    } else if fits(facts[1], facts[0]) {
        Some([b, a])
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-4, 4): the fixture model's generator, scaled.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        autoglm_export::fixture::values(seed, n)
            .into_iter()
            .map(|v| v * 8.0)
            .collect()
    }

    /// The op against the plain broadcast `Add` (tract's own), on shapes with odd sizes and
    /// padding-like biases.
    #[test]
    fn key_bias_add_equals_the_broadcast_add() -> TractResult<()> {
        // (scores, bias): dense attention's key rows, and window attention's bands (a block of
        // queries × its three key blocks, per block, shared by the heads).
        let cases: [(&[usize], &[usize]); 7] = [
            (&[1, 1, 1, 1], &[1, 1, 1, 1]),
            (&[2, 3, 5, 7], &[2, 1, 1, 7]),
            (&[3, 12, 9, 9], &[3, 1, 1, 9]),
            (&[1, 12, 33, 33], &[1, 1, 1, 33]),
            (&[2, 3, 4, 5, 15], &[2, 1, 4, 5, 15]),
            (&[1, 12, 3, 8, 25], &[1, 1, 3, 8, 25]),
            (&[2, 2, 3, 1, 7], &[2, 1, 1, 1, 7]),
        ];
        for (seed, (shape, bias_shape)) in cases.iter().enumerate() {
            let n: usize = shape.iter().product();
            let scores = Tensor::from_shape(shape, &values(n, seed as u64))?;
            let per_item: usize = bias_shape[1..].iter().product();
            let mut bias = values(bias_shape.iter().product(), 100 + seed as u64);
            // Padding: the last values of the first item are masked as the exporter does.
            for v in bias.iter_mut().take(per_item).skip(per_item / 2 + 1) {
                *v = -1e9;
            }
            let bias = Tensor::from_shape(bias_shape, &bias)?;
            let facts = [
                f32::datum_type().fact(shape.to_vec()),
                f32::datum_type().fact(bias_shape.to_vec()),
            ];
            // (1,1,1,1) onto (1,1,1,1) is a same-shape add, not a broadcast.
            assert_eq!(is_key_bias(&facts[0], &facts[1]), seed != 0, "{shape:?}");
            assert!(!is_key_bias(&facts[1], &facts[0]) || seed == 0);
            let expected = TypedBinOp(Box::new(Add), None)
                .eval_out_of_plan(tvec![
                    scores.clone().into_tvalue(),
                    bias.clone().into_tvalue()
                ])?
                .expect("add evaluates")
                .remove(0);
            let got = KeyBiasAdd
                .eval_out_of_plan(tvec![scores.into_tvalue(), bias.into_tvalue()])?
                .expect("evaluates")
                .remove(0);
            assert_eq!(expected.shape(), got.shape());
            let (e, g) = (expected.try_as_plain_ram()?, got.try_as_plain_ram()?);
            assert_eq!(e.as_slice::<f32>()?, g.as_slice::<f32>()?, "{shape:?}");
        }
        Ok(())
    }

    /// Against tract's `Add`, with unshared, one shared and both shared operands.
    #[test]
    fn same_shape_add_equals_the_add() -> TractResult<()> {
        for (seed, shape) in [vec![1, 1, 3], vec![2, 5, 7], vec![1, 33, 384]]
            .iter()
            .enumerate()
        {
            let n: usize = shape.iter().product();
            let a = Tensor::from_shape(shape, &values(n, seed as u64))?;
            let b = Tensor::from_shape(shape, &values(n, 50 + seed as u64))?;
            let expected = TypedBinOp(Box::new(Add), None)
                .eval_out_of_plan(tvec![a.clone().into_tvalue(), b.clone().into_tvalue()])?
                .expect("add evaluates")
                .remove(0);
            let (a, b) = (a.into_tvalue(), b.into_tvalue());
            for (x, y) in [
                (a.clone(), b.clone()),
                (a.clone(), b.clone().into_tensor().into_tvalue()),
            ] {
                let keep = (x.clone(), y.clone());
                let got = SameShapeAdd
                    .eval_out_of_plan(tvec![x, y])?
                    .expect("evaluates")
                    .remove(0);
                assert_eq!(*expected, *got, "shape {shape:?}");
                // Shared operands are left as they were.
                assert_eq!(*keep.0, *a);
                assert_eq!(*keep.1, *b);
            }
            let got = SameShapeAdd
                .eval_out_of_plan(tvec![
                    a.into_tensor().into_tvalue(),
                    b.into_tensor().into_tvalue()
                ])?
                .expect("evaluates")
                .remove(0);
            assert_eq!(*expected, *got, "shape {shape:?}, unshared");
        }
        Ok(())
    }

    /// Against tract's `Add`, bit for bit, on shapes where `b` repeats over `a`'s first one or
    /// two axes, with `a` shared (left as it was) and not; same shapes and scalars are not
    /// repeats.
    #[test]
    fn repeat_add_equals_the_add() -> TractResult<()> {
        for (seed, (a_shape, b_shape)) in [
            (vec![3, 5, 7], vec![1, 5, 7]),
            (vec![2, 33, 384], vec![1, 1, 384]),
            (vec![2, 3, 4, 5], vec![1, 3, 4, 5]),
            (vec![2, 1, 4, 5], vec![1, 1, 4, 5]),
            (vec![4, 0, 3], vec![1, 0, 3]),
        ]
        .into_iter()
        .enumerate()
        {
            let (n, m) = (
                a_shape.iter().product::<usize>(),
                b_shape.iter().product::<usize>(),
            );
            let a = Tensor::from_shape(&a_shape, &values(n, seed as u64))?;
            let b = Tensor::from_shape(&b_shape, &values(m, 40 + seed as u64))?;
            let facts = [f32::fact(&a_shape), f32::fact(&b_shape)];
            assert!(is_repeat(&facts[0], &facts[1]) && !is_repeat(&facts[1], &facts[0]));
            assert!(!is_repeat(&facts[0], &facts[0]));
            let expected = TypedBinOp(Box::new(Add), None)
                .eval_out_of_plan(tvec![a.clone().into_tvalue(), b.clone().into_tvalue()])?
                .expect("add evaluates")
                .remove(0);
            let shared = a.clone().into_tvalue();
            let keep = shared.clone();
            for x in [shared, a.clone().into_tensor().into_tvalue()] {
                let got = RepeatAdd
                    .eval_out_of_plan(tvec![x, b.clone().into_tvalue()])?
                    .expect("evaluates")
                    .remove(0);
                assert_eq!(*expected, *got, "{a_shape:?} + {b_shape:?}");
            }
            assert_eq!(*keep, a);
        }
        let err = RepeatAdd
            .eval_out_of_plan(tvec![
                Tensor::from_shape(&[2, 3], &[0f32; 6])?.into_tvalue(),
                Tensor::from_shape(&[1, 2], &[0f32; 2])?.into_tvalue()
            ])
            .expect_err("does not repeat");
        assert!(err.to_string().contains("does not repeat"), "{err}");
        let scalar = [f32::fact([2, 3]), f32::fact([1, 1])];
        assert!(!is_repeat(&scalar[0], &scalar[1]));
        Ok(())
    }

    /// The fixture's graphs (fp32 and int8) after our rewrites: the embeddings' position add
    /// becomes [`RepeatAdd`], and the outputs are the same bits.
    #[test]
    fn the_position_add_repeats_over_the_batch() -> TractResult<()> {
        for quantization in [
            autoglm_package::Quantization::None,
            autoglm_package::Quantization::Int8,
        ] {
            let mut plain = fixture_graph(quantization)?;
            rewrite(&mut plain)?;
            let inputs = || fixture_inputs(&plain, 3, 5);
            let [expected, _] = run_one_and_two_threads(plain.clone(), inputs)?;
            let mut model = plain.clone();
            assert_eq!(fuse_repeat_adds(&mut model)?, 1, "{quantization:?}");
            for got in run_one_and_two_threads(model, inputs)? {
                for (e, g) in expected.iter().zip(got.iter()) {
                    assert_eq!(**e, **g, "{quantization:?}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn a_bias_that_is_not_a_row_is_refused() -> TractResult<()> {
        let scores = Tensor::from_shape(&[1, 2, 2, 2], &[0f32; 8])?;
        let bias = Tensor::from_shape(&[1, 2, 1, 2], &[0f32; 4])?;
        let err = KeyBiasAdd
            .eval_out_of_plan(tvec![scores.into_tvalue(), bias.into_tvalue()])
            .expect_err("not a row bias");
        assert!(err.to_string().contains("does not broadcast"), "{err}");
        Ok(())
    }
}
