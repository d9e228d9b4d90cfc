//! **The ONNX operators our exporter writes, and no others** (issue #15: the component's size).
//!
//! `tract_onnx::onnx()` registers a builder for every ONNX operator tract knows; each builder
//! keeps its operators' code in the binary (convolutions, pooling, recurrent layers, the
//! tree-ensemble classifiers, …), reachable or not. In the WASI component that registry was
//! 1.7 MB of 13.4 (BENCHMARKS.md, wave 23). [`framework`] registers only the operators
//! `autoglm-export` writes (opset 13 or later), most of them with the very operators tract's
//! own builders make (tract-hir's, public). For the few whose builders tract-onnx keeps
//! private, ours below wire the same tract-core operators that tract's would, so that the
//! typed graph (and with it our rewrites in [`crate::ops`]) is the one the full registry gives;
//! `DynamicQuantizeLinear` becomes our bit-identical [`DynamicQuantize`] at once.
//!
//! A graph with any other operator (a model not made by our exporter, or by a version that
//! wrote others) is parsed natively with tract's full registry; the component, which links
//! only this one, refuses it with a message naming the operator.

use crate::ops::quantize::DynamicQuantize;
use tract_onnx::model::OnnxOpRegister;
use tract_onnx::pb::{GraphProto, ModelProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_core::ops::change_axes::wire_with_rank_broadcast;
use tract_onnx::tract_core::ops::{logic, math, nn as core_nn};
use tract_onnx::tract_hir::infer::*;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::binary::Nary;
use tract_onnx::tract_hir::ops::{array, matmul, nn};

/// The default domain's opset from which our builders follow the spec (`Unsqueeze`'s and
/// `ReduceSum`'s axes as an input, `Softmax` over one axis).
const MIN_OPSET: i64 = 13;

/// The operators [`framework`] knows, in the default domain.
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

/// Why [`framework`] cannot parse `model` (the first reason found), or `None` where it can.
/// `fused` names the node [`crate::ops::qlinear::fuse_onnx`] writes, where it ran.
pub(crate) fn unsupported(model: &ModelProto, fused: Option<&str>) -> Option<String> {
    let opset = opset(model);
    if opset < MIN_OPSET {
        return Some(format!(
            "opset {opset} (the narrow front end reads {MIN_OPSET} and later)"
        ));
    }
    let graph: &GraphProto = model.graph.as_ref()?;
    graph.node.iter().find_map(|node| {
        let known = OPERATORS.contains(&node.op_type.as_str()) || Some(&*node.op_type) == fused;
        if !known || !node.domain.is_empty() && Some(&*node.op_type) != fused {
            return Some(format!(
                "operator `{}` (node `{}`)",
                node.op_type, node.name
            ));
        }
        match node.op_type.as_str() {
            // One output, the last axis, f32 statistics: what the exporter writes.
            "LayerNormalization" => {
                let axis = node
                    .get_attr_opt::<i64>("axis")
                    .ok()
                    .flatten()
                    .unwrap_or(-1);
                let stash = node.get_attr_opt::<i64>("stash_type").ok().flatten();
                let outputs = node.output.iter().filter(|o| !o.is_empty()).count();
                (axis != -1 || stash.is_some_and(|s| s != 1) || outputs != 1).then(|| {
                    format!(
                        "a LayerNormalization other than over the last axis (`{}`)",
                        node.name
                    )
                })
            }
            "ReduceSum" => (node.input.len() != 2
                || node
                    .get_attr_opt::<i64>("noop_with_empty_axes")
                    .ok()
                    .flatten()
                    == Some(1))
            .then(|| format!("a ReduceSum without its axes (`{}`)", node.name)),
            "Unsqueeze" => (node.input.len() != 2)
                .then(|| format!("an Unsqueeze without its axes (`{}`)", node.name)),
            _ => None,
        }
    })
}

/// The front end for `model` (already through [`crate::ops::qlinear::fuse_onnx`] where
/// `patch`): ours ([`framework`]) for a graph it can parse that our operators will be patched
/// into; tract's full registry for any other natively (and always for the plain reference
/// graph, [`crate::tract::TractBackend::plain`]); in the component, ours or an error.
pub(crate) fn choose(model: &ModelProto, patch: bool) -> crate::Result<tract_onnx::Onnx> {
    let fused = patch.then_some(crate::ops::qlinear::ONNX_OP);
    let why = unsupported(model, fused);
    let mut framework = match why {
        None if patch || cfg!(target_family = "wasm") => framework(),
        why => full_registry(why)?,
    };
    if patch {
        crate::ops::qlinear::register(&mut framework);
    }
    Ok(framework)
}

/// tract's front end with every operator it knows.
#[cfg(not(target_family = "wasm"))]
fn full_registry(_why: Option<String>) -> crate::Result<tract_onnx::Onnx> {
    Ok(tract_onnx::onnx())
}

/// The component links no other front end than ours: a graph it cannot parse is refused.
#[cfg(target_family = "wasm")]
fn full_registry(why: Option<String>) -> crate::Result<tract_onnx::Onnx> {
    Err(crate::RuntimeError::Model(format!(
        "this runtime reads the graphs autoglm-export writes, and this one has {}; \
         export the model again with `autoglm export`",
        why.unwrap_or_default()
    )))
}

fn opset(model: &ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version)
}

