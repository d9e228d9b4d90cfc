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
//!
//! Where a layer has the exporter's exact form, [`fuse_onnx`] makes the same operator earlier,
//! in the ONNX graph itself before tract types it, so that tract never lowers and declutters
//! the chain (most of an int8 load's analysis); [`fuse`] still takes every other layer.

use super::attention::{is_bin, single_use};
use super::const_f32;
use super::qgemm::{PackedI8, Tier};
use tract_hir::prelude::*;
use tract_hir::tract_core::internal::*;
use tract_hir::tract_core::ops::cast::Cast;
use tract_hir::tract_core::ops::einsum::EinSum;
use tract_hir::tract_core::ops::math::{Add, Mul};

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
    /// tract's exact GELU on the result, in parts on the pool ([`fuse_gelu`]: after the plan
    /// cache, whose plans keep tract's `GeluExact`).
    pub gelu: bool,
}

impl Eq for LinearI8 {}

impl Op for LinearI8 {
    fn name(&self) -> StaticName {
        "AutoglmLinearI8".into()
    }
    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "[{}, {}] on the {} kernel, bias: {}, gelu: {}",
            self.weights.k,
            self.weights.n,
            self.weights.tier.name(),
            self.bias.is_some(),
            self.gelu
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
        let (q, zp, scale) = (
            q.try_as_plain_ram()?,
            zp.try_as_plain_ram()?,
            scale.try_as_plain_ram()?,
        );
        let gelu = |values: &mut [f32]| super::flinear::gelu_in_place(values);
        let out = super::qgemm::qgemm_new(
            q.as_slice::<u8>()?,
            rows,
            zp.as_slice::<u8>()?[0],
            &self.weights,
            scale.as_slice::<f32>()?,
            self.bias.as_deref().map(|b| &b[..]),
            &shape,
            self.gelu.then_some(&gelu as super::qgemm::Finish),
            &tract_linalg::multithread::current_tract_executor(),
        )?;
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
        gelu: false,
    };
    Ok(Some(([node.inputs[0], node.inputs[3], scale], op, last)))
}

/// Folds tract's exact GELU into the [`LinearI8`] before it (when that is its only use), where
/// it runs in parts on the pool instead of on one thread; returns how many. Native plans only,
/// after the plan cache (the component's single thread gains nothing from it).
pub fn fuse_gelu(model: &mut TypedModel) -> TractResult<usize> {
    super::fuse_matches(model, "autoglm int8 gelu", "gelu", |model, id| {
        let node = model.node(id);
        let Some(op) = node.op_as::<LinearI8>() else {
            return Ok(None);
        };
        let out = OutletId::new(id, 0);
        if op.gelu || !single_use(model, out) {
            return Ok(None);
        }
        let next = model.node(model.outlet_successors(out)[0].node);
        if !super::flinear::is_gelu(next) {
            return Ok(None);
        }
        let inputs: [OutletId; 3] = [node.inputs[0], node.inputs[1], node.inputs[2]];
        let op = LinearI8 {
            gelu: true,
            ..op.clone()
        };
        Ok(Some((inputs, op, OutletId::new(next.id, 0))))
    })
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

/// An initializer as [`fuse_onnx`] sees it: type, dims and bytes.
pub(crate) struct Initializer<'a> {
    pub datum_type: DatumType,
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
}

/// The name of the ONNX node [`fuse_onnx`] writes (ours, in our own domain).
pub(crate) const ONNX_OP: &str = "AutoglmLinearI8";

/// The domain of [`ONNX_OP`].
pub(crate) const DOMAIN: &str = "ai.autoglm";

