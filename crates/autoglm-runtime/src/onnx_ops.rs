//! **Our ONNX front end: the operators our exporter writes, and no others** (issue #15: the
//! component's size).
//!
//! tract's ONNX front end (`tract_onnx::onnx()`) registers a builder for every ONNX operator
//! tract knows, and tract-onnx depends on tract-nnef, whose registrations (run at start-up,
//! whether used or not) keep every tract-core operator and an FFT library linked. In the WASI
//! component both were 4.4 MB of 13.4 (BENCHMARKS.md, wave 23). [`parse`] reads the graphs
//! `autoglm-export` and `autoglm-adapt` write (opset 13 or later) into tract's inference model
//! itself, from our own protobuf messages ([`crate::onnx_pb`]), with the operators tract's
//! builders would make (tract-hir's, public) and, for the few whose builders tract-onnx keeps
//! private, the same tract-core operators, so that the typed graph, and with it our rewrites in
//! [`crate::ops`], is the one tract's front end gives (tested below, bit for bit);
//! `DynamicQuantizeLinear` becomes our bit-identical [`DynamicQuantize`] at once.
//!
//! A graph with any other operator (a model not made by our exporter, or by a version that
//! wrote others) is parsed natively with tract's own front end; the component, which links
//! only this one, refuses it with a message naming the operator and the command that exports
//! the model again. The plain reference graph ([`crate::tract::TractBackend::plain`]) is
//! always tract's own, natively.

use crate::onnx_pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension,
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto,
};
use crate::ops::quantize::DynamicQuantize;
use std::collections::HashMap;
use tract_hir::internal::*;
use tract_hir::ops::binary::Nary;
use tract_hir::ops::{array, matmul, nn};
use tract_hir::tract_core::ops::cast::cast;
use tract_hir::tract_core::ops::change_axes::wire_with_rank_broadcast;
use tract_hir::tract_core::ops::{logic, math, nn as core_nn};

/// The default domain's opset from which our builders follow the spec (`Unsqueeze`'s and
/// `ReduceSum`'s axes as an input, `Softmax` over one axis).
const MIN_OPSET: i64 = 13;

/// The operators [`parse`] knows, in the default domain: those `autoglm-export` writes, and
/// `LogSoftmax` of the task heads `autoglm-adapt` adds.
const OPERATORS: &[&str] = &[
    "Abs",
    "Add",
    "Cast",
    "Concat",
    "CumSum",
    "Div",
    "DynamicQuantizeLinear",
    "Erf",
    "Gather",
    "Identity",
    "LayerNormalization",
    "Less",
    "LogSoftmax",
    "MatMul",
    "Max",
    "Mul",
    "Or",
    "ReduceSum",
    "Reshape",
    "Shape",
    "Slice",
    "Softmax",
    "Sqrt",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
];

/// A graph read into tract's inference model: the model, the node output (or source) of
/// each named value, and the names used but never defined (each made a source).
#[derive(Debug)]
pub(crate) struct Parsed {
    pub model: InferenceModel,
    pub outlets_by_name: HashMap<String, OutletId>,
    pub unresolved_inputs: Vec<String>,
}

/// Why [`parse`] cannot read `model` (the first reason found), or `None` where it can.
/// `fused` names the node [`crate::ops::qlinear::fuse_onnx`] writes, where it ran.
pub(crate) fn unsupported(model: &ModelProto, fused: Option<&str>) -> Option<String> {
    let opset = opset(model);
    if opset < MIN_OPSET {
        return Some(format!(
            "opset {opset} (our front end reads {MIN_OPSET} and later)"
        ));
    }
    let graph: &GraphProto = model.graph.as_ref()?;
    graph.node.iter().find_map(|node| {
        let ours = Some(&*node.op_type) == fused && node.domain == crate::ops::qlinear::DOMAIN;
        let standard = OPERATORS.contains(&node.op_type.as_str())
            && (node.domain.is_empty() || node.domain == "ai.onnx");
        if !ours && !standard {
            return Some(format!(
                "operator `{}` (node `{}`)",
                node.op_type, node.name
            ));
        }
        match node.op_type.as_str() {
            // One output, the last axis, f32 statistics: what the exporter writes.
            "LayerNormalization" => {
                let axis = int(node, "axis").unwrap_or(-1);
                let stash = int(node, "stash_type").unwrap_or(1);
                let outputs = node.output.iter().filter(|o| !o.is_empty()).count();
                (axis != -1 || stash != 1 || outputs != 1).then(|| {
                    format!(
                        "a LayerNormalization other than over the last axis (`{}`)",
                        node.name
                    )
                })
            }
            "ReduceSum" => (node.input.len() != 2 || int(node, "noop_with_empty_axes") == Some(1))
                .then(|| format!("a ReduceSum without its axes (`{}`)", node.name)),
            "Unsqueeze" => (node.input.len() != 2)
                .then(|| format!("an Unsqueeze without its axes (`{}`)", node.name)),
            "Shape" => (int(node, "start").unwrap_or(0) != 0 || int(node, "end").is_some())
                .then(|| format!("a Shape of some axes only (`{}`)", node.name)),
            _ => None,
        }
    })
}

