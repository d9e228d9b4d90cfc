//! Reads an ONNX graph from a package stream so that the file's bytes and tract's copy of the
//! weights are never both in memory (issue #13: load time and peak RSS; BENCHMARKS.md).
//!
//! An ONNX file is one protobuf message, and almost all of its bytes are the `raw_data` of the
//! graph's initializers. [`split`] walks the wire format as the bytes arrive: an initializer
//! whose dims and type precede its data (as every ONNX writer orders them) is read straight into
//! the tract tensor that will hold it, and left out of the model; every other field is copied
//! verbatim into a small *skeleton* of the model. Once the whole file has passed its sha256
//! check, the skeleton is decoded with prost and parsed by tract, which makes an input of each
//! name it finds no definition for; those inputs then become constants holding the tensors
//! read before. So the weights are read once, into their final place: no buffer of the file,
//! no protobuf copy of them, no second copy made by tract's parser.
//!
//! Before verification the wire format is only walked, and an initializer's dims and type read
//! to size its tensor: every length is bounded by the message that holds it and by the bytes the
//! file can still yield, so nothing is allocated that the file does not hold. Nothing is
//! decoded or analysed until the file's digest matched.

use crate::onnx_pb as pb;
use crate::{Result, RuntimeError};
use autoglm_package::FileStream;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use tract_hir::ops::{konst::Const, source::Source};
use tract_hir::prelude::*;

/// Field numbers (onnx.proto).
const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const TENSOR_DIMS: u64 = 1;
const TENSOR_DATA_TYPE: u64 = 2;
const TENSOR_NAME: u64 = 8;
const TENSOR_RAW_DATA: u64 = 9;

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// An initializer read into its tensor.
#[derive(Debug)]
pub(crate) struct Weight {
    pub name: String,
    /// Its ONNX `data_type` (to write it back, should it be needed in the protobuf).
    pub data_type: i32,
    pub tensor: Tensor,
}

/// The model without the initializers read into tensors, and those.
#[derive(Debug, Default)]
pub(crate) struct Split {
    /// A valid `ModelProto` encoding: the file's fields but the initializers in `weights`.
    pub skeleton: Vec<u8>,
    pub weights: Vec<Weight>,
}

fn bad(what: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Model(format!("the graph is not an ONNX model: {what}"))
}

/// The tract type of an ONNX `data_type` whose raw data tract copies as it lies: every type
/// our front end knows but booleans.
fn plain_type(data_type: i32) -> Option<DatumType> {
    crate::onnx_ops::datum_type(data_type)
        .ok()
        .filter(|&dt| dt != DatumType::Bool)
}

/// One initializer message: kept in the skeleton, or read into a tensor.
enum Initializer {
    Kept(Vec<u8>),
    Read(Weight),
}

/// Walks one protobuf stream; `read` counts the bytes consumed.
struct Walker<R> {
    r: R,
    read: u64,
    /// The most bytes the stream can yield: no length may go past it.
    hint: u64,
}

impl<R: BufRead> Walker<R> {
    fn io(e: std::io::Error) -> RuntimeError {
        RuntimeError::Model(format!("reading the graph: {e}"))
    }

    /// The next byte, or `None` at the end of the stream.
    fn byte(&mut self) -> Result<Option<u8>> {
        let b = match self.r.fill_buf().map_err(Self::io)?.first() {
            Some(&b) => b,
            None => return Ok(None),
        };
        self.r.consume(1);
        self.read += 1;
        Ok(Some(b))
    }

