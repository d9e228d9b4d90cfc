//! **Fused int8 linear layer** ([`LinearI8`]). The exporter writes each int8 linear layer as
//! standard ONNX: `DynamicQuantizeLinear(x)` → `MatMulInteger(q, W, zp)` → `Cast` to float →
//! `Mul` by `x_scale · w_scale` (per output column) → `Add` bias. tract lowers the product to a
//! chain (u8 shifted to i8, zero-point sums, packing, its i8 kernel, then the casts and the
//! rescale as separate passes over the output): on MiniLM at 128 tokens the chain was 14 ms of
//! 23 (BENCHMARKS.md, "int8: where the time went").
//!
//! [`LinearI8`] replaces everything after the quantization: the weights are packed once, at
//! load, for the CPU's integer kernel ([`super::qgemm`]), and the product, the zero-point
//! correction, the cast, the rescale and the bias are one pass. The quantization stays a node
//! of its own ([`super::DynamicQuantize`]): its output is shared by the three projections of
//! attention. The results are bit-identical to tract's chain (the same i32 sums, then the same
//! three f32 operations in the same order), which the tests check.

use super::attention::{is_bin, single_use};
use super::const_f32;
use super::qgemm::{qgemm, PackedI8, Tier};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::{Add, Mul};

/// The quantized product as tract declutters `MatMulInteger` (a: batch, m: token, k: input,
/// n: output; then bias, and the zero points and scales of A, B and C).
const AXES: &str = "amk,kn,,,,,,,->amn";

/// `(Σₖ (q − zp)·W) · scale + bias`: inputs the quantized activations `[.., k]` (u8), their
/// zero point (u8 scalar) and the per-column scale (`n` f32 values, any shape); output
/// `[.., n]` f32.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearI8 {
    pub weights: Arc<PackedI8>,
    pub bias: Option<Arc<Vec<f32>>>,
}

impl Eq for LinearI8 {}

impl Op for LinearI8 {
    fn name(&self) -> StaticName {
        "AutoglmLinearI8".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "[{}, {}] on the {} kernel, bias: {}",
            self.weights.k,
            self.weights.n,
            self.weights.tier.name(),
            self.bias.is_some()
        )])
    }
    op_as_typed_op!();
}

impl TypedOp for LinearI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        ensure!(
            shape.last() == Some(&TDim::Val(self.weights.k as i64)),
            "AutoglmLinearI8: input {:?} does not end with k = {}",
            inputs[0].shape,
            self.weights.k
        );
        if let Some(last) = shape.last_mut() {
            *last = TDim::Val(self.weights.n as i64);
        }
        Ok(tvec![f32::fact(shape)])
    }
    as_op!();
}

impl EvalOp for LinearI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (q, zp, scale) = args_3!(inputs);
        let (k, n) = (self.weights.k, self.weights.n);
        ensure!(
            q.rank() >= 1 && q.shape().last() == Some(&k) && zp.len() == 1 && scale.len() == n,
            "AutoglmLinearI8: inputs {:?}, {:?}, {:?} for [{k}, {n}]",
            q.shape(),
            zp.shape(),
            scale.shape()
        );
        let rows = q.len() / k.max(1);
        let mut shape: TVec<usize> = q.shape().into();
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        let mut out = Tensor::zero::<f32>(&shape)?;
        {
            let q = q.try_as_plain_ram()?;
            let zp = zp.try_as_plain_ram()?;
            let scale = scale.try_as_plain_ram()?;
            let mut out_ram = out.try_as_plain_ram_mut()?;
            qgemm(
                q.as_slice::<u8>()?,
                rows,
                zp.as_slice::<u8>()?[0],
                &self.weights,
                scale.as_slice::<f32>()?,
                self.bias.as_deref().map(|b| &b[..]),
                out_ram.as_slice_mut::<f32>()?,
                &tract_linalg::multithread::current_tract_executor(),
            )?;
        }
        Ok(tvec![out.into_tvalue()])
    }
}

/// Whether `outlet` is a constant scalar equal to `value` (zero points 0, scales 1).
fn is_scalar(model: &TypedModel, outlet: OutletId, value: f64) -> TractResult<bool> {
    Ok(match &model.outlet_fact(outlet)?.konst {
        Some(k) if k.len() == 1 => k.cast_to_scalar::<f64>()? == value,
        _ => false,
    })
}

/// What one match found: the op's three inputs, the packed op, and the outlet it replaces.
type Found = ([OutletId; 3], LinearI8, OutletId);