fn opset(model: &ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version)
}

/// Reads `model` (already through [`crate::ops::qlinear::fuse_onnx`] where `patch`): with our
/// front end where it can and our operators will be patched in; natively with tract's for any
/// other graph (and always for the plain reference, without `patch`); in the component, ours
/// or an error.
pub(crate) fn parse(model: &ModelProto, patch: bool) -> crate::Result<Parsed> {
    let fused = patch.then_some(crate::ops::qlinear::ONNX_OP);
    match unsupported(model, fused) {
        None if patch || cfg!(target_family = "wasm") => {
            parse_ours(model).map_err(|e| crate::RuntimeError::Model(format!("{e:?}")))
        }
        why => parse_with_tract(model, patch, why),
    }
}

/// tract's own front end, on our messages encoded and decoded again as tract-onnx's (every
/// field carried: [`crate::onnx_pb`]).
#[cfg(not(target_family = "wasm"))]
fn parse_with_tract(
    model: &ModelProto,
    patch: bool,
    _why: Option<String>,
) -> crate::Result<Parsed> {
    use prost::Message;
    let model_error = |e: TractError| crate::RuntimeError::Model(format!("{e:?}"));
    let proto = tract_onnx::pb::ModelProto::decode(&model.encode_to_vec()[..])
        .map_err(|e| crate::RuntimeError::Model(format!("the graph is not an ONNX model: {e}")))?;
    let mut framework = tract_onnx::onnx();
    if patch {
        crate::ops::qlinear::register(&mut framework);
    }
    let parsed = framework.parse(&proto, None).map_err(model_error)?;
    Ok(Parsed {
        model: parsed.model,
        outlets_by_name: parsed.outlets_by_name,
        unresolved_inputs: parsed.unresolved_inputs,
    })
}

/// The component links no other front end than ours: a graph it cannot read is refused.
#[cfg(target_family = "wasm")]
fn parse_with_tract(
    _model: &ModelProto,
    _patch: bool,
    why: Option<String>,
) -> crate::Result<Parsed> {
    Err(crate::RuntimeError::Model(format!(
        "this runtime reads the graphs autoglm-export writes, and this one has {}; \
         export the model again with `autoglm export`",
        why.unwrap_or_default()
    )))
}