    /// A varint whose first byte is `first` (or the next byte when `None`).
    fn varint_from(&mut self, first: Option<u8>) -> Result<u64> {
        let mut value = 0u64;
        let mut next = first;
        for shift in (0..64).step_by(7) {
            let b = match next.take() {
                Some(b) => b,
                None => self.byte()?.ok_or_else(|| bad("it ends inside a varint"))?,
            };
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(bad("a varint is longer than 10 bytes"))
    }

    fn varint(&mut self) -> Result<u64> {
        self.varint_from(None)
    }

    fn cut(len: u64, got: u64) -> RuntimeError {
        bad(format!(
            "a field of {len} bytes is cut off after {got} (the file is truncated)"
        ))
    }

    /// Appends the next `len` bytes to `into` (`len` was checked by [`Walker::length`]).
    fn bytes(&mut self, len: u64, into: &mut Vec<u8>) -> Result<()> {
        into.reserve(usize::try_from(len).map_err(|_| bad("a field too large"))?);
        let got = (&mut self.r)
            .take(len)
            .read_to_end(into)
            .map_err(Self::io)? as u64;
        self.read += got;
        if got < len {
            return Err(Self::cut(len, got));
        }
        Ok(())
    }

    /// A length-delimited field's length, checked to fit in the message that holds it (`end`)
    /// and in what the stream can still yield.
    fn length(&mut self, end: Option<u64>) -> Result<u64> {
        let len = self.varint()?;
        let room = end.unwrap_or(u64::MAX).min(self.hint);
        if len > room.saturating_sub(self.read) {
            return Err(bad(format!(
                "a field of {len} bytes overruns the message or the file that holds it"
            )));
        }
        Ok(len)
    }

    /// Copies the varint field `tag` (its tag already read) into `out`; its value.
    fn copy_varint(&mut self, tag: u64, out: &mut Vec<u8>) -> Result<u64> {
        let v = self.varint()?;
        varint_into(out, tag);
        varint_into(out, v);
        Ok(v)
    }

    /// Copies the length-delimited field `tag` (its tag already read) into `out`; where its
    /// payload lies in `out`.
    fn copy_len(
        &mut self,
        tag: u64,
        end: Option<u64>,
        out: &mut Vec<u8>,
    ) -> Result<std::ops::Range<usize>> {
        let len = self.length(end)?;
        varint_into(out, tag);
        varint_into(out, len);
        let start = out.len();
        self.bytes(len, out)?;
        Ok(start..out.len())
    }

    /// Copies the rest of the field `tag` (its tag already read) into `out`.
    fn copy_field(&mut self, tag: u64, end: Option<u64>, out: &mut Vec<u8>) -> Result<()> {
        match tag & 7 {
            VARINT => {
                self.copy_varint(tag, out)?;
            }
            FIXED64 | FIXED32 => {
                varint_into(out, tag);
                self.bytes(if tag & 7 == FIXED64 { 8 } else { 4 }, out)?;
            }
            LEN => {
                self.copy_len(tag, end, out)?;
            }
            other => return Err(bad(format!("wire type {other} (groups are not ONNX)"))),
        }
        Ok(())
    }

    /// A field's tag, or `None` at the end of the stream or of the message (`end`).
    fn tag(&mut self, end: Option<u64>) -> Result<Option<u64>> {
        if let Some(end) = end {
            if self.read >= end {
                return Ok(None);
            }
        }
        let Some(first) = self.byte()? else {
            return match end {
                None => Ok(None),
                Some(_) => Err(bad("it ends inside a message")),
            };
        };
        let tag = self.varint_from(Some(first))?;
        if tag >> 3 == 0 {
            return Err(bad("a field numbered 0"));
        }
        Ok(Some(tag))
    }

    /// The `ModelProto`: the whole stream.
    fn model(&mut self, weights: &mut Vec<Weight>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(tag) = self.tag(None)? {
            if tag == MODEL_GRAPH << 3 | LEN {
                let len = self.length(None)?;
                let graph = self.graph(self.read + len, weights)?;
                nested_into(&mut out, tag, &graph);
            } else {
                self.copy_field(tag, None, &mut out)?;
            }
        }
        Ok(out)
    }

    fn graph(&mut self, end: u64, weights: &mut Vec<Weight>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(tag) = self.tag(Some(end))? {
            if tag == GRAPH_INITIALIZER << 3 | LEN {
                let len = self.length(Some(end))?;
                match self.initializer(self.read + len)? {
                    Initializer::Kept(tensor) => nested_into(&mut out, tag, &tensor),
                    Initializer::Read(weight) => weights.push(weight),
                }
            } else {
                self.copy_field(tag, Some(end), &mut out)?;
            }
        }
        Ok(out)
    }

    /// One `TensorProto` of the graph's initializers: read into its tensor when its dims and
    /// type come before its raw data and match its size, else copied as it is.
    fn initializer(&mut self, end: u64) -> Result<Initializer> {
        let mut out = Vec::new();
        let mut dims: Vec<i64> = Vec::new();
        let mut data_type = 0i32;
        let mut name: Option<Vec<u8>> = None;
        let mut read: Option<Tensor> = None;
        while let Some(tag) = self.tag(Some(end))? {
            let field = tag >> 3;
            if read.is_some() && [TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_RAW_DATA].contains(&field) {
                return Err(bad(
                    "an initializer's dims, type or data follow its data (no ONNX writer does that)",
                ));
            }
            match (field, tag & 7) {
                (TENSOR_DIMS, VARINT) => dims.push(self.copy_varint(tag, &mut out)? as i64),
                (TENSOR_DIMS, LEN) => {
                    let packed = self.copy_len(tag, Some(end), &mut out)?;
                    dims.extend(packed_varints(&out[packed])?);
                }
                (TENSOR_DATA_TYPE, VARINT) => data_type = self.copy_varint(tag, &mut out)? as i32,
                (TENSOR_NAME, LEN) => {
                    let bytes = self.copy_len(tag, Some(end), &mut out)?;
                    name = Some(out[bytes].to_vec());
                }
                (TENSOR_RAW_DATA, LEN) => {
                    let len = self.length(Some(end))?;
                    match self.tensor_for(&dims, data_type, len)? {
                        Some(mut tensor) => {
                            let bytes = tensor.as_bytes_mut();
                            let got = read_fully(&mut self.r, bytes).map_err(Self::io)?;
                            self.read += got as u64;
                            if got < bytes.len() {
                                return Err(Self::cut(len, got as u64));
                            }
                            read = Some(tensor);
                        }
                        None => {
                            varint_into(&mut out, tag);
                            varint_into(&mut out, len);
                            self.bytes(len, &mut out)?;
                        }
                    }
                }
                _ => self.copy_field(tag, Some(end), &mut out)?,
            }
        }
        let Some(tensor) = read else {
            return Ok(Initializer::Kept(out));
        };
        let name = String::from_utf8(name.unwrap_or_default())
            .map_err(|_| bad("an initializer's name is not UTF-8"))?;
        if name.is_empty() {
            return Err(bad("an initializer has no name"));
        }
        Ok(Initializer::Read(Weight {
            name,
            data_type,
            tensor,
        }))
    }

    /// The tensor that `len` bytes of raw data of type `data_type` and shape `dims` fill
    /// exactly, or `None` when they do not (tract then reads the field from the skeleton, and
    /// says what is wrong with it).
    fn tensor_for(&self, dims: &[i64], data_type: i32, len: u64) -> Result<Option<Tensor>> {
        let Some(dt) = plain_type(data_type) else {
            return Ok(None);
        };
        let shape: Option<Vec<usize>> = dims.iter().map(|&d| usize::try_from(d).ok()).collect();
        let Some(shape) = shape else {
            return Ok(None);
        };
        let size = shape
            .iter()
            .try_fold(dt.size_of(), |n, &d| n.checked_mul(d));
        if len == 0 || size != usize::try_from(len).ok() {
            return Ok(None);
        }
        // `len` fits in what the stream can still yield (`length`): a real allocation.
        Tensor::zero_dt(dt, &shape)
            .map(Some)
            .map_err(|e| bad(format!("an initializer of shape {shape:?}: {e}")))
    }
}

/// Reads into all of `buf` unless the stream ends first; how many bytes came.
fn read_fully(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The varints of a packed repeated field.
fn packed_varints(bytes: &[u8]) -> Result<Vec<i64>> {
    let mut walker = Walker {
        r: bytes,
        read: 0,
        hint: bytes.len() as u64,
    };
    let mut values = Vec::new();
    while walker.read < bytes.len() as u64 {
        values.push(walker.varint()? as i64);
    }
    Ok(values)
}

fn varint_into(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn nested_into(out: &mut Vec<u8>, tag: u64, message: &[u8]) {
    varint_into(out, tag);
    varint_into(out, message.len() as u64);
    out.extend_from_slice(message);
}

/// Splits the ONNX model that `r` yields (at most `hint` bytes) into its skeleton and the
/// initializers read into tensors.
pub(crate) fn split(r: impl BufRead, hint: u64) -> Result<Split> {
    let mut walker = Walker { r, read: 0, hint };
    let mut weights = Vec::new();
    let skeleton = walker.model(&mut weights)?;
    Ok(Split { skeleton, weights })
}

/// Reads, verifies and parses the graph `stream` into tract's model: see the module's comment.
/// With `fuse`, the int8 linear layers are fused in the protobuf first
/// ([`crate::ops::qlinear::fuse_onnx`]) and the graph read with our front end where it can
/// ([`crate::onnx_ops::parse`]).
pub(crate) fn parse(stream: FileStream, fuse: bool) -> Result<InferenceModel> {
    let hint = stream.capacity_hint();
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    let split = split(&mut reader, hint);
    // The digest first: a damaged file is reported as such, not as a malformed graph.
    reader.into_inner().finish()?;
    let Split { skeleton, weights } = split?;
    let mut proto = <pb::ModelProto as prost::Message>::decode(&skeleton[..])
        .map_err(|e| bad(e.to_string()))?;
    drop(skeleton);
    crate::graph_guard::check(&proto)?;
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| RuntimeError::Model("the ONNX file has no graph".into()))?;
    if fuse {
        let by_name: std::collections::HashMap<&str, &Tensor> = weights
            .iter()
            .map(|w| (w.name.as_str(), &w.tensor))
            .collect();
        crate::ops::qlinear::fuse_onnx(graph, |name| {
            let t = by_name.get(name)?;
            Some(crate::ops::qlinear::Initializer {
                datum_type: t.datum_type(),
                shape: t.shape().to_vec(),
                bytes: t.as_bytes(),
            })
        });
    }
    // tract looks the graph's outputs up among the values it parsed: an initializer that is an
    // output goes back into the protobuf.
    let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let (back, weights): (Vec<Weight>, Vec<Weight>) = weights
        .into_iter()
        .partition(|w| outputs.contains(w.name.as_str()));
    graph
        .initializer
        .extend(back.into_iter().map(|w| pb::TensorProto {
            name: w.name,
            dims: w.tensor.shape().iter().map(|&d| d as i64).collect(),
            data_type: w.data_type,
            raw_data: w.tensor.as_bytes().to_vec(),
            ..Default::default()
        }));
    let parsed = crate::onnx_ops::parse(&proto, fuse)?;
    drop(proto);
    let mut model = parsed.model;
    let mut names = HashSet::new();
    for Weight { name, tensor, .. } in weights {
        let Some(&outlet) = parsed.outlets_by_name.get(&name) else {
            continue; // used by no node: tract would prune it
        };
        let node = &mut model.nodes[outlet.node];
        if !names.insert(name.clone()) || !node.op_is::<Source>() {
            return Err(RuntimeError::Model(format!(
                "the graph defines `{name}` twice (as an initializer and again)"
            )));
        }
        let tensor = tensor.into_arc_tensor();
        let fact = TypedFact::try_from(tensor.clone()).map_err(|e| bad(format!("{e:?}")))?;
        node.op = Box::new(Const::new(tensor).map_err(|e| bad(format!("{e:?}")))?);
        node.outputs[0].fact = fact.into();
        model.inputs.retain(|&i| i != outlet);
    }
    let unresolved: Vec<&String> = parsed
        .unresolved_inputs
        .iter()
        .filter(|n| !names.contains(*n))
        .collect();
    if !unresolved.is_empty() {
        return Err(RuntimeError::Model(format!(
            "the graph uses values it never defines: {unresolved:?}"
        )));
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn tensor(name: &str, data: &[f32]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: vec![data.len() as i64],
            data_type: pb::tensor_proto::DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    /// y = (a + x) + typed[0..1]… : `a` and `b` have raw data, `typed` float_data.
    fn model() -> pb::ModelProto {
        let node = |name: &str, a: &str, b: &str, out: &str| pb::NodeProto {
            name: name.into(),
            op_type: "Add".into(),
            input: vec![a.into(), b.into()],
            output: vec![out.into()],
            ..Default::default()
        };
        pb::ModelProto {
            ir_version: 8,
            producer_name: "test".into(),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(pb::GraphProto {
                name: "g".into(),
                initializer: vec![
                    tensor("a", &[1.0, 2.0, 3.0]),
                    pb::TensorProto {
                        name: "typed".into(),
                        dims: vec![3],
                        data_type: pb::tensor_proto::DataType::Float as i32,
                        float_data: vec![4.0, 5.0, 6.0],
                        ..Default::default()
                    },
                    tensor("b", &[0.5; 3]),
                ],
                input: vec![pb::ValueInfoProto {
                    name: "x".into(),
                    r#type: Some(pb::TypeProto {
                        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                            elem_type: pb::tensor_proto::DataType::Float as i32,
                            shape: None,
                        })),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                node: vec![
                    node("n1", "a", "x", "s"),
                    node("n2", "s", "typed", "t"),
                    node("n3", "t", "b", "y"),
                ],
                output: vec![pb::ValueInfoProto {
                    name: "y".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn stream(bytes: Vec<u8>) -> FileStream {
        FileStream::of_bytes("model.onnx", bytes)
    }

    /// Runs `model` on x = [10, 20, 30].
    fn run(model: InferenceModel) -> Vec<f32> {
        let plan = model
            .with_input_fact(0, f32::fact([3]).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .unwrap();
        let out = plan.run(tvec![tensor1(&[10f32, 20., 30.]).into()]).unwrap();
        out[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    fn whole(bytes: &[u8]) -> InferenceModel {
        crate::onnx_ops::tract_model(&pb::ModelProto::decode(bytes).unwrap(), false).unwrap()
    }

    /// The encoding of `model` with its initializer `at` replaced by the bytes `tensor`.
    fn with_initializer_bytes(model: &pb::ModelProto, at: usize, tensor: &[u8]) -> Vec<u8> {
        let mut graph = model.graph.clone().unwrap();
        graph.initializer.remove(at);
        let mut graph_bytes = graph.encode_to_vec();
        nested_into(&mut graph_bytes, GRAPH_INITIALIZER << 3 | LEN, tensor);
        let mut bytes = pb::ModelProto {
            graph: None,
            ..model.clone()
        }
        .encode_to_vec();
        nested_into(&mut bytes, MODEL_GRAPH << 3 | LEN, &graph_bytes);
        bytes
    }

    #[test]
    fn initializers_with_raw_data_are_read_into_tensors_and_left_out() {
        let m = model();
        let bytes = m.encode_to_vec();
        let split = split(&bytes[..], bytes.len() as u64).unwrap();
        let skeleton = pb::ModelProto::decode(&split.skeleton[..]).unwrap();
        let mut expected = m.clone();
        expected
            .graph
            .as_mut()
            .unwrap()
            .initializer
            .retain(|t| t.raw_data.is_empty());
        assert_eq!(skeleton, expected);
        let read: Vec<(&str, &[f32])> = split
            .weights
            .iter()
            .map(|w| {
                let t = w.tensor.try_as_plain_ram().unwrap();
                (w.name.as_str(), t.as_slice::<f32>().unwrap())
            })
            .collect();
        assert_eq!(read, [("a", &[1.0, 2.0, 3.0][..]), ("b", &[0.5; 3][..])]);
        assert_eq!(split.weights[0].tensor.shape(), [3]);
    }

    /// Both front ends: tract's (`false`, the plain graph) and ours (`true`, for a graph it
    /// reads: src/onnx_ops.rs).
    const FRONT_ENDS: [bool; 2] = [false, true];

    #[test]
    fn tract_gets_the_same_model() {
        for ours in FRONT_ENDS {
            same_model(ours);
        }
    }

    fn same_model(ours: bool) {
        let bytes = model().encode_to_vec();
        let streamed = parse(stream(bytes.clone()), ours).unwrap();
        let whole = whole(&bytes);
        assert_eq!(streamed.inputs.len(), 1);
        let consts = |m: &InferenceModel| -> Vec<(String, Tensor)> {
            let mut c: Vec<_> = m
                .nodes()
                .iter()
                .filter_map(|n| {
                    let c = n.op_as::<Const>()?;
                    Some((n.name.clone(), c.val().as_ref().clone()))
                })
                .collect();
            c.sort_by(|a, b| a.0.cmp(&b.0));
            c
        };
        assert_eq!(consts(&streamed).len(), 3);
        assert_eq!(consts(&streamed), consts(&whole));
        assert_eq!(run(streamed), [15.5, 27.5, 39.5]);
        assert_eq!(run(whole), [15.5, 27.5, 39.5]);
    }

    #[test]
    fn odd_but_valid_initializers_are_left_to_tract() {
        for ours in FRONT_ENDS {
            odd_but_valid(ours);
        }
    }

    fn odd_but_valid(ours: bool) {
        let m = model();
        // Raw data before dims and type: copied into the skeleton as it is.
        let a = &m.graph.as_ref().unwrap().initializer[0];
        let mut odd = pb::TensorProto {
            raw_data: a.raw_data.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        odd.extend(
            pb::TensorProto {
                raw_data: vec![],
                ..a.clone()
            }
            .encode_to_vec(),
        );
        let bytes = with_initializer_bytes(&m, 0, &odd);
        assert_eq!(
            split(&bytes[..], bytes.len() as u64).unwrap().weights.len(),
            1
        );
        let parsed = parse(stream(bytes), ours).unwrap();
        assert_eq!(run(parsed), [15.5, 27.5, 39.5]);
        // An initializer that is also the graph's output goes back into the protobuf.
        let mut m = model();
        m.graph.as_mut().unwrap().output.push(pb::ValueInfoProto {
            name: "b".into(),
            ..Default::default()
        });
        let parsed = parse(stream(m.encode_to_vec()), ours).unwrap();
        assert_eq!(parsed.outputs.len(), 2);
        // A size that does not match the dims: tract's parser reports it, as for any file.
        let mut m = model();
        m.graph.as_mut().unwrap().initializer[0].dims = vec![4];
        let bytes = m.encode_to_vec();
        assert_eq!(
            split(&bytes[..], bytes.len() as u64).unwrap().weights.len(),
            1
        );
        assert!(parse(stream(bytes), ours).is_err());
    }

    #[test]
    fn malformed_streams_are_refused() {
        let m = model();
        let bytes = m.encode_to_vec();
        // Every cut inside the graph field is an error, never a panic (a cut between top-level
        // fields is a valid shorter model: the file's digest is what refuses it).
        let head = pb::ModelProto {
            graph: None,
            opset_import: vec![],
            ..m.clone()
        }
        .encoded_len();
        let graph = m.graph.as_ref().unwrap().encoded_len();
        let field = 1 + prost::length_delimiter_len(graph) + graph;
        assert_eq!(bytes[head], 0x3a);
        for cut in head + 1..head + field {
            assert!(split(&bytes[..cut], cut as u64).is_err(), "cut at {cut}");
            // What the stream says it can yield bounds every length too.
            assert!(split(&bytes[..], cut as u64).is_err(), "hint {cut}");
        }
        // A group (wire type 3) and field 0.
        assert!(split(&[0x0b][..], 1).is_err());
        assert!(split(&[0x00, 0x00][..], 2).is_err());
        // A length past its message: graph of 2 bytes holding a field of 100.
        assert!(split(&[0x3a, 0x02, 0x0a, 0x64][..], 4).is_err());
        // A huge declared length is refused before anything is allocated for it.
        let huge = [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2];
        assert!(split(&huge[..], u64::MAX).is_err());
        // An eleven-byte varint.
        let long = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert!(split(&long[..], 12).is_err());
        // Dims after the data they shape.
        let a = &m.graph.as_ref().unwrap().initializer[0];
        let mut late = a.encode_to_vec();
        late.extend(
            pb::TensorProto {
                dims: vec![3],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let bytes = with_initializer_bytes(&m, 0, &late);
        let e = split(&bytes[..], bytes.len() as u64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("follow its data"), "{e}");
        // The same name twice.
        let mut m = model();
        m.graph.as_mut().unwrap().initializer[2].name = "a".into();
        for ours in FRONT_ENDS {
            let e = parse(stream(m.encode_to_vec()), ours)
                .unwrap_err()
                .to_string();
            assert!(e.contains("twice"), "{e}");
        }
    }

    #[test]
    fn external_data_is_refused() {
        let mut m = model();
        let t = &mut m.graph.as_mut().unwrap().initializer[1];
        t.float_data.clear();
        t.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
        t.external_data = vec![pb::StringStringEntryProto {
            key: "location".into(),
            value: "etc/passwd".into(),
        }];
        for ours in FRONT_ENDS {
            let e = parse(stream(m.encode_to_vec()), ours)
                .unwrap_err()
                .to_string();
            assert!(e.contains("external data"), "{e}");
        }
    }
}
