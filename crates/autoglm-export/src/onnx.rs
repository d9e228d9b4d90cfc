//! The workspace's one ONNX graph builder, over the prost types that `tract-onnx` generates from
//! `onnx.proto`: the exporter builds whole graphs with it, and autoglm-adapt appends heads to an
//! exported graph ([`Graph::from_proto`]). Node and tensor names are assigned in build order, so
//! the same build gives the same bytes.

use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType,
    tensor_shape_proto::dimension::Value as Dim, tensor_shape_proto::Dimension, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// The default-domain opset our graphs use (LayerNormalization needs 17).
pub const OPSET: i64 = 17;

/// An attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
}

/// A graph under construction: a new one, or an existing one being extended.
#[derive(Debug, Default)]
pub struct Graph {
    proto: GraphProto,
    counter: usize,
    /// Name prefix for the nodes being added (e.g. `layer3.attention`).
    scope: String,
}

fn value_info(name: &str, elem: DataType, dims: &[&str]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(
                d.parse::<i64>()
                    .map_or_else(|_| Dim::DimParam(d.to_string()), Dim::DimValue),
            ),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Graph {
    /// Extends an existing graph: what is added comes after its nodes and initializers, and
    /// everything else in it is kept.
    pub fn from_proto(proto: GraphProto) -> Self {
        Graph {
            proto,
            ..Graph::default()
        }
    }

    /// The graph as built, to put back into its `ModelProto`.
    pub fn into_proto(self) -> GraphProto {
        self.proto
    }

    pub fn set_scope(&mut self, scope: impl Into<String>) {
        self.scope = scope.into();
    }

    fn fresh(&mut self, what: &str) -> String {
        self.counter += 1;
        if self.scope.is_empty() {
            format!("{what}_{}", self.counter)
        } else {
            format!("{}.{what}_{}", self.scope, self.counter)
        }
    }

    /// Declares a graph input; dims are numbers or symbolic names.
    pub fn input(&mut self, name: &str, elem: DataType, dims: &[&str]) -> String {
        self.proto.input.push(value_info(name, elem, dims));
        name.into()
    }

    /// Declares `value` as a graph output called `name`.
    pub fn output(&mut self, value: &str, name: &str, elem: DataType, dims: &[&str]) {
        self.output_as(value, value_info(name, elem, dims));
    }

    /// Declares `value` as the graph output that `info` describes (its name, type and shape).
    pub fn output_as(&mut self, value: &str, info: ValueInfoProto) {
        self.node_named("Identity", &[value], &[], &info.name.clone());
        self.proto.output.push(info);
    }

    /// Takes the graph output called `name` out of the outputs (its producer stays), if any.
    pub fn remove_output(&mut self, name: &str) -> Option<ValueInfoProto> {
        let pos = self.proto.output.iter().position(|o| o.name == name)?;
        Some(self.proto.output.remove(pos))
    }

    /// A float initializer, stored as little-endian raw data.
    pub fn f32_tensor(&mut self, what: &str, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len(), "{what}");
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(what, DataType::Float, dims, raw)
    }

    pub fn i64_tensor(&mut self, what: &str, dims: &[usize], data: &[i64]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(what, DataType::Int64, dims, raw)
    }

    pub fn i8_tensor(&mut self, what: &str, dims: &[usize], data: &[i8]) -> String {
        let raw = data.iter().map(|v| *v as u8).collect();
        self.tensor(what, DataType::Int8, dims, raw)
    }

    pub fn scalar_f32(&mut self, what: &str, v: f32) -> String {
        self.f32_tensor(what, &[], &[v])
    }

    /// A float initializer called exactly `name` (not numbered: a name others look up).
    pub fn named_f32_tensor(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len(), "{name}");
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_tensor(name.to_string(), DataType::Float, dims, raw)
    }

    fn tensor(&mut self, what: &str, elem: DataType, dims: &[usize], raw_data: Vec<u8>) -> String {
        let name = self.fresh(what);
        self.push_tensor(name, elem, dims, raw_data)
    }

    fn push_tensor(
        &mut self,
        name: String,
        elem: DataType,
        dims: &[usize],
        raw_data: Vec<u8>,
    ) -> String {
        self.proto.initializer.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|d| *d as i64).collect(),
            data_type: elem as i32,
            raw_data,
            ..Default::default()
        });
        name
    }

    /// Adds a node with one output and returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.fresh(op);
        self.node_named(op, inputs, attrs, &out);
        out
    }

    /// Adds a node with `n` outputs.
    pub fn node_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
        n: usize,
    ) -> Vec<String> {
        let base = self.fresh(op);
        let outputs: Vec<String> = (0..n).map(|i| format!("{base}:{i}")).collect();
        self.push_node(op, inputs, attrs, outputs.clone(), base);
        outputs
    }

    /// Adds a node with one output called exactly `out` (the node has the same name).
    pub fn node_named(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)], out: &str) {
        self.push_node(op, inputs, attrs, vec![out.to_string()], out.to_string());
    }

    fn push_node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
        output: Vec<String>,
        name: String,
    ) {
        let attribute = attrs
            .iter()
            .map(|(name, a)| {
                let mut p = AttributeProto {
                    name: name.to_string(),
                    ..Default::default()
                };
                match a {
                    Attr::Int(i) => {
                        p.r#type = AttributeType::Int as i32;
                        p.i = *i;
                    }
                    Attr::Float(f) => {
                        p.r#type = AttributeType::Float as i32;
                        p.f = *f;
                    }
                    Attr::Ints(v) => {
                        p.r#type = AttributeType::Ints as i32;
                        p.ints = v.clone();
                    }
                }
                p
            })
            .collect();
        self.proto.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output,
            name,
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
    }

    /// The serialized `ModelProto`.
    pub fn into_model_bytes(self, doc: &str) -> Vec<u8> {
        let model = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "autoglm-export".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: Some(GraphProto {
                name: "autoglm".into(),
                ..self.proto
            }),
            ..Default::default()
        };
        model.encode_to_vec()
    }
}

/// How many nodes of each op type a serialized ONNX model holds (for `inspect`).
pub fn op_counts(
    model: &[u8],
) -> Result<std::collections::BTreeMap<String, usize>, prost::DecodeError> {
    let model = ModelProto::decode(model)?;
    let mut counts = std::collections::BTreeMap::new();
    for node in model.graph.iter().flat_map(|g| &g.node) {
        let key = if node.domain.is_empty() {
            node.op_type.clone()
        } else {
            format!("{}::{}", node.domain, node.op_type)
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    Ok(counts)
}