/// tract's ONNX front end with only [`OPERATORS`] (check [`unsupported`] first).
pub(crate) fn framework() -> tract_onnx::Onnx {
    let mut reg = OnnxOpRegister::default();
    reg.insert("Add", |_, _| Ok((math::Add.into_hir(), vec![])));
    reg.insert("Sub", |_, _| Ok((math::Sub.into_hir(), vec![])));
    reg.insert("Mul", |_, _| Ok((math::Mul.into_hir(), vec![])));
    reg.insert("Div", |_, _| Ok((math::Div.into_hir(), vec![])));
    reg.insert("Max", |_, _| {
        Ok((Box::new(Nary(Box::new(math::Max), false)), vec![]))
    });
    reg.insert("Abs", |_, _| Ok((math::abs().into_hir(), vec![])));
    reg.insert("Erf", |_, _| Ok((math::erf().into_hir(), vec![])));
    reg.insert("Sqrt", |_, _| Ok((math::sqrt().into_hir(), vec![])));
    reg.insert("Tanh", |_, _| Ok((math::tanh().into_hir(), vec![])));
    reg.insert("Less", |_, _| Ok((logic::CompLT.into_hir(), vec![])));
    reg.insert("Or", |_, _| Ok((logic::Or.into_hir(), vec![])));
    reg.insert("Identity", |_, _| {
        Ok((
            Box::<tract_onnx::tract_hir::ops::identity::Identity>::default(),
            vec![],
        ))
    });
    reg.insert("MatMul", |_, _| {
        Ok((expand(matmul::MatMulInference::default()), vec![]))
    });
    reg.insert("Cast", |_, node| {
        let mut to = node.get_attr::<DatumType>("to")?;
        // As tract's builder: integer tensors of our graphs are shapes and positions.
        if to == i64::datum_type() {
            to = TDim::datum_type();
        }
        Ok((Box::new(cast(to)), vec![]))
    });
    reg.insert("Concat", |_, node| {
        Ok((expand(array::Concat::new(node.get_attr("axis")?)), vec![]))
    });
    reg.insert("Gather", |_, node| {
        let axis = node.get_attr_opt("axis")?.unwrap_or(0);
        Ok((expand(array::Gather::new(axis)), vec![]))
    });
    reg.insert("Reshape", |_, node| {
        let allowzero = node.get_attr_opt::<i64>("allowzero")?.unwrap_or(0) != 0;
        Ok((expand(array::Reshape::new(allowzero)), vec![]))
    });
    reg.insert("Transpose", |_, node| {
        let perm = node.get_attr_opt_vec::<i64>("perm")?;
        let perm = perm
            .map(|p| p.into_iter().map(usize::try_from).collect())
            .transpose()
            .map_err(|_| format_err!("Transpose `{}`: a negative axis", node.name))?;
        Ok((expand(array::PermuteAxes::new(perm)), vec![]))
    });
    reg.insert("Softmax", |_, node| {
        let axis = node.get_attr_opt("axis")?.unwrap_or(-1);
        Ok((expand(nn::Softmax::new(axis)), vec![]))
    });
    reg.insert("Shape", |_, node| {
        ensure!(
            node.get_attr_opt::<i64>("start")?.unwrap_or(0) == 0
                && node.get_attr_opt::<i64>("end")?.is_none(),
            "Shape `{}`: only the whole shape",
            node.name
        );
        Ok((expand(array::Shape::new(TDim::datum_type())), vec![]))
    });
    reg.insert("Slice", |_, node| {
        // Inputs: data, starts, ends, then the optional axes and steps (an empty name: absent).
        let mut present = 0;
        let mut optional = (0..5).map(|i| {
            let here = node.input.get(i).is_some_and(|s| !s.is_empty());
            present += here as usize;
            here.then_some(present - 1)
        });
        let (axes, steps) = (optional.nth(3).flatten(), optional.next().flatten());
        Ok((
            Box::new(array::StridedSlice {
                optional_axes_input: axes,
                optional_steps_input: steps,
                begin_mask: 0,
                end_mask: 0,
                shrink_axis_mask: 0,
            }),
            vec![],
        ))
    });
    tract_onnx::ops::cumsum::register_all_ops(&mut reg);
    reg.insert("Unsqueeze", |_, _| Ok((expand(Unsqueeze), vec![])));
    reg.insert("ReduceSum", |_, node| {
        let keep_dims = node.get_attr_opt::<i64>("keepdims")?.unwrap_or(1) == 1;
        Ok((expand(ReduceSum { keep_dims }), vec![]))
    });
    reg.insert("LayerNormalization", |_, node| {
        let epsilon = node.get_attr_opt::<f32>("epsilon")?.unwrap_or(1e-5);
        let bias = node.input.get(2).is_some_and(|s| !s.is_empty());
        Ok((expand(LayerNormalization { epsilon, bias }), vec![]))
    });
    reg.insert("DynamicQuantizeLinear", |_, _| {
        Ok((expand(DynamicQuantizeLinear), vec![]))
    });
    tract_onnx::Onnx {
        op_register: reg,
        ..tract_onnx::Onnx::default()
    }
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

fn const_input(model: &TypedModel, outlet: OutletId, op: &str) -> TractResult<Arc<Tensor>> {
    model
        .outlet_fact(outlet)?
        .konst
        .clone()
        .with_context(|| format!("{op}: the axes must be a constant"))
}

/// ONNX `Unsqueeze` (opset 13): tract-hir's `AddDims` with the axes read from the constant
/// second input.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Unsqueeze;

impl Unsqueeze {
    fn add_dims(value: &Tensor, out_rank: usize) -> TractResult<array::AddDims> {
        let axes = axes(value, out_rank, "Unsqueeze")?;
        Ok(array::AddDims::new(
            axes.into_iter().map(|a| a as isize).collect(),
        ))
    }
}

impl Expansion for Unsqueeze {
    fn name(&self) -> StaticName {
        "Unsqueeze".into()
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
                let op = Self::add_dims(&value, shape.len() + value.len())?;
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
        let value = const_input(model, inputs[1], "Unsqueeze")?;
        let rank = model.outlet_fact(inputs[0])?.rank() + value.len();
        Self::add_dims(&value, rank)?.wire(prefix, model, &inputs[..1])
    }
}

/// ONNX `ReduceSum` (opset 13) with constant axes: tract-hir's `Reduce<Sum>`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct ReduceSum {
    keep_dims: bool,
}

