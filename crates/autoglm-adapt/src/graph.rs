//! Appends trained heads to an embedding package's ONNX graph, so the result is an ordinary
//! classification graph (`logits` output) that every engine runs unchanged; and reads heads back
//! (for `--init-from` and multi-task packages).
//!
//! Head tensors are named `adapt.<task>.l<i>.weight|bias`; that naming is the contract that
//! lets a head be found again in a package. The graph is extended with the exporter's builder
//! ([`autoglm_export::onnx::Graph`]), the workspace's one.

use crate::head::{Dense, Head, HeadSpec};
use crate::{AdaptError, Result};
use autoglm_export::onnx::{Attr, Graph};
use prost::Message;
use tract_onnx::pb::{tensor_proto::DataType, ModelProto, TensorProto};

pub const LOGITS: &str = "logits";

/// Task names become tensor names and file names: keep them plain.
pub fn check_task_name(name: &str) -> Result<()> {
    if autoglm_package::is_task_name(name) {
        Ok(())
    } else {
        Err(AdaptError::InvalidOption {
            option: "task",
            reason: format!(
                "`{name}`: use 1 to {} of [A-Za-z0-9_-]",
                autoglm_package::MAX_TASK_NAME_BYTES
            ),
        })
    }
}

fn decode(onnx: &[u8]) -> Result<ModelProto> {
    ModelProto::decode(onnx).map_err(|e| AdaptError::Graph(e.to_string()))
}

/// The embedding graph with `heads` after its `embedding_output`. One head: its logits are the
/// output. Several: each head's log-softmax, concatenated — softmax over a task's slice of that
/// gives the task's probabilities, and a plain softmax over all of it is still a valid (if
/// diluted) distribution for engines that know nothing of tasks.
pub fn append_heads(
    onnx: &[u8],
    embedding_output: &str,
    heads: &[(&str, &Head)],
) -> Result<Vec<u8>> {
    let mut model = decode(onnx)?;
    let graph = model
        .graph
        .take()
        .ok_or_else(|| AdaptError::Graph("no graph".into()))?;
    let mut b = Graph::from_proto(graph);
    b.set_scope("adapt");
    let old = b.remove_output(embedding_output).ok_or_else(|| {
        AdaptError::Graph(format!(
            "no output `{embedding_output}` to attach the head to"
        ))
    })?;
    let mut task_outputs = Vec::new();
    let mut total = 0;
    for (task, head) in heads {
        check_task_name(task)?;
        let mut x = embedding_output.to_string();
        for (i, (layer, (w, bias))) in head.layers.iter().zip(head.f32_layers()).enumerate() {
            let w = b.named_f32_tensor(
                &format!("adapt.{task}.l{i}.weight"),
                &[layer.inputs, layer.outputs],
                &w,
            );
            let bias =
                b.named_f32_tensor(&format!("adapt.{task}.l{i}.bias"), &[layer.outputs], &bias);
            let mm = b.node("MatMul", &[&x, &w], &[]);
            x = b.node("Add", &[&mm, &bias], &[]);
            if i + 1 < head.layers.len() {
                x = match head.spec {
                    HeadSpec::Mlp {
                        activation: crate::activation::Activation::Gelu,
                        ..
                    } => gelu(&mut b, task, i, &x),
                    _ => b.node("Tanh", &[&x], &[]),
                };
            }
        }
        total += head.classes();
        if heads.len() > 1 {
            x = b.node("LogSoftmax", &[&x], &[("axis", Attr::Int(-1))]);
        }
        task_outputs.push(x);
    }
    let logits = if task_outputs.len() == 1 {
        task_outputs.remove(0)
    } else {
        let refs: Vec<&str> = task_outputs.iter().map(String::as_str).collect();
        b.node("Concat", &refs, &[("axis", Attr::Int(-1))])
    };
    // Same element type and batch dimension as the embedding output; the width is the labels'.
    let mut out = old;
    out.name = LOGITS.into();
    if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) =
        out.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        if let Some(dim) = t.shape.as_mut().and_then(|s| s.dim.get_mut(1)) {
            dim.value =
                Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(total as i64));
        }
    }
    b.output_as(&logits, out);
    model.graph = Some(b.into_proto());
    Ok(model.encode_to_vec())
}

/// Exact GELU with opset-17 ops: `0.5 · x · (1 + erf(x / √2))`.
fn gelu(b: &mut Graph, task: &str, i: usize, x: &str) -> String {
    let sqrt2 = b.named_f32_tensor(
        &format!("adapt.{task}.l{i}.sqrt2"),
        &[],
        &[std::f32::consts::SQRT_2],
    );
    let one = b.named_f32_tensor(&format!("adapt.{task}.l{i}.one"), &[], &[1.0]);
    let half = b.named_f32_tensor(&format!("adapt.{task}.l{i}.half"), &[], &[0.5]);
    let d = b.node("Div", &[x, &sqrt2], &[]);
    let e = b.node("Erf", &[&d], &[]);
    let p = b.node("Add", &[&e, &one], &[]);
    let m = b.node("Mul", &[x, &p], &[]);
    b.node("Mul", &[&m, &half], &[])
}

fn f32_data(t: &TensorProto) -> Result<Vec<f64>> {
    if t.data_type != DataType::Float as i32 {
        return Err(AdaptError::Graph(format!(
            "{} is not a float tensor",
            t.name
        )));
    }
    if !t.raw_data.is_empty() {
        Ok(t.raw_data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect())
    } else {
        Ok(t.float_data.iter().map(|&v| f64::from(v)).collect())
    }
}

/// The layers of head `task` in a graph written by [`append_heads`], with `spec` (from the
/// package's training record) telling the activation.
pub fn read_head(onnx: &[u8], task: &str, spec: HeadSpec) -> Result<Head> {
    let model = decode(onnx)?;
    let graph = model
        .graph
        .ok_or_else(|| AdaptError::Graph("no graph".into()))?;
    let find = |name: String| {
        graph
            .initializer
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| AdaptError::Package(format!("the graph has no head tensor `{name}`")))
    };
    let layers = match spec {
        HeadSpec::Linear => 1,
        HeadSpec::Mlp { .. } => 2,
    };
    let mut out = Vec::new();
    for i in 0..layers {
        let w = find(format!("adapt.{task}.l{i}.weight"))?;
        let bias = find(format!("adapt.{task}.l{i}.bias"))?;
        let (inputs, outputs) = match w.dims[..] {
            [a, b] if a > 0 && b > 0 => (a as usize, b as usize),
            _ => return Err(AdaptError::Graph(format!("{}: dims {:?}", w.name, w.dims))),
        };
        let weight = f32_data(w)?;
        let bias = f32_data(bias)?;
        if weight.len() != inputs * outputs || bias.len() != outputs {
            return Err(AdaptError::Graph(format!(
                "{}: wrong number of values",
                w.name
            )));
        }
        out.push(Dense {
            inputs,
            outputs,
            weight,
            bias,
        });
    }
    Ok(Head { spec, layers: out })
}