/// The inference model of `model`'s graph: its inputs (sources with the declared types and
/// shapes, named dims as symbols), its initializers (constants), its nodes (wired by value
/// name, whatever their order) and its outputs.
fn parse_ours(proto: &ModelProto) -> TractResult<Parsed> {
    let graph = proto.graph.as_ref().context("the ONNX file has no graph")?;
    let mut model = InferenceModel::default();
    let mut outlets_by_name = HashMap::<String, OutletId>::new();
    let mut initializers: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    for input in &graph.input {
        let outlet = if let Some(t) = initializers.remove(input.name.as_str()) {
            model.add_const(&input.name, tensor(t)?)?
        } else {
            let fact = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(type_proto::Value::TensorType(t)) => input_fact(&model, t)?,
                _ => bail!(
                    "graph input `{}` is not a tensor of a known type",
                    input.name
                ),
            };
            model.add_source(&input.name, fact)?
        };
        outlets_by_name.insert(input.name.clone(), outlet);
    }
    let mut rest: Vec<_> = initializers.into_iter().collect();
    rest.sort_by_key(|(name, _)| *name);
    for (name, t) in rest {
        let outlet = model.add_const(name, tensor(t)?)?;
        outlets_by_name.insert(name.to_string(), outlet);
    }
    let mut ids = Vec::with_capacity(graph.node.len());
    for node in &graph.node {
        let name = match (&*node.name, node.output.first()) {
            ("", Some(out)) if !out.is_empty() => out.clone(),
            ("", _) => format!("{}-{}", model.nodes().len(), node.op_type),
            (name, _) => name.to_string(),
        };
        let op = build(node).with_context(|| format!("node `{}` ({})", node.name, node.op_type))?;
        let outputs: Vec<&String> = node.output.iter().filter(|o| !o.is_empty()).collect();
        let facts = outputs.iter().map(|_| InferenceFact::default()).collect();
        let id = model.add_node(name, op, facts)?;
        for (slot, output) in outputs.into_iter().enumerate() {
            outlets_by_name.insert(output.clone(), OutletId::new(id, slot));
            model.set_outlet_label(OutletId::new(id, slot), output.clone())?;
        }
        ids.push(id);
    }
    let mut unresolved_inputs = vec![];
    for (node, &id) in graph.node.iter().zip(&ids) {
        for (slot, input) in node.input.iter().filter(|i| !i.is_empty()).enumerate() {
            let outlet = match outlets_by_name.get(input) {
                Some(&outlet) => outlet,
                None => {
                    let outlet = model.add_source(input, InferenceFact::default())?;
                    unresolved_inputs.push(input.clone());
                    outlets_by_name.insert(input.clone(), outlet);
                    outlet
                }
            };
            model.add_edge(outlet, InletId::new(id, slot))?;
        }
    }
    let mut outputs = vec![];
    for output in &graph.output {
        let outlet = *outlets_by_name
            .get(&output.name)
            .with_context(|| format!("the graph's output `{}` is never computed", output.name))?;
        model.set_outlet_label(outlet, output.name.clone())?;
        outputs.push(outlet);
    }
    model.select_output_outlets(&outputs)?;
    Ok(Parsed {
        model,
        outlets_by_name,
        unresolved_inputs,
    })
}

/// tract's type for an ONNX element type.
pub(crate) fn datum_type(code: i32) -> TractResult<DatumType> {
    Ok(match DataType::try_from(code) {
        Ok(DataType::Float) => f32::datum_type(),
        Ok(DataType::Double) => f64::datum_type(),
        Ok(DataType::Float16) => f16::datum_type(),
        Ok(DataType::Int8) => i8::datum_type(),
        Ok(DataType::Int16) => i16::datum_type(),
        Ok(DataType::Int32) => i32::datum_type(),
        Ok(DataType::Int64) => i64::datum_type(),
        Ok(DataType::Uint8) => u8::datum_type(),
        Ok(DataType::Uint16) => u16::datum_type(),
        Ok(DataType::Uint32) => u32::datum_type(),
        Ok(DataType::Uint64) => u64::datum_type(),
        Ok(DataType::Bool) => bool::datum_type(),
        _ => bail!("ONNX element type {code} is not supported"),
    })
}

/// A graph input's fact: its type, and its dims (a name is a symbol; `?`, or none, unknown).
fn input_fact(model: &InferenceModel, t: &type_proto::Tensor) -> TractResult<InferenceFact> {
    let fact = InferenceFact::default().with_datum_type(datum_type(t.elem_type)?);
    let Some(shape) = &t.shape else {
        return Ok(fact);
    };
    let dims: TVec<DimFact> = shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(dimension::Value::DimValue(v)) if *v >= 0 => DimFact::from(v.to_dim()),
            Some(dimension::Value::DimParam(p)) if is_symbol(p) => {
                DimFact::from(TDim::from(model.symbols.sym(p)))
            }
            _ => DimFact::default(),
        })
        .collect();
    Ok(fact.with_shape(ShapeFactoid::closed(dims)))
}