impl ReduceSum {
    fn reduce(&self, value: &Tensor, rank: usize) -> TractResult<nn::Reduce> {
        let axes = axes(value, rank, "ReduceSum")?;
        // No axes reduce all of them (the spec's default without `noop_with_empty_axes`).
        let axes = (!axes.is_empty()).then_some(axes);
        Ok(nn::Reduce::new(axes, self.keep_dims, nn::Reducer::Sum))
    }
}

impl Expansion for ReduceSum {
    fn name(&self) -> StaticName {
        "ReduceSum".into()
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
                let op = self.reduce(&value, shape.len())?;
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
        let value = const_input(model, inputs[1], "ReduceSum")?;
        let rank = model.outlet_fact(inputs[0])?.rank();
        self.reduce(&value, rank)?.wire(prefix, model, &inputs[..1])
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

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::NodeProto;

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
            opset_import: vec![tract_onnx::pb::OperatorSetIdProto {
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
                let typed = |mut framework: tract_onnx::Onnx| -> TractResult<TypedModel> {
                    crate::ops::qlinear::register(&mut framework);
                    let mut model = framework.model_for_proto_model(&proto)?;
                    crate::tract::state_whole_blocks(&mut model, multiple)?;
                    let mut typed = model.into_typed()?.into_decluttered()?;
                    crate::ops::rewrite(&mut typed)?;
                    // Nodes in evaluation order, without those the rewrites left unused.
                    typed.into_compact()
                };
                let ours = typed(framework())?;
                let tracts = typed(tract_onnx::onnx())?;
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
}