/// **At parse time**: replaces each int8 linear layer of the exporter's form in the ONNX graph
/// itself, before tract analyses it: `MatMulInteger(q, W, zp)` of a `DynamicQuantizeLinear`'s
/// outputs and an int8 initializer `W [k, n]` → `Cast` to float → `Mul` by a scale → (`Add` of
/// an f32 initializer of `n` values), each value used once, become one `AutoglmLinearI8` node,
/// which tract's typing wires straight to [`LinearI8`]. tract then never lowers
/// `MatMulInteger` into its chain and its declutter never walks it: that was most of an int8
/// load (BENCHMARKS.md, wave 10). The result is the same operator [`fuse`] makes from the
/// lowered chain, so the same numbers. Layers of any other form, or whose weights this CPU's
/// kernel would not sum exactly, are left as they are (and [`fuse`] still sees them).
/// Returns how many were replaced.
pub(crate) fn fuse_onnx<'a>(
    graph: &mut crate::onnx_pb::GraphProto,
    initializer: impl Fn(&str) -> Option<Initializer<'a>>,
) -> usize {
    use std::collections::HashMap;
    // A subgraph may use a value of this one by name, which the counts below do not see.
    if graph.node.iter().any(|n| {
        n.attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    }) {
        return 0;
    }
    let tier = Tier::chosen();
    let from_proto = |name: &str| -> Option<Initializer<'_>> {
        let t = graph.initializer.iter().find(|t| t.name == name)?;
        let datum_type = match t.data_type {
            3 => i8::datum_type(),
            1 => f32::datum_type(),
            _ => return None,
        };
        let shape = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<_>>()?;
        (t.data_location.unwrap_or(0) == 0 && !t.raw_data.is_empty()).then_some(Initializer {
            datum_type,
            shape,
            bytes: &t.raw_data,
        })
    };
    let initializer = |name: &str| initializer(name).or_else(|| from_proto(name));
    // Every use of a value (node inputs and graph outputs), and the node that makes it.
    let mut uses: HashMap<&str, usize> = HashMap::new();
    let mut maker: HashMap<&str, usize> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for input in &node.input {
            *uses.entry(input.as_str()).or_default() += 1;
        }
        for output in &node.output {
            maker.insert(output.as_str(), i);
        }
    }
    for output in &graph.output {
        *uses.entry(output.name.as_str()).or_default() += 1;
    }
    let consumer = |value: &str| -> Option<usize> {
        if uses.get(value) != Some(&1) {
            return None;
        }
        graph
            .node
            .iter()
            .position(|n| n.input.iter().any(|i| i == value))
    };
    let standard = |i: usize, op: &str| {
        let n = &graph.node[i];
        n.op_type == op && (n.domain.is_empty() || n.domain == "ai.onnx")
    };
    // (MatMulInteger, Cast, Mul, Add?, k, n, the scale, the bias)
    let mut found = Vec::new();
    for (i, node) in graph.node.iter().enumerate() {
        if !standard(i, "MatMulInteger") || node.input.len() != 3 || node.output.len() != 1 {
            continue;
        }
        let (q, w, zp) = (&node.input[0], &node.input[1], &node.input[2]);
        // q and zp: outputs 0 and 2 of one DynamicQuantizeLinear (u8 by ONNX's definition).
        let Some(&dq) = maker.get(q.as_str()) else {
            continue;
        };
        let dq_node = &graph.node[dq];
        if !standard(dq, "DynamicQuantizeLinear")
            || dq_node.output.first() != Some(q)
            || dq_node.output.get(2) != Some(zp)
        {
            continue;
        }
        let Some(weights) = initializer(w) else {
            continue;
        };
        let &[k, n] = &weights.shape[..] else {
            continue;
        };
        if weights.datum_type != i8::datum_type() || weights.bytes.len() != k * n {
            continue;
        }
        let max_abs = weights
            .bytes
            .iter()
            .map(|&b| (b as i8).unsigned_abs())
            .max()
            .unwrap_or(0);
        if !tier.exact_for(max_abs) {
            continue;
        }
        let Some(cast) = consumer(&node.output[0]) else {
            continue;
        };
        let cast_node = &graph.node[cast];
        let to_float = cast_node
            .attribute
            .iter()
            .any(|a| a.name == "to" && a.i == crate::onnx_pb::tensor_proto::DataType::Float as i64);
        if !standard(cast, "Cast") || !to_float || cast_node.output.len() != 1 {
            continue;
        }
        let Some(mul) = consumer(&cast_node.output[0]) else {
            continue;
        };
        let mul_node = &graph.node[mul];
        if !standard(mul, "Mul") || mul_node.input.len() != 2 || mul_node.output.len() != 1 {
            continue;
        }
        let scale = if mul_node.input[0] == cast_node.output[0] {
            mul_node.input[1].clone()
        } else {
            mul_node.input[0].clone()
        };
        let mut add = None;
        if let Some(a) = consumer(&mul_node.output[0]) {
            let add_node = &graph.node[a];
            if standard(a, "Add") && add_node.input.len() == 2 && add_node.output.len() == 1 {
                let other = if add_node.input[0] == mul_node.output[0] {
                    &add_node.input[1]
                } else {
                    &add_node.input[0]
                };
                let is_bias = initializer(other).is_some_and(|b| {
                    b.datum_type == f32::datum_type()
                        && b.shape.iter().product::<usize>() == n
                        && b.shape.last() == Some(&n)
                });
                if is_bias {
                    add = Some((a, other.clone()));
                }
            }
        }
        found.push((i, cast, mul, add, k, n, scale));
    }
    let count = found.len();
    let mut gone = vec![false; graph.node.len()];
    for (i, cast, mul, add, k, n, scale) in found {
        let product = &graph.node[i];
        let mut inputs = vec![
            product.input[0].clone(),
            product.input[2].clone(),
            scale,
            product.input[1].clone(),
        ];
        let last = match &add {
            Some((a, bias)) => {
                inputs.push(bias.clone());
                *a
            }
            None => mul,
        };
        let int = |name: &str, value: usize| crate::onnx_pb::AttributeProto {
            name: name.into(),
            r#type: crate::onnx_pb::attribute_proto::AttributeType::Int as i32,
            i: value as i64,
            ..Default::default()
        };
        let fused = crate::onnx_pb::NodeProto {
            name: format!("{}.autoglm_linear_i8", product.name),
            op_type: ONNX_OP.into(),
            domain: DOMAIN.into(),
            input: inputs,
            output: graph.node[last].output.clone(),
            attribute: vec![int("k", k), int("n", n)],
            ..Default::default()
        };
        // In the place of the last node replaced: every input is made before it.
        graph.node[last] = fused;
        for j in [i, cast, mul] {
            if j != last {
                gone[j] = true;
            }
        }
    }
    let mut index = 0;
    graph.node.retain(|_| {
        index += 1;
        !gone[index - 1]
    });
    count
}

