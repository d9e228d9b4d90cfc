//! **Fused LayerNorm** ([`LayerNorm`]). tract expands ONNX `LayerNormalization` into five
//! operators, each a pass over the activations: `Reduce<Sum>` over the last axis, a multiply by
//! `1/n` (the mean), a broadcast `Sub`, `RmsNorm`, and the scale-and-shift chain. On MiniLM the
//! thirteen of them took ~0.87 ms at 128 tokens, where ONNX Runtime's `LayerNormalization`
//! takes 0.45 ms (BENCHMARKS.md, wave 5).
//!
//! [`LayerNorm`] does the same arithmetic one row at a time while the row is in cache, in
//! three passes: the sum and the mean, the centring and the mean of squares, then
//! `· 1/sqrt(mean of squares + eps) · gamma + beta` as tract's `RmsNorm` and its scale and
//! shift compute it. The sums run in 16 partial sums (which vectorize, where one running sum
//! is a chain of dependent additions: tract-linalg's `rms_norm`, used before, is one on an x86
//! CPU without AVX-512), compiled for the CPU's f32 tier and in the same order on every tier,
//! so all give the same bits. Only the sums' order of additions differs from tract's expansion, so results
//! agree to rounding (tested within 1e-6).
//!
//! [`AddLayerNorm`] is `LayerNorm(a + b)`: the add before each of the encoder's LayerNorms
//! (the twelve residual adds and the embeddings' sum), read in the same pass instead of
//! written out by an add of its own. The sum is the add's, bit for bit. Both split
//! their rows over the backend's threads for a single text (above [`super::SPLIT_VALUES`]
//! values); each row is computed the same whichever thread takes it. Fused where a native plan
//! is built ([`fuse_residual`], after the plan cache, so the cache's format does not change).

use super::attention::{is_bin, single_use};
use super::const_f32;
use super::fgemm::Tier;
use tract_hir::prelude::*;
use tract_hir::tract_core::internal::*;
use tract_hir::tract_core::ops::binary::TypedBinOp;
use tract_hir::tract_core::ops::math::{Add, Mul, Sub};
use tract_hir::tract_core::ops::nn::{Reduce, Reducer, RmsNorm};

/// `((x − mean(x)) / sqrt(mean((x − mean)²) + eps)) · gamma + beta` over the last axis.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    /// The graph's `1/n` (multiplied, as tract does, rather than divided).
    pub recip: f32,
    pub eps: f32,
    pub gamma: Arc<Vec<f32>>,
    pub beta: Arc<Vec<f32>>,
}

impl Eq for LayerNorm {}

impl Op for LayerNorm {
    fn name(&self) -> StaticName {
        "AutoglmLayerNorm".into()
    }
    op_as_typed_op!();
}

impl TypedOp for LayerNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec![f32::fact(inputs[0].shape.clone())])
    }
    as_op!();
}

impl EvalOp for LayerNorm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let width = self.gamma.len();
        ensure!(
            x.datum_type() == f32::datum_type()
                && x.shape().last() == Some(&width)
                && self.beta.len() == width,
            "AutoglmLayerNorm: input {:?} for a width of {width}",
            x.shape()
        );
        let mut y = x.into_tensor();
        {
            let mut ram = y.try_as_plain_ram_mut()?;
            add_layer_norm_on(
                ram.as_slice_mut::<f32>()?,
                None,
                self,
                &tract_linalg::multithread::current_tract_executor(),
            )?;
        }
        Ok(tvec![y.into_tvalue()])
    }
}

/// `LayerNorm(a + b)` for two f32 tensors of one shape ([`fuse_residual`]): the residual add
/// and the LayerNorm after it, in one pass, written into whichever input is not shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddLayerNorm(pub LayerNorm);

impl Op for AddLayerNorm {
    fn name(&self) -> StaticName {
        "AutoglmAddLayerNorm".into()
    }
    op_as_typed_op!();
}