/// A dim name our graphs use (`batch`, `sequence`): a plain identifier.
fn is_symbol(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The tensor of an initializer: raw little-endian data, or the typed fields.
fn tensor(t: &TensorProto) -> TractResult<Tensor> {
    let dt = datum_type(t.data_type).with_context(|| format!("initializer `{}`", t.name))?;
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| format_err!("initializer `{}`: a negative dim", t.name))?;
    ensure!(
        t.data_location.unwrap_or(0) == 0 && t.external_data.is_empty(),
        "initializer `{}`: external data (outside the graph's file) is not supported",
        t.name
    );
    let values = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .context("initializer too large")?;
    if !t.raw_data.is_empty() {
        ensure!(
            values.checked_mul(dt.size_of()) == Some(t.raw_data.len()),
            "initializer `{}`: {} bytes of data for {shape:?} {dt:?}",
            t.name,
            t.raw_data.len()
        );
        // Little-endian, as every target of ours is.
        let mut tensor = Tensor::zero_dt(dt, &shape)?;
        tensor.as_bytes_mut().copy_from_slice(&t.raw_data);
        return Ok(tensor);
    }
    let tensor = match dt {
        DatumType::F32 => Tensor::from_shape(&shape, &t.float_data)?,
        DatumType::F64 => Tensor::from_shape(&shape, &t.double_data)?,
        DatumType::I64 => Tensor::from_shape(&shape, &t.int64_data)?,
        DatumType::I32 => Tensor::from_shape(&shape, &t.int32_data)?,
        DatumType::Bool => {
            let v: Vec<bool> = t.int32_data.iter().map(|&x| x != 0).collect();
            Tensor::from_shape(&shape, &v)?
        }
        _ => bail!(
            "initializer `{}`: {dt:?} without raw data is not supported",
            t.name
        ),
    };
    Ok(tensor)
}

fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// An integer attribute (absent, or of another type: `None`).
fn int(node: &NodeProto, name: &str) -> Option<i64> {
    attribute(node, name)
        .filter(|a| a.r#type == AttributeType::Int as i32)
        .map(|a| a.i)
}

fn float(node: &NodeProto, name: &str) -> Option<f32> {
    attribute(node, name)
        .filter(|a| a.r#type == AttributeType::Float as i32)
        .map(|a| a.f)
}

fn ints<'a>(node: &'a NodeProto, name: &str) -> Option<&'a [i64]> {
    attribute(node, name)
        .filter(|a| a.r#type == AttributeType::Ints as i32)
        .map(|a| &a.ints[..])
}

/// The operator for `node` (one of [`OPERATORS`] or our fused int8 layer).
fn build(node: &NodeProto) -> TractResult<Box<dyn InferenceOp>> {
    let op: Box<dyn InferenceOp> = match node.op_type.as_str() {
        "Add" => math::Add.into_hir(),
        "Sub" => math::Sub.into_hir(),
        "Mul" => math::Mul.into_hir(),
        "Div" => math::Div.into_hir(),
        "Max" => Box::new(Nary(Box::new(math::Max), false)),
        "Abs" => math::abs().into_hir(),
        "Erf" => math::erf().into_hir(),
        "Sqrt" => math::sqrt().into_hir(),
        "Tanh" => math::tanh().into_hir(),
        "Less" => logic::CompLT.into_hir(),
        "Or" => logic::Or.into_hir(),
        "Identity" => Box::<tract_hir::ops::identity::Identity>::default(),
        "MatMul" => expand(matmul::MatMulInference::default()),
        "Cast" => {
            let to = int(node, "to").context("no `to`")?;
            let mut to = datum_type(i32::try_from(to).unwrap_or(-1))?;
            // As tract's builder: the integers of our graphs are shapes and positions.
            if to == i64::datum_type() {
                to = TDim::datum_type();
            }
            Box::new(cast(to))
        }
        "Concat" => expand(array::Concat::new(int(node, "axis").context("no `axis`")?)),
        "Gather" => expand(array::Gather::new(int(node, "axis").unwrap_or(0))),
        "Reshape" => expand(array::Reshape::new(
            int(node, "allowzero").unwrap_or(0) != 0,
        )),
        "Transpose" => {
            let perm = ints(node, "perm")
                .map(|p| p.iter().map(|&a| usize::try_from(a)).collect())
                .transpose()
                .map_err(|_| format_err!("a negative axis in `perm`"))?;
            expand(array::PermuteAxes::new(perm))
        }
        "Softmax" => expand(nn::Softmax::new(int(node, "axis").unwrap_or(-1) as isize)),
        // Multi-task heads (autoglm-adapt).
        "LogSoftmax" => expand(nn::LayerLogSoftmax::new(
            int(node, "axis").unwrap_or(-1) as isize,
            false,
        )),
        "Shape" => expand(array::Shape::new(TDim::datum_type())),
        "Slice" => {
            // Inputs: data, starts, ends, then the optional axes and steps (an empty name:
            // absent), numbered among the inputs present.
            let present = |i: usize| node.input.get(i).is_some_and(|s| !s.is_empty());
            let index = |i: usize| present(i).then(|| (0..i).filter(|&j| present(j)).count());
            Box::new(array::StridedSlice {
                optional_axes_input: index(3),
                optional_steps_input: index(4),
                begin_mask: 0,
                end_mask: 0,
                shrink_axis_mask: 0,
            })
        }
        "CumSum" => expand(CumSum {
            exclusive: int(node, "exclusive") == Some(1),
            reverse: int(node, "reverse") == Some(1),
        }),
        "Unsqueeze" => expand(WithAxes::Unsqueeze),
        "ReduceSum" => expand(WithAxes::ReduceSum {
            keep_dims: int(node, "keepdims").unwrap_or(1) == 1,
        }),
        "LayerNormalization" => expand(LayerNormalization {
            epsilon: float(node, "epsilon").unwrap_or(1e-5),
            bias: node.input.get(2).is_some_and(|s| !s.is_empty()),
        }),
        "DynamicQuantizeLinear" => expand(DynamicQuantizeLinear),
        op if op == crate::ops::qlinear::ONNX_OP => crate::ops::qlinear::onnx_linear_i8(node)?,
        op => bail!("operator `{op}` is not one our exporter writes"),
    };
    Ok(op)
}

/// The constant `axes` input of `Unsqueeze` and `ReduceSum`, as axes of a tensor of rank
/// `rank` (negative ones counted from the end).
fn axes(value: &Tensor, rank: usize, op: &str) -> TractResult<Vec<i64>> {
    let values = value.cast_to::<i64>()?;
    let values = values.try_as_plain_ram()?.as_slice::<i64>()?.to_vec();
    let rank = rank as i64;
    values
        .into_iter()
        .map(|a| {
            let a = if a < 0 { a + rank } else { a };
            ensure!((0..rank).contains(&a), "{op}: axis {a} out of rank {rank}");
            Ok(a)
        })
        .collect()
}

/// ONNX `Unsqueeze` (opset 13) and `ReduceSum` (opset 13): tract-hir's `AddDims` and
/// `Reduce<Sum>` with the axes read from the constant second input.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum WithAxes {
    Unsqueeze,
    ReduceSum { keep_dims: bool },
}