/// Adds [`fuse_onnx`]'s node to the operators of tract's own front end (natively, for graphs
/// ours does not read: [`crate::onnx_ops`]).
#[cfg(not(target_family = "wasm"))]
pub(crate) fn register(framework: &mut tract_onnx::Onnx) {
    framework.op_register.insert(ONNX_OP, |_ctx, node| {
        let attr = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.i);
        Ok((linear_i8(&node.name, attr, node.input.len())?, vec![]))
    });
}

/// [`fuse_onnx`]'s node as [`crate::onnx_ops`] reads it.
pub(crate) fn onnx_linear_i8(
    node: &crate::onnx_pb::NodeProto,
) -> TractResult<Box<dyn tract_hir::infer::InferenceOp>> {
    let attr = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.i);
    linear_i8(&node.name, attr, node.input.len())
}

fn linear_i8(
    name: &str,
    attr: impl Fn(&str) -> Option<i64>,
    inputs: usize,
) -> TractResult<Box<dyn tract_hir::infer::InferenceOp>> {
    let attr = |key: &str| -> TractResult<usize> {
        attr(key)
            .and_then(|v| usize::try_from(v).ok())
            .with_context(|| format!("{ONNX_OP} `{name}`: no attribute {key}"))
    };
    let op = OnnxLinearI8 {
        k: attr("k")?,
        n: attr("n")?,
        bias: inputs == 5,
    };
    Ok(tract_hir::ops::expandable::expand(op))
}

/// [`fuse_onnx`]'s node while tract types the graph: inputs `q` (u8), its zero point (u8), the
/// scale (f32, `n` values), the weights (i8 `[k, n]`, a constant) and optionally the bias (f32,
/// `n` values, a constant).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct OnnxLinearI8 {
    k: usize,
    n: usize,
    bias: bool,
}