impl TypedOp for AddLayerNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 2 && inputs[0].shape == inputs[1].shape,
            "AutoglmAddLayerNorm: two inputs of one shape, not {inputs:?}"
        );
        Ok(tvec![f32::fact(inputs[0].shape.clone())])
    }
    as_op!();
}

impl EvalOp for AddLayerNorm {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = args_2!(inputs);
        let width = self.0.gamma.len();
        ensure!(
            a.shape() == b.shape()
                && a.datum_type() == f32::datum_type()
                && b.datum_type() == f32::datum_type()
                && a.shape().last() == Some(&width)
                && self.0.beta.len() == width,
            "AutoglmAddLayerNorm: inputs {:?} and {:?} for a width of {width}",
            a.shape(),
            b.shape()
        );
        // IEEE addition commutes exactly: either operand may take the result.
        let (mut sum, other) = super::unshared_first(a, b);
        {
            let other_ram = other.try_as_plain_ram()?;
            let mut sum_ram = sum.try_as_plain_ram_mut()?;
            add_layer_norm_on(
                sum_ram.as_slice_mut::<f32>()?,
                Some(other_ram.as_slice::<f32>()?),
                &self.0,
                &tract_linalg::multithread::current_tract_executor(),
            )?;
        }
        Ok(tvec![sum.into_tvalue()])
    }
}

/// [`add_layer_norm`] in parts of whole rows, in parallel on `executor`'s threads where the
/// rows are many enough ([`super::parts_of`]). Each row's values are the same whichever thread
/// takes it.
pub fn add_layer_norm_on(
    xs: &mut [f32],
    add: Option<&[f32]>,
    ln: &LayerNorm,
    executor: &tract_linalg::multithread::Executor,
) -> TractResult<()> {
    ensure!(
        add.is_none_or(|a| a.len() == xs.len()),
        "AutoglmAddLayerNorm: {} values to add to {}",
        add.map_or(0, <[f32]>::len),
        xs.len()
    );
    super::for_parts_of_mut(xs, ln.gamma.len(), executor, |offset, part| {
        add_layer_norm(part, add.map(|a| &a[offset..offset + part.len()]), ln)
    })
}

/// The kernel, in place, on rows of `ln.gamma.len()` values.
pub fn layer_norm(xs: &mut [f32], ln: &LayerNorm) -> TractResult<()> {
    add_layer_norm(xs, None, ln)
}

/// [`layer_norm`] of `xs + add` (when given: as many values as `xs`), in place in `xs`, on
/// the process's f32 tier ([`Tier::chosen`]).
pub fn add_layer_norm(xs: &mut [f32], add: Option<&[f32]>, ln: &LayerNorm) -> TractResult<()> {
    add_layer_norm_with(Tier::chosen(), xs, add, ln)
}