impl WithAxes {
    /// The operator for the axes `value` on an input of rank `rank`.
    fn resolve(&self, value: &Tensor, rank: usize) -> TractResult<Resolved> {
        Ok(match self {
            WithAxes::Unsqueeze => {
                let axes = axes(value, rank + value.len(), "Unsqueeze")?;
                Resolved::AddDims(array::AddDims::new(
                    axes.into_iter().map(|a| a as isize).collect(),
                ))
            }
            WithAxes::ReduceSum { keep_dims } => {
                let axes = axes(value, rank, "ReduceSum")?;
                // No axes reduce all of them (the spec's default without
                // `noop_with_empty_axes`).
                let axes = (!axes.is_empty()).then_some(axes);
                Resolved::Reduce(nn::Reduce::new(axes, *keep_dims, nn::Reducer::Sum))
            }
        })
    }
}

enum Resolved {
    AddDims(array::AddDims),
    Reduce(nn::Reduce),
}

impl Resolved {
    fn output_shape(&self, shape: &[TDim]) -> TVec<TDim> {
        match self {
            Resolved::AddDims(op) => op.output_shape(shape),
            Resolved::Reduce(op) => op.output_shape(shape),
        }
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        input: OutletId,
    ) -> TractResult<TVec<OutletId>> {
        match self {
            Resolved::AddDims(op) => op.wire(prefix, model, &[input]),
            Resolved::Reduce(op) => op.wire(prefix, model, &[input]),
        }
    }
}

