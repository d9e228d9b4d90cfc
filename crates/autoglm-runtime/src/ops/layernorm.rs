//! **Fused LayerNorm** ([`LayerNorm`]). tract expands ONNX `LayerNormalization` into five
//! operators, each a pass over the activations: `Reduce<Sum>` over the last axis, a multiply by
//! `1/n` (the mean), a broadcast `Sub`, `RmsNorm`, and the scale-and-shift chain. On MiniLM the
//! thirteen of them took ~0.87 ms at 128 tokens, where ONNX Runtime's `LayerNormalization`
//! takes 0.45 ms (BENCHMARKS.md, wave 5).
//!
//! [`LayerNorm`] does the same arithmetic one row at a time while the row is in cache: the
//! sum and the mean as tract computes them, the centring, tract-linalg's own `rms_norm` kernel
//! (the one tract's `RmsNorm` calls), then `· gamma + beta`. Only the sum's order of additions
//! can differ from tract's reduce, so results agree to rounding (tested within 1e-6).
//!
//! [`AddLayerNorm`] is `LayerNorm(a + b)`: the residual add before each of the encoder's
//! LayerNorms, read in the same pass instead of written out by an add of its own (twelve
//! passes over the activations less per run). The sum is the add's, bit for bit. Both split
//! their rows over the backend's threads for a single text (above [`super::SPLIT_VALUES`]
//! values); each row is computed the same whichever thread takes it. Fused where a native plan
//! is built ([`fuse_residual`], after the plan cache, so the cache's format does not change).

use super::attention::{is_bin, single_use};
use super::const_f32;
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

/// [`layer_norm`] of `xs + add` (when given: as many values as `xs`), in place in `xs`.
pub fn add_layer_norm(xs: &mut [f32], add: Option<&[f32]>, ln: &LayerNorm) -> TractResult<()> {
    let width = ln.gamma.len();
    ensure!(
        add.is_none_or(|a| a.len() == xs.len()),
        "AutoglmAddLayerNorm: {} values to add to {}",
        add.map_or(0, <[f32]>::len),
        xs.len()
    );
    if width == 0 || xs.is_empty() {
        return Ok(());
    }
    let rms_norm = tract_linalg::routines::rms_norm_f32()?;
    for (i, row) in xs.chunks_mut(width).enumerate() {
        if let Some(add) = add {
            for (v, a) in row.iter_mut().zip(&add[i * width..]) {
                *v += *a;
            }
        }
        let mean = sum(row) * ln.recip;
        for v in row.iter_mut() {
            *v -= mean;
        }
        rms_norm(row, ln.eps);
        for ((v, g), b) in row.iter_mut().zip(ln.gamma.iter()).zip(ln.beta.iter()) {
            *v = *v * g + b;
        }
    }
    Ok(())
}

/// The sum of `xs` in 16 interleaved partial sums (which vectorize; one running sum is a
/// chain of dependent additions, 384 of them per MiniLM row).
fn sum(xs: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (a, x) in acc.iter_mut().zip(chunk) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail
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
    /// would lose precision; the two-pass one loses only the f32 rounding of the sum).
    #[test]
    fn kernel_equals_the_definition() -> TractResult<()> {
        let width = 37;
        let gamma: Vec<f32> = (0..width).map(|i| 0.5 + i as f32 / 50.0).collect();
        let beta: Vec<f32> = (0..width).map(|i| i as f32 / 10.0 - 1.0).collect();
        let ln = LayerNorm {
            recip: 1.0 / width as f32,
            eps: 1e-12,
            gamma: Arc::new(gamma.clone()),
            beta: Arc::new(beta.clone()),
        };
        let mut xs: Vec<f32> = (0..width * 4)
            .map(|i| 30.0 * (i / width) as f32 + ((i * 7919) % 101) as f32 / 13.0)
            .collect();
        let original = xs.clone();
        layer_norm(&mut xs, &ln)?;
        for (row, got) in original.chunks(width).zip(xs.chunks(width)) {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / width as f64;
            let var = row
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / width as f64;
            for (i, (&v, &g)) in row.iter().zip(got).enumerate() {
                let want = (f64::from(v) - mean) / (var + 1e-12).sqrt() * f64::from(gamma[i])
                    + f64::from(beta[i]);
                assert!((want - f64::from(g)).abs() < 1e-4, "{want} vs {g}");
            }
        }
        Ok(())
    }
}