impl tract_hir::ops::expandable::Expansion for OnnxLinearI8 {
    fn name(&self) -> StaticName {
        ONNX_OP.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut tract_hir::infer::Solver<'r>,
        inputs: &'p [tract_hir::infer::TensorProxy],
        outputs: &'p [tract_hir::infer::TensorProxy],
    ) -> TractResult<()> {
        use tract_hir::infer::*;
        check_input_arity(inputs, 4 + self.bias as usize)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, u8::datum_type())?;
        s.equals(&inputs[1].datum_type, u8::datum_type())?;
        s.equals(&inputs[2].datum_type, f32::datum_type())?;
        s.equals(&inputs[3].datum_type, i8::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].rank, &inputs[0].rank)?;
        let n = self.n;
        s.given(&inputs[0].shape, move |s, shape| {
            let mut shape = shape.to_vec();
            let last = shape
                .last_mut()
                .with_context(|| format!("{ONNX_OP}: a scalar input"))?;
            *last = TDim::Val(n as i64);
            s.equals(&outputs[0].shape, ShapeFactoid::from(shape))
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let (k, n) = (self.k, self.n);
        let weights = model
            .outlet_fact(inputs[3])?
            .konst
            .clone()
            .with_context(|| format!("{prefix}: the weights are not a constant"))?;
        ensure!(
            weights.datum_type() == i8::datum_type() && weights.shape() == [k, n],
            "{prefix}: weights {:?} of {:?}, not [{k}, {n}] of i8",
            weights.shape(),
            weights.datum_type()
        );
        let bias = if self.bias {
            let values = const_f32(model, inputs[4], n)?
                .with_context(|| format!("{prefix}: the bias is not {n} constant f32 values"))?;
            Some(Arc::new(values))
        } else {
            None
        };
        let tier = Tier::chosen();
        let weights = PackedI8::new(weights.try_as_plain_ram()?.as_slice::<i8>()?, k, n, tier)?;
        ensure!(
            tier.exact_for(weights.max_abs),
            "{prefix}: weights too large for the {} kernel",
            tier.name()
        );
        let op = LinearI8 {
            weights: Arc::new(weights),
            bias,
            gelu: false,
        };
        model.wire_node(prefix, op, &inputs[..3])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiny int8 fixture's ONNX graph.
    fn fixture_onnx() -> TractResult<crate::onnx_pb::ModelProto> {
        let dir = tempfile::tempdir()?;
        autoglm_export::fixture::write_base(&dir.path().join("base"));
        let mut options = autoglm_export::ExportOptions::new(dir.path().join("base"));
        options.quantization = autoglm_package::Quantization::Int8;
        let package = autoglm_export::export(&options)?;
        let onnx = package.file(&package.manifest().graph.file)?;
        Ok(<crate::onnx_pb::ModelProto as prost::Message>::decode(
            onnx,
        )?)
    }

    fn fixture_inputs(model: &TypedModel) -> TractResult<TVec<TValue>> {
        let (batch, seq) = (2usize, 7usize);
        let vocab = autoglm_export::fixture::vocab_size();
        let ids: Vec<i64> = (0..batch * seq).map(|i| (i * 7 % vocab) as i64).collect();
        let mut mask = vec![1i64; batch * seq];
        mask[seq - 2..seq].fill(0);
        model
            .input_outlets()?
            .iter()
            .map(|o| {
                let name = &model.node(o.node).name;
                let values = if name.contains("mask") {
                    mask.clone()
                } else if name.contains("type") {
                    vec![0; batch * seq]
                } else {
                    ids.clone()
                };
                Tensor::from_shape(&[batch, seq], &values).map(|t| t.into_tvalue())
            })
            .collect()
    }

    /// The model `proto` parses to (with our fused node known), typed, decluttered and
    /// rewritten as the backend does.
    fn rewritten(proto: &crate::onnx_pb::ModelProto) -> TractResult<TypedModel> {
        let mut model = crate::onnx_ops::tract_model(proto, true)?
            .into_typed()?
            .into_decluttered()?;
        crate::ops::rewrite(&mut model)?;
        Ok(model)
    }

    fn count(model: &TypedModel, op: &str) -> usize {
        model.nodes().iter().filter(|n| n.op().name() == op).count()
    }

    /// Fused in the protobuf, every linear layer is the same operator as fused after tract's
    /// declutter, and the plan's outputs are bit-identical.
    #[test]
    fn layers_fused_at_parse_equal_layers_fused_after_declutter() -> TractResult<()> {
        let layers = autoglm_export::fixture::LAYERS;
        let proto = fixture_onnx()?;
        let late = rewritten(&proto)?;
        let mut early = proto.clone();
        let graph = early.graph.as_mut().context("graph")?;
        let nodes = graph.node.len();
        let fused = fuse_onnx(graph, |_| None);
        assert_eq!(fused, 6 * layers, "q, k, v, output, up and down per layer");
        // Each layer's product, cast, rescale and bias add became one node.
        assert_eq!(graph.node.len(), nodes - 3 * fused);
        assert_eq!(
            graph
                .node
                .iter()
                .filter(|n| n.op_type == "MatMulInteger")
                .count(),
            0
        );
        let early = rewritten(&early)?;
        for model in [&late, &early] {
            assert_eq!(count(model, "AutoglmLinearI8"), 6 * layers);
            assert_eq!(count(model, "EinSum"), count(&late, "EinSum"));
        }
        // Fewer nodes for tract to type and declutter.
        let plain = crate::onnx_ops::tract_model(&proto, false)?.into_typed()?;
        let mut small = proto.clone();
        fuse_onnx(small.graph.as_mut().context("graph")?, |_| None);
        let small = crate::onnx_ops::tract_model(&small, true)?.into_typed()?;
        assert!(small.nodes().len() < plain.nodes().len());
        let run = |m: TypedModel| -> TractResult<TVec<TValue>> {
            let inputs = fixture_inputs(&m)?;
            m.into_optimized()?.into_runnable()?.run(inputs)
        };
        let (want, got) = (run(late)?, run(early)?);
        for (w, g) in want.iter().zip(got.iter()) {
            assert_eq!(**w, **g);
        }
        Ok(())
    }

    /// A layer whose intermediate values are used elsewhere, whose weights are not an int8
    /// initializer, whose cast is not to float or whose quantization is not
    /// `DynamicQuantizeLinear`'s is left to tract.
    #[test]
    fn only_the_exporters_form_is_fused_at_parse() -> TractResult<()> {
        let proto = fixture_onnx()?;
        let all = fuse_onnx(&mut proto.graph.clone().context("graph")?, |_| None);
        let graph = || proto.graph.clone().unwrap();
        let first = |g: &crate::onnx_pb::GraphProto, op: &str| {
            g.node.iter().position(|n| n.op_type == op).unwrap()
        };
        // The product is also a graph output.
        let mut g = graph();
        let product = g.node[first(&g, "MatMulInteger")].output[0].clone();
        g.output.push(crate::onnx_pb::ValueInfoProto {
            name: product,
            ..Default::default()
        });
        assert_eq!(fuse_onnx(&mut g, |_| None), all - 1);
        // The weights are not an initializer (nor are they given).
        let mut g = graph();
        let i = first(&g, "MatMulInteger");
        g.node[i].input[1] = "elsewhere".into();
        assert_eq!(fuse_onnx(&mut g, |_| None), all - 1);
        // A cast to another type.
        let mut g = graph();
        let product = g.node[first(&g, "MatMulInteger")].output[0].clone();
        let i = g
            .node
            .iter()
            .position(|n| n.input.contains(&product))
            .unwrap();
        assert_eq!(g.node[i].op_type, "Cast");
        g.node[i].attribute[0].i = crate::onnx_pb::tensor_proto::DataType::Double as i64;
        assert_eq!(fuse_onnx(&mut g, |_| None), all - 1);
        // Weights given by the caller (a streamed load) count as initializers.
        let mut g = graph();
        let weights: Vec<_> = std::mem::take(&mut g.initializer);
        let by_name = |name: &str| {
            weights
                .iter()
                .find(|t| t.name == name)
                .map(|t| Initializer {
                    datum_type: if t.data_type == 3 {
                        i8::datum_type()
                    } else {
                        f32::datum_type()
                    },
                    shape: t.dims.iter().map(|&d| d as usize).collect(),
                    bytes: &t.raw_data,
                })
        };
        assert_eq!(fuse_onnx(&mut g, by_name), all);
        // A graph with a subgraph is left alone.
        let mut g = graph();
        g.node[0].attribute.push(crate::onnx_pb::AttributeProto {
            name: "body".into(),
            g: Some(Default::default()),
            ..Default::default()
        });
        assert_eq!(fuse_onnx(&mut g, |_| None), 0);
        // A file that names the fused node itself is refused before anything else.
        let mut m = proto.clone();
        let g = m.graph.as_mut().unwrap();
        fuse_onnx(g, |_| None);
        assert!(crate::graph_guard::check(&m).is_err());
        Ok(())
    }

    /// Every linear layer of the int8 graph is fused, on every tier this CPU has, and the
    /// fused graph's outputs are bit-identical to tract's own plan of the unfused graph.
    #[test]
    fn fused_layers_equal_tracts_chain() -> TractResult<()> {
        let plain = crate::ops::fixture_graph(autoglm_package::Quantization::Int8)?;
        let layers = autoglm_export::fixture::LAYERS;
        let inputs = || fixture_inputs(&plain);
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

    /// The GELU folded into the layers before it ([`fuse_gelu`]): every one (one per layer),
    /// none left to tract, and the outputs bit-identical to tract's plan of the unfused graph
    /// on one thread and on a pool of two.
    #[test]
    fn gelu_folded_into_the_layers_equals_tracts_gelu() -> TractResult<()> {
        use crate::ops::{gelu_count, run_one_and_two_threads};
        let plain = crate::ops::fixture_graph(autoglm_package::Quantization::Int8)?;
        let inputs = || fixture_inputs(&plain);
        let [expected, _] = run_one_and_two_threads(plain.clone(), inputs)?;
        let layers = autoglm_export::fixture::LAYERS;
        assert_eq!(gelu_count(&plain), layers);
        let mut model = plain.clone();
        fuse(&mut model)?;
        // Nothing to fold before the layers are fused.
        assert_eq!(fuse_gelu(&mut plain.clone())?, 0);
        assert_eq!(fuse_gelu(&mut model)?, layers);
        assert_eq!(gelu_count(&model), 0);
        assert_eq!(fuse_gelu(&mut model)?, 0, "folded once");
        let [single, threaded] = run_one_and_two_threads(model, inputs)?;
        for ((e, g), t) in expected.iter().zip(single.iter()).zip(threaded.iter()) {
            assert_eq!(**e, **g);
            assert_eq!(**e, **t);
        }
        Ok(())
    }

    /// A layer large enough to run its GELU in parts on a pool: the same values as the layer
    /// without it followed by the GELU over the whole output on one thread.
    #[test]
    fn gelu_in_parts_equals_gelu_on_one_thread() -> TractResult<()> {
        let (rows, k, n) = (37usize, 24usize, 1000usize);
        assert!(rows * n > crate::ops::SPLIT_VALUES, "split on a pool");
        // (`values` lie in [-0.5, 0.5): weights within ±60, as the exporter keeps them, so
        // that every tier takes them, activations over the whole u8 range.)
        let w: Vec<i8> = autoglm_export::fixture::values(5, k * n)
            .into_iter()
            .map(|v| (v * 120.0) as i8)
            .collect();
        let q: Vec<u8> = autoglm_export::fixture::values(6, rows * k)
            .into_iter()
            .map(|v| ((v + 0.5) * 255.0) as u8)
            .collect();
        let scale: Vec<f32> = (0..n).map(|j| 1e-3 * (1.0 + (j % 7) as f32)).collect();
        let bias: Vec<f32> = (0..n).map(|j| (j % 13) as f32 * 0.1 - 0.6).collect();
        let tier = Tier::chosen();
        let op = LinearI8 {
            weights: Arc::new(PackedI8::new(&w, k, n, tier)?),
            bias: Some(Arc::new(bias)),
            gelu: false,
        };
        let inputs = || -> TractResult<TVec<TValue>> {
            Ok(tvec![
                Tensor::from_shape(&[rows, k], &q)?.into_tvalue(),
                tensor0(128u8).into_tvalue(),
                Tensor::from_shape(&[n], &scale)?.into_tvalue()
            ])
        };
        let mut want = op.eval_out_of_plan(inputs()?)?.expect("evaluates")[0]
            .clone()
            .into_tensor();
        super::super::flinear::gelu_in_place(want.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?)?;
        let folded = LinearI8 { gelu: true, ..op };
        for threads in [1, 2, 3] {
            let got = tract_linalg::multithread::multithread_tract_scope(
                tract_linalg::multithread::Executor::multithread(threads),
                || folded.eval_out_of_plan(inputs().expect("inputs")),
            )?
            .expect("evaluates");
            assert_eq!(*got[0], want, "{threads} threads");
        }
        Ok(())
    }
}