impl Expansion for WithAxes {
    fn name(&self) -> StaticName {
        match self {
            WithAxes::Unsqueeze => "Unsqueeze".into(),
            WithAxes::ReduceSum { .. } => "ReduceSum".into(),
        }
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.given_2(
            &inputs[0].shape,
            &inputs[1].value,
            move |s, shape, value| {
                let op = self.resolve(&value, shape.len())?;
                s.equals(&outputs[0].shape, op.output_shape(&shape))
            },
        )
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let value = model
            .outlet_fact(inputs[1])?
            .konst
            .clone()
            .with_context(|| format!("{}: the axes must be a constant", self.name()))?;
        let rank = model.outlet_fact(inputs[0])?.rank();
        self.resolve(&value, rank)?.wire(prefix, model, inputs[0])
    }
}

/// ONNX `LayerNormalization` over the last axis, f32, one output: the graph of tract-core
/// operators that tract's own builder wires, which tract's declutter turns into `RmsNorm` and
/// [`crate::ops::layernorm`] into one operator. The mean and the variance are sums divided by
/// the width; `x − mean` times `1/sqrt(variance + epsilon)`, then `· scale (+ bias)`.
#[derive(Debug, Clone)]
struct LayerNormalization {
    epsilon: f32,
    bias: bool,
}

impl Expansion for LayerNormalization {
    fn name(&self) -> StaticName {
        "LayerNormalization".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2 + self.bias as usize)?;
        check_output_arity(outputs, 1)?;
        for input in inputs {
            s.equals(&input.datum_type, f32::datum_type())?;
        }
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?.clone();
        let last = fact
            .rank()
            .checked_sub(1)
            .context("LayerNormalization of a scalar")?;
        let width = fact.shape[last]
            .to_usize()
            .context("LayerNormalization: the normalized axis must have a known size")?;
        let x = inputs[0];
        let sum = |model: &mut TypedModel, name: &str, v: OutletId| {
            let op = core_nn::Reduce::new(tvec![last], core_nn::Reducer::Sum);
            model.wire_node(format!("{prefix}.{name}"), op, &[v])
        };
        let n = model.add_const(format!("{prefix}.n"), tensor0(width as f32))?;
        let binary = |model: &mut TypedModel, name: &str, op, a: OutletId, b: OutletId| {
            wire_with_rank_broadcast(format!("{prefix}.{name}"), model, op, &[a, b]).map(|w| w[0])
        };
        let total = sum(model, "sum", x)?[0];
        let mean = binary(model, "mean", math::div(), total, n)?;
        let centred = model.wire_node(format!("{prefix}.centred"), math::sub(), &[x, mean])?[0];
        let squares = model.wire_node(format!("{prefix}.squares"), math::square(), &[centred])?;
        let total = sum(model, "sum_of_squares", squares[0])?[0];
        let variance = binary(model, "variance", math::div(), total, n)?;
        let epsilon = model.add_const(format!("{prefix}.epsilon"), tensor0(self.epsilon))?;
        let variance = binary(model, "plus_epsilon", math::add(), variance, epsilon)?;
        let inv = model.wire_node(format!("{prefix}.inv_std_dev"), math::rsqrt(), &[variance])?;
        let normalized = model.wire_node(
            format!("{prefix}.normalized"),
            math::mul(),
            &[centred, inv[0]],
        )?[0];
        let y = binary(model, "scaled", math::mul(), normalized, inputs[1])?;
        let y = if self.bias {
            binary(model, "shifted", math::add(), y, inputs[2])?
        } else {
            y
        };
        Ok(tvec![y])
    }
}

/// ONNX `CumSum` along a constant axis: tract-core's `CumSum`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct CumSum {
    exclusive: bool,
    reverse: bool,
}

impl Expansion for CumSum {
    fn name(&self) -> StaticName {
        "CumSum".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        s.equals(&inputs[1].rank, 0)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let axis = model
            .outlet_fact(inputs[1])?
            .konst
            .clone()
            .context("CumSum: the axis must be a constant")?;
        let rank = model.outlet_fact(inputs[0])?.rank();
        let axis = match axes(&axis, rank, "CumSum")?[..] {
            [axis] => axis as usize,
            _ => bail!("CumSum: the axis must be one value"),
        };
        let op = tract_hir::tract_core::ops::array::CumSum {
            axis,
            exclusive: self.exclusive,
            reverse: self.reverse,
        };
        model.wire_node(prefix, op, &inputs[..1])
    }
}