/// [`add_layer_norm`] compiled for `tier`'s instruction set (the same bits on every tier).
pub fn add_layer_norm_with(
    tier: Tier,
    xs: &mut [f32],
    add: Option<&[f32]>,
    ln: &LayerNorm,
) -> TractResult<()> {
    let width = ln.gamma.len();
    ensure!(
        add.is_none_or(|a| a.len() == xs.len())
            && ln.beta.len() == width
            && (width == 0 || xs.len().is_multiple_of(width)),
        "AutoglmAddLayerNorm: {} values to add to {}, {} gamma and {} beta values",
        add.map_or(0, <[f32]>::len),
        xs.len(),
        width,
        ln.beta.len()
    );
    if width == 0 || xs.is_empty() {
        return Ok(());
    }
    match tier {
        // SAFETY (both): the tier is supported by this CPU (checked), which is all that the
        // target features ask; the body is safe Rust.
        #[cfg(target_arch = "x86_64")]
        Tier::Avx512 if tier.supported() => unsafe { rows_avx512(xs, add, ln) },
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2 if tier.supported() => unsafe { rows_avx2(xs, add, ln) },
        _ => rows(xs, add, ln),
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512(xs: &mut [f32], add: Option<&[f32]>, ln: &LayerNorm) {
    rows(xs, add, ln)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rows_avx2(xs: &mut [f32], add: Option<&[f32]>, ln: &LayerNorm) {
    rows(xs, add, ln)
}

/// Partial sums per reduction: they vectorize on every tier, and fix the order of the
/// additions (so every tier gives the same bits; no multiply-add is fused either).
const LANES: usize = 16;

/// Every row of `xs` (whole rows of `gamma.len()` values, checked by the caller): three passes
/// while the row is in cache. (1) `x += add` and the sum, (2) the centring and the sum of
/// squares, (3) `x · 1/sqrt(mean of squares + eps) · gamma + beta`: tract's `RmsNorm` then
/// its scale and shift, in the same order of operations.
#[inline(always)]
fn rows(xs: &mut [f32], add: Option<&[f32]>, ln: &LayerNorm) {
    let width = ln.gamma.len();
    let n = width as f32;
    for (i, row) in xs.chunks_exact_mut(width).enumerate() {
        let mut acc = [0f32; LANES];
        let mut tail = 0f32;
        match add {
            Some(add) => {
                let add = &add[i * width..(i + 1) * width];
                let mut chunks = row.chunks_exact_mut(LANES);
                let mut adds = add.chunks_exact(LANES);
                for (chunk, a) in (&mut chunks).zip(&mut adds) {
                    for ((v, a), s) in chunk.iter_mut().zip(a).zip(acc.iter_mut()) {
                        *v += *a;
                        *s += *v;
                    }
                }
                for (v, a) in chunks.into_remainder().iter_mut().zip(adds.remainder()) {
                    *v += *a;
                    tail += *v;
                }
            }
            None => {
                let mut chunks = row.chunks_exact(LANES);
                for chunk in &mut chunks {
                    for (v, s) in chunk.iter().zip(acc.iter_mut()) {
                        *s += *v;
                    }
                }
                tail = chunks.remainder().iter().sum();
            }
        }
        let mean = (acc.iter().sum::<f32>() + tail) * ln.recip;
        let mut acc = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for (v, s) in chunk.iter_mut().zip(acc.iter_mut()) {
                *v -= mean;
                *s += *v * *v;
            }
        }
        let mut tail = 0f32;
        for v in chunks.into_remainder() {
            *v -= mean;
            tail += *v * *v;
        }
        let mean_sq = (acc.iter().sum::<f32>() + tail) / n;
        let inv_std = (mean_sq + ln.eps).sqrt().recip();
        for ((v, g), b) in row.iter_mut().zip(ln.gamma.iter()).zip(ln.beta.iter()) {
            *v = *v * inv_std * g + b;
        }
    }
}

/// The one successor of `outlet` and the slot it takes it in, if `outlet` has one use.
fn next(model: &TypedModel, outlet: OutletId) -> Option<(&TypedNode, usize)> {
    single_use(model, outlet).then(|| {
        let succ = model.outlet_successors(outlet)[0];
        (model.node(succ.node), succ.slot)
    })
}

/// Whether `id` is the `Reduce<Sum>` that starts tract's expansion of a LayerNorm over the
/// last axis: then its input, the op, and the outlet of the final `Add`.
fn matches(
    model: &TypedModel,
    id: usize,
) -> TractResult<Option<([OutletId; 1], LayerNorm, OutletId)>> {
    let reduce = model.node(id);
    let Some(op) = reduce.op_as::<Reduce>() else {
        return Ok(None);
    };
    let x = reduce.inputs[0];
    let fact = model.outlet_fact(x)?;
    let rank = fact.rank();
    let Some(TDim::Val(width)) = fact.shape.last().cloned() else {
        return Ok(None);
    };
    let width = width as usize;
    if op.reducer != Reducer::Sum
        || op.axes.as_slice() != [rank - 1]
        || fact.datum_type != f32::datum_type()
        || width == 0
    {
        return Ok(None);
    }
    // · 1/n
    let Some((mul, slot)) = next(model, OutletId::new(id, 0)) else {
        return Ok(None);
    };
    if !is_bin::<Mul>(mul) {
        return Ok(None);
    }
    let Some(recip) = const_f32(model, mul.inputs[1 - slot], 1)? else {
        return Ok(None);
    };
    // x − mean
    let Some((sub, slot)) = next(model, OutletId::new(mul.id, 0)) else {
        return Ok(None);
    };
    let is_sub = sub
        .op_as::<TypedBinOp>()
        .is_some_and(|b| b.0.is::<Sub>() && b.1.is_none());
    if !is_sub || slot != 1 || sub.inputs[0] != x {
        return Ok(None);
    }
    // RmsNorm over the last axis
    let Some((rms, _)) = next(model, OutletId::new(sub.id, 0)) else {
        return Ok(None);
    };
    let Some(rms_op) = rms.op_as::<RmsNorm>() else {
        return Ok(None);
    };
    if rms_op.axis != rank - 1 || rms_op.eps.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let eps = rms_op.eps.cast_to_scalar::<f32>()?;
    // · gamma + beta
    let Some((scale, slot)) = next(model, OutletId::new(rms.id, 0)) else {
        return Ok(None);
    };
    if !is_bin::<Mul>(scale) {
        return Ok(None);
    }
    let Some(gamma) = const_f32(model, scale.inputs[1 - slot], width)? else {
        return Ok(None);
    };
    let Some((shift, slot)) = next(model, OutletId::new(scale.id, 0)) else {
        return Ok(None);
    };
    if !is_bin::<Add>(shift) {
        return Ok(None);
    }
    let Some(beta) = const_f32(model, shift.inputs[1 - slot], width)? else {
        return Ok(None);
    };
    let op = LayerNorm {
        recip: recip[0],
        eps,
        gamma: Arc::new(gamma),
        beta: Arc::new(beta),
    };
    Ok(Some(([x], op, OutletId::new(shift.id, 0))))
}

/// Replaces every expanded LayerNorm by [`LayerNorm`]; returns how many.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    super::fuse_matches(model, "autoglm layer norm", "autoglm_layer_norm", matches)
}

/// Replaces every [`super::SameShapeAdd`] whose one use is a [`LayerNorm`] (and which is not
/// an output of the model) by [`AddLayerNorm`] with both; returns how many.
pub fn fuse_residual(model: &mut TypedModel) -> TractResult<usize> {
    let outputs = model.output_outlets()?.to_vec();
    super::fuse_matches(
        model,
        "autoglm add layer norm",
        "autoglm_add_layer_norm",
        |model, id| {
            let add = model.node(id);
            let sum = OutletId::new(id, 0);
            if !add.op_is::<super::SameShapeAdd>()
                || add.inputs.len() != 2
                || outputs.contains(&sum)
            {
                return Ok(None);
            }
            let Some((norm, 0)) = next(model, sum) else {
                return Ok(None);
            };
            let Some(ln) = norm.op_as::<LayerNorm>() else {
                return Ok(None);
            };
            let facts = model.node_input_facts(id)?;
            let width = TDim::Val(ln.gamma.len() as i64);
            if facts[0].shape != facts[1].shape || facts[0].shape.last() != Some(&width) {
                return Ok(None);
            }
            let inputs = [add.inputs[0], add.inputs[1]];
            Ok(Some((
                inputs,
                AddLayerNorm(ln.clone()),
                OutletId::new(norm.id, 0),
            )))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture model's graphs (fp32 and int8): every LayerNorm is fused, and the fused
    /// graph's outputs equal tract's plan of the expanded one within 1e-6.
    #[test]
    fn fused_layer_norms_equal_tracts_expansion() -> TractResult<()> {
        for quantization in [
            autoglm_package::Quantization::None,
            autoglm_package::Quantization::Int8,
        ] {
            let plain = crate::ops::fixture_graph(quantization)?;
            let (batch, seq) = (3usize, 5usize);
            let inputs = || crate::ops::fixture_inputs(&plain, batch, seq);
            let expected = plain
                .clone()
                .into_optimized()?
                .into_runnable()?
                .run(inputs()?)?;
            let mut model = plain.clone();
            let n = fuse(&mut model)?;
            // the embeddings' and two per layer
            assert_eq!(
                n,
                1 + 2 * autoglm_export::fixture::LAYERS,
                "{quantization:?}"
            );
            let got = model.into_optimized()?.into_runnable()?.run(inputs()?)?;
            for (e, g) in expected.iter().zip(got.iter()) {
                let (e, g) = (e.try_as_plain_ram()?, g.try_as_plain_ram()?);
                let (e, g) = (e.as_slice::<f32>()?, g.as_slice::<f32>()?);
                let diff = autoglm_testkit::max_abs_diff(e, g);
                assert!(diff <= 1e-6, "{quantization:?}: max |Δ| {diff}");
            }
        }
        Ok(())
    }

    /// The residual adds before the LayerNorms fused ([`fuse_residual`]), on the fixture's
    /// graphs (fp32 and int8) after our rewrites: every one of them, and the outputs equal the
    /// unfused graph's bit for bit, on one thread and on two.
    #[test]
    fn fused_residual_adds_equal_the_add_then_the_norm() -> TractResult<()> {
        for quantization in [
            autoglm_package::Quantization::None,
            autoglm_package::Quantization::Int8,
        ] {
            let mut plain = crate::ops::fixture_graph(quantization)?;
            crate::ops::rewrite(&mut plain)?;
            let (batch, seq) = (3usize, 5usize);
            let inputs = || crate::ops::fixture_inputs(&plain, batch, seq);
            let [expected, _] = crate::ops::run_one_and_two_threads(plain.clone(), inputs)?;
            let mut model = plain.clone();
            let n = fuse_residual(&mut model)?;
            // the embeddings' sum and the two residual adds of each layer
            assert_eq!(
                n,
                1 + 2 * autoglm_export::fixture::LAYERS,
                "{quantization:?}"
            );
            assert!(
                !model
                    .nodes()
                    .iter()
                    .any(|n| n.op_is::<crate::ops::SameShapeAdd>()),
                "{quantization:?}: an add is left"
            );
            for got in crate::ops::run_one_and_two_threads(model, inputs)? {
                for (e, g) in expected.iter().zip(got.iter()) {
                    assert_eq!(**e, **g, "{quantization:?}");
                }
            }
        }
        Ok(())
    }

    fn norm(width: usize) -> LayerNorm {
        LayerNorm {
            recip: 1.0 / width as f32,
            eps: 1e-12,
            gamma: Arc::new((0..width).map(|i| 0.5 + i as f32 / 50.0).collect()),
            beta: Arc::new((0..width).map(|i| i as f32 / 10.0 - 1.0).collect()),
        }
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        autoglm_export::fixture::values(seed, n)
            .into_iter()
            .map(|v| v * 8.0 - 2.0)
            .collect()
    }

    /// The op against tract's add then our LayerNorm, bit for bit: widths with SIMD tails,
    /// row counts below and above the split and not a multiple of the threads, on one thread
    /// and on pools of two and three; with unshared, one shared and both shared inputs (shared
    /// ones left as they were).
    #[test]
    fn add_layer_norm_equals_the_add_then_the_norm_whatever_the_threads() -> TractResult<()> {
        use tract_hir::tract_core::ops::binary::TypedBinOp;
        let executors = [
            tract_linalg::multithread::Executor::SingleThread,
            tract_linalg::multithread::Executor::multithread(2),
            tract_linalg::multithread::Executor::multithread(3),
        ];
        for (seed, &(rows, width)) in [(1, 7), (5, 37), (97, 384), (1000, 37), (301, 129)]
            .iter()
            .enumerate()
        {
            let ln = norm(width);
            let shape = [1, rows, width];
            let a = Tensor::from_shape(&shape, &values(rows * width, seed as u64))?;
            let b = Tensor::from_shape(&shape, &values(rows * width, 70 + seed as u64))?;
            let mut expected = TypedBinOp(Box::new(Add), None)
                .eval_out_of_plan(tvec![a.clone().into_tvalue(), b.clone().into_tvalue()])?
                .expect("add evaluates")
                .remove(0)
                .into_tensor();
            layer_norm(expected.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?, &ln)?;
            let op = AddLayerNorm(ln.clone());
            for (threads, executor) in executors.iter().enumerate() {
                let (a, b) = (a.clone().into_tvalue(), b.clone().into_tvalue());
                let cases = [
                    (a.clone(), b.clone()),
                    (a.clone(), b.clone().into_tensor().into_tvalue()),
                    (a.clone().into_tensor().into_tvalue(), b.clone()),
                    (
                        a.clone().into_tensor().into_tvalue(),
                        b.clone().into_tensor().into_tvalue(),
                    ),
                ];
                for (x, y) in cases {
                    let keep = (x.clone(), y.clone());
                    let got = tract_linalg::multithread::multithread_tract_scope(
                        executor.clone(),
                        || op.eval_out_of_plan(tvec![x, y]),
                    )?
                    .expect("evaluates")
                    .remove(0);
                    assert_eq!(expected, *got, "[{rows}, {width}], {} threads", threads + 1);
                    assert_eq!(*keep.0, *a);
                    assert_eq!(*keep.1, *b);
                }
            }
        }
        // Inputs of two shapes: an error, not a panic.
        let a = Tensor::from_shape(&[2, 7], &values(14, 1))?;
        let b = Tensor::from_shape(&[1, 7], &values(7, 2))?;
        let err = AddLayerNorm(norm(7))
            .eval_out_of_plan(tvec![a.into_tvalue(), b.into_tvalue()])
            .expect_err("two shapes");
        assert!(err.to_string().contains("AutoglmAddLayerNorm"), "{err}");
        Ok(())
    }

    /// Against the definition in f64, on rows with a common offset (where a one-pass variance
    /// would lose precision; the two-pass one loses only the f32 rounding of the sums), on
    /// every f32 tier this CPU has, widths below, at and past the 16 partial sums, with and
    /// without the residual: every tier gives the portable code's bits.
    #[test]
    fn kernel_equals_the_definition_on_every_tier() -> TractResult<()> {
        for (seed, width) in [1usize, 7, 16, 37, 64, 384].into_iter().enumerate() {
            let ln = norm(width);
            let rows = 5;
            let original: Vec<f32> = (0..width * rows)
                .map(|i| 30.0 * (i / width) as f32 + ((i * 7919) % 101) as f32 / 13.0)
                .collect();
            let residual = values(width * rows, 300 + seed as u64);
            for add in [None, Some(residual.as_slice())] {
                let mut portable = original.clone();
                add_layer_norm_with(Tier::Scalar, &mut portable, add, &ln)?;
                for tier in Tier::available() {
                    let mut got = original.clone();
                    add_layer_norm_with(tier, &mut got, add, &ln)?;
                    assert_eq!(got, portable, "{tier:?}, width {width}");
                }
                for (r, got) in portable.chunks(width).enumerate() {
                    let row: Vec<f64> = (0..width)
                        .map(|i| {
                            let at = r * width + i;
                            f64::from(original[at]) + add.map_or(0.0, |a| f64::from(a[at]))
                        })
                        .collect();
                    let mean = row.iter().sum::<f64>() / width as f64;
                    let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
                    for (i, (v, &g)) in row.iter().zip(got).enumerate() {
                        let want = (v - mean) / (var + 1e-12).sqrt() * f64::from(ln.gamma[i])
                            + f64::from(ln.beta[i]);
                        assert!(
                            (want - f64::from(g)).abs() < 1e-4,
                            "width {width}: {want} vs {g}"
                        );
                    }
                }
            }
        }
        // Sizes that do not fit: an error, not a panic.
        let mut xs = vec![0f32; 14];
        assert!(add_layer_norm(&mut xs, Some(&[0f32; 7]), &norm(7)).is_err());
        let short = LayerNorm {
            beta: Arc::new(vec![0f32; 6]),
            ..norm(7)
        };
        assert!(add_layer_norm(&mut xs, None, &short).is_err());
        assert!(add_layer_norm(&mut xs[..13], None, &norm(7)).is_err());
        Ok(())
    }
}