/// Whether `id` is the exporter's quantized product, followed by the cast, the rescale and
/// (optionally) the bias add, each used once.
fn matches(model: &TypedModel, id: usize, tier: Tier) -> TractResult<Option<Found>> {
    let node = model.node(id);
    let Some(op) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    if op.q_params.is_none()
        || op.operating_dt != i32::datum_type()
        || op.axes.to_string() != AXES
        || node.inputs.len() != 9
        || model.outlet_fact(node.inputs[0])?.datum_type != u8::datum_type()
        || model.outlet_fact(node.inputs[3])?.datum_type != u8::datum_type()
        || model.outlet_fact(node.inputs[3])?.shape.volume() != TDim::Val(1)
        || !single_use(model, OutletId::new(id, 0))
    {
        return Ok(None);
    }
    // No bias inside the product, B and C unshifted, every scale 1: only A's zero point.
    for (slot, value) in [(2, 0.0), (4, 1.0), (5, 0.0), (6, 1.0), (7, 0.0), (8, 1.0)] {
        if !is_scalar(model, node.inputs[slot], value)? {
            return Ok(None);
        }
    }
    let Some(weights) = model.outlet_fact(node.inputs[1])?.konst.clone() else {
        return Ok(None);
    };
    if weights.datum_type() != i8::datum_type() || weights.rank() != 2 {
        return Ok(None);
    }
    let (k, n) = (weights.shape()[0], weights.shape()[1]);
    // → Cast to f32
    let cast = model.node(node.outputs[0].successors[0].node);
    if !cast
        .op_as::<Cast>()
        .is_some_and(|c| c.to == f32::datum_type())
        || !single_use(model, OutletId::new(cast.id, 0))
    {
        return Ok(None);
    }
    // → Mul by the per-column scale (n values, computed at run time from x_scale)
    let mul = model.node(cast.outputs[0].successors[0].node);
    if !is_bin::<Mul>(mul) {
        return Ok(None);
    }
    let scale = mul.inputs[1 - cast.outputs[0].successors[0].slot];
    let scale_fact = model.outlet_fact(scale)?;
    if scale_fact.datum_type != f32::datum_type()
        || scale_fact.shape.volume() != TDim::Val(n as i64)
        || scale_fact.shape.last() != Some(&TDim::Val(n as i64))
    {
        return Ok(None);
    }
    // → Add of a constant bias (n values), if the product's only use is one.
    let mut bias = None;
    let mut last = OutletId::new(mul.id, 0);
    if single_use(model, last) {
        let next = mul.outputs[0].successors[0];
        let add = model.node(next.node);
        if is_bin::<Add>(add) {
            if let Some(values) = const_f32(model, add.inputs[1 - next.slot], n)? {
                bias = Some(Arc::new(values));
                last = OutletId::new(add.id, 0);
            }
        }
    }
    let weights = PackedI8::new(weights.try_as_plain_ram()?.as_slice::<i8>()?, k, n, tier)?;
    if !tier.exact_for(weights.max_abs) {
        return Ok(None);
    }
    let op = LinearI8 {
        weights: Arc::new(weights),
        bias,
    };
    Ok(Some(([node.inputs[0], node.inputs[3], scale], op, last)))
}

/// Replaces every int8 linear layer's product, cast, rescale and bias by [`LinearI8`] on the
/// kernel of [`Tier::chosen`]; returns how many.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    fuse_with(model, Tier::chosen())
}

/// [`fuse`] on a given tier (tests run every tier the CPU has).
pub fn fuse_with(model: &mut TypedModel, tier: Tier) -> TractResult<usize> {
    super::fuse_matches(
        model,
        "autoglm int8 linear",
        "autoglm_linear_i8",
        |model, id| matches(model, id, tier),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every linear layer of the int8 graph is fused, on every tier this CPU has, and the
    /// fused graph's outputs are bit-identical to tract's own plan of the unfused graph.
    #[test]
    fn fused_layers_equal_tracts_chain() -> TractResult<()> {
        let plain = crate::ops::fixture_graph(autoglm_package::Quantization::Int8)?;
        let layers = autoglm_export::fixture::LAYERS;
        let inputs = || -> TractResult<TVec<TValue>> {
            let (batch, seq) = (2usize, 7usize);
            let vocab = autoglm_export::fixture::vocab_size();
            let ids: Vec<i64> = (0..batch * seq).map(|i| (i * 7 % vocab) as i64).collect();
            let mut mask = vec![1i64; batch * seq];
            mask[seq - 2..seq].fill(0);
            Ok(plain
                .input_outlets()?
                .iter()
                .map(|o| {
                    let name = &plain.node(o.node).name;
                    let values = if name.contains("mask") {
                        mask.clone()
                    } else if name.contains("type") {
                        vec![0; batch * seq]
                    } else {
                        ids.clone()
                    };
                    Tensor::from_shape(&[batch, seq], &values).map(|t| t.into_tvalue())
                })
                .collect::<TractResult<_>>()?)
        };
        let expected = plain
            .clone()
            .into_optimized()?
            .into_runnable()?
            .run(inputs()?)?;
        for tier in Tier::available() {
            let mut model = plain.clone();
            let n = fuse_with(&mut model, tier)?;
            assert_eq!(
                n,
                6 * layers,
                "{tier:?}: q, k, v, output, up and down per layer"
            );
            let got = model.into_optimized()?.into_runnable()?.run(inputs()?)?;
            for (e, g) in expected.iter().zip(got.iter()) {
                assert_eq!(**e, **g, "{tier:?}");
            }
        }
        Ok(())
    }
}