/// ONNX `DynamicQuantizeLinear`: our [`DynamicQuantize`] (bit-identical to the spec and to
/// tract's operator, which [`crate::ops::rewrite`] would otherwise replace by it).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct DynamicQuantizeLinear;

impl Expansion for DynamicQuantizeLinear {
    fn name(&self) -> StaticName {
        "DynamicQuantizeLinear".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(3)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 3)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, u8::datum_type())?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        s.equals(&outputs[1].datum_type, f32::datum_type())?;
        s.equals(&outputs[1].rank, 0)?;
        s.equals(&outputs[2].datum_type, u8::datum_type())?;
        s.equals(&outputs[2].rank, 0)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, DynamicQuantize, &inputs[..1])
    }
}

/// `proto` read by tract's own front end (with [`crate::ops::qlinear`]'s node where `patch`):
/// the reference our front end is compared with.
#[cfg(test)]
pub(crate) fn tract_model(proto: &ModelProto, patch: bool) -> TractResult<InferenceModel> {
    let bytes = prost::Message::encode_to_vec(proto);
    let proto = <tract_onnx::pb::ModelProto as prost::Message>::decode(&bytes[..])?;
    let mut framework = tract_onnx::onnx();
    if patch {
        crate::ops::qlinear::register(&mut framework);
    }
    framework.model_for_proto_model(&proto)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_it_cannot_parse() {
        let node = |op: &str| NodeProto {
            op_type: op.into(),
            name: format!("{op}_0"),
            input: vec!["x".into(), "a".into()],
            output: vec!["y".into()],
            ..Default::default()
        };
        let model = |nodes: Vec<NodeProto>, version| ModelProto {
            opset_import: vec![crate::onnx_pb::OperatorSetIdProto {
                domain: String::new(),
                version,
            }],
            graph: Some(GraphProto {
                node: nodes,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(unsupported(&model(vec![node("Add")], 17), None), None);
        let conv = unsupported(&model(vec![node("Add"), node("Conv")], 17), None);
        assert_eq!(conv.as_deref(), Some("operator `Conv` (node `Conv_0`)"));
        assert!(unsupported(&model(vec![node("Add")], 11), None).is_some());
        let mut ours = node("AutoglmLinearI8");
        ours.domain = "ai.autoglm".into();
        assert!(unsupported(&model(vec![ours.clone()], 17), None).is_some());
        assert_eq!(
            unsupported(&model(vec![ours], 17), Some("AutoglmLinearI8")),
            None
        );
        let mut two_outputs = node("LayerNormalization");
        two_outputs.output.push("mean".into());
        assert!(unsupported(&model(vec![two_outputs], 17), None).is_some());
        let mut no_axes = node("ReduceSum");
        no_axes.input.truncate(1);
        assert!(unsupported(&model(vec![no_axes], 17), None).is_some());
    }

    /// Every graph our exporter writes (fp32 and int8, dense and window attention) is parsed
    /// by our front end, and gives the typed graph tract's full registry gives: the same
    /// operators in the same order once decluttered and patched (where tract's
    /// `DynamicQuantizeLinearU8` is replaced by ours), computing the same bits.
    #[test]
    fn exported_graphs_parse_as_with_tracts_registry() -> TractResult<()> {
        use autoglm_package::{Attention, Quantization};
        let dir = tempfile::tempdir()?;
        autoglm_export::fixture::write_base(&dir.path().join("base"));
        for quantization in [Quantization::None, Quantization::Int8] {
            for (attention, multiple) in [
                (Attention::Dense, 1),
                (
                    Attention::Window {
                        window: 4,
                        global: 1,
                    },
                    4,
                ),
            ] {
                let mut options = autoglm_export::ExportOptions::new(dir.path().join("base"));
                options.quantization = quantization;
                options.attention = attention;
                let package = autoglm_export::export(&options)?;
                let onnx = package.file(&package.manifest().graph.file)?;
                let mut proto = <ModelProto as prost::Message>::decode(&onnx[..])?;
                let graph = proto.graph.as_mut().context("graph")?;
                crate::ops::qlinear::fuse_onnx(graph, |_| None);
                let what = format!("{quantization:?} {attention:?}");
                let fused = Some(crate::ops::qlinear::ONNX_OP);
                assert_eq!(unsupported(&proto, fused), None, "{what}");
                let typed = |mut model: InferenceModel| -> TractResult<TypedModel> {
                    crate::tract::state_whole_blocks(&mut model, multiple)?;
                    let mut typed = model.into_typed()?.into_decluttered()?;
                    crate::ops::rewrite(&mut typed)?;
                    // Nodes in evaluation order, without those the rewrites left unused.
                    typed.into_compact()
                };
                let ours = typed(parse_ours(&proto)?.model)?;
                let tracts = typed(tract_model(&proto, true)?)?;
                let names = |m: &TypedModel| -> Vec<String> {
                    m.nodes()
                        .iter()
                        .map(|n| n.op().name().to_string())
                        .collect()
                };
                assert_eq!(names(&ours), names(&tracts), "{what}");
                let (batch, seq) = (2, 8);
                let inputs = crate::ops::fixture_inputs(&ours, batch, seq)?;
                let run = |m: TypedModel| m.into_runnable()?.run(inputs.clone());
                let (a, b) = (run(ours)?, run(tracts)?);
                assert_eq!(a.len(), b.len());
                for (a, b) in a.iter().zip(&b) {
                    assert_eq!(a.shape(), b.shape(), "{what}");
                    let (a, b) = (a.cast_to::<f32>()?, b.cast_to::<f32>()?);
                    let a = a.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
                    let b = b.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
                    let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{what}: {a:?} vs {b:?}");
                }
            }
        }
        Ok(())
    }

    /// A task head as `autoglm-adapt` writes it (`MatMul`, `Add`, `Tanh`, `LogSoftmax`,
    /// `Concat`): the same numbers from both front ends.
    #[test]
    fn task_heads_parse_as_with_tracts_registry() -> TractResult<()> {
        use crate::onnx_pb::{tensor_proto, type_proto, OperatorSetIdProto, TypeProto};
        use crate::onnx_pb::{TensorShapeProto, ValueInfoProto};
        let f32s = |name: &str, dims: &[i64], values: &[f32]| TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: tensor_proto::DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        };
        let node = |op: &str, inputs: &[&str], out: &str, axis: Option<i64>| NodeProto {
            op_type: op.into(),
            name: out.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.into()],
            attribute: axis
                .map(|i| AttributeProto {
                    name: "axis".into(),
                    r#type: AttributeType::Int as i32,
                    i,
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let dim = |value| crate::onnx_pb::tensor_shape_proto::Dimension {
            value: Some(value),
            ..Default::default()
        };
        let input = ValueInfoProto {
            name: "x".into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: tensor_proto::DataType::Float as i32,
                    shape: Some(TensorShapeProto {
                        dim: vec![
                            dim(dimension::Value::DimParam("batch".into())),
                            dim(dimension::Value::DimValue(3)),
                        ],
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let w: Vec<f32> = (0..6).map(|i| i as f32 * 0.37 - 1.0).collect();
        let proto = ModelProto {
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(GraphProto {
                initializer: vec![f32s("w", &[3, 2], &w), f32s("b", &[2], &[0.25, -0.5])],
                input: vec![input],
                node: vec![
                    node("MatMul", &["x", "w"], "m", None),
                    node("Add", &["m", "b"], "a", None),
                    node("Tanh", &["a"], "t", None),
                    node("LogSoftmax", &["t"], "l", Some(-1)),
                    node("Concat", &["l", "t"], "y", Some(-1)),
                ],
                output: vec![ValueInfoProto {
                    name: "y".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(unsupported(&proto, None), None);
        let x = Tensor::from_shape(&[2, 3], &[0.5f32, -1.0, 2.0, 0.0, 1.5, -0.25])?;
        let run = |model: InferenceModel| -> TractResult<Vec<f32>> {
            let plan = model.into_optimized()?.into_runnable()?;
            let y = plan.run(tvec![x.clone().into_tvalue()])?.remove(0);
            Ok(y.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
        };
        let (ours, tracts) = (
            run(parse_ours(&proto)?.model)?,
            run(tract_model(&proto, false)?)?,
        );
        assert_eq!(ours.len(), 8);
        assert_eq!(ours, tracts);
        Ok(())
    }
}
