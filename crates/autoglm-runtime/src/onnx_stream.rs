//! Reads an ONNX graph from a package stream so that the file's bytes and tract's copy of the
//! weights are never all in memory at once (issue #13: peak RSS at load; BENCHMARKS.md).
//!
//! An ONNX file is one protobuf message, and almost all of its bytes are the `raw_data` of the
//! graph's initializers. [`split`] walks the wire format as the bytes arrive and copies every
//! field verbatim into a small *skeleton* of the model, except those `raw_data` fields: each
//! goes into a buffer of its own. Once the whole file has passed its sha256 check, the skeleton
//! is decoded with prost and handed to tract, which reads each initializer's data through
//! [`Slots`]: the buffer itself is handed over, and freed as soon as tract has made its tensor.
//! So the load holds the weights about once (plus the largest tensor while it is copied),
//! where decoding the whole file held the file, the protobuf and tract's tensors together.
//!
//! Only the wire format is walked before verification, never interpreted: nothing is decoded
//! or analysed until the file's digest matched. Every length is bounded by the message that
//! holds it, and buffers grow as bytes arrive, never to a size the file merely declares.

use crate::{Result, RuntimeError};
use autoglm_package::FileStream;
use std::io::{BufRead, BufReader, Read};
use std::sync::Mutex;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{ensure, format_err};

/// `ModelProto.graph`, `GraphProto.initializer`, `TensorProto.raw_data` (onnx.proto).
const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const TENSOR_RAW_DATA: u64 = 9;

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// The model without its initializers' data, and that data.
#[derive(Debug, Default)]
pub(crate) struct Split {
    /// A valid `ModelProto` encoding: the file's fields, initializers without `raw_data`.
    pub skeleton: Vec<u8>,
    /// `(position among the graph's initializers, raw_data)` for each initializer that had
    /// data, in file order (positions are what prost's decoding of the skeleton gives).
    pub weights: Vec<(usize, Vec<u8>)>,
}

fn bad(what: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Model(format!("the graph is not an ONNX model: {what}"))
}

/// Walks one protobuf stream; `read` counts the bytes consumed.
struct Walker<R> {
    r: R,
    read: u64,
    /// The most bytes the stream can hold: what a buffer may be sized by in advance.
    hint: u64,
    /// Initializers seen so far (over every occurrence of the graph field, as prost merges).
    initializers: usize,
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

    /// Appends the next `len` bytes to `into`.
    fn bytes(&mut self, len: u64, into: &mut Vec<u8>) -> Result<()> {
        let ahead = len.min(self.hint.saturating_sub(self.read));
        into.reserve(usize::try_from(ahead).unwrap_or(0));
        let got = (&mut self.r)
            .take(len)
            .read_to_end(into)
            .map_err(Self::io)? as u64;
        self.read += got;
        if got < len {
            return Err(bad(format!(
                "a field of {len} bytes is cut off after {got} (the file is truncated)"
            )));
        }
        Ok(())
    }

    /// A length-delimited field's length, checked to fit before `end` (when bounded).
    fn length(&mut self, end: Option<u64>) -> Result<u64> {
        let len = self.varint()?;
        match end {
            Some(end) if len > end.saturating_sub(self.read) => Err(bad(format!(
                "a field of {len} bytes overruns the message that holds it"
            ))),
            _ => Ok(len),
        }
    }

    /// Copies the rest of the field `tag` (its tag already read) into `out`.
    fn copy_field(&mut self, tag: u64, end: Option<u64>, out: &mut Vec<u8>) -> Result<()> {
        varint_into(out, tag);
        match tag & 7 {
            VARINT => {
                let v = self.varint()?;
                varint_into(out, v);
            }
            FIXED64 => self.bytes(8, out)?,
            FIXED32 => self.bytes(4, out)?,
            LEN => {
                let len = self.length(end)?;
                varint_into(out, len);
                self.bytes(len, out)?;
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
    fn model(&mut self, weights: &mut Vec<(usize, Vec<u8>)>) -> Result<Vec<u8>> {
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

    fn graph(&mut self, end: u64, weights: &mut Vec<(usize, Vec<u8>)>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(tag) = self.tag(Some(end))? {
            if tag == GRAPH_INITIALIZER << 3 | LEN {
                let len = self.length(Some(end))?;
                let (tensor, data) = self.tensor(self.read + len)?;
                if let Some(data) = data {
                    weights.push((self.initializers, data));
                }
                self.initializers += 1;
                nested_into(&mut out, tag, &tensor);
            } else {
                self.copy_field(tag, Some(end), &mut out)?;
            }
        }
        Ok(out)
    }

    /// One initializer without its `raw_data`, and that data (when not empty).
    fn tensor(&mut self, end: u64) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        let mut data = None;
        while let Some(tag) = self.tag(Some(end))? {
            if tag == TENSOR_RAW_DATA << 3 | LEN {
                let len = self.length(Some(end))?;
                let mut bytes = Vec::new();
                self.bytes(len, &mut bytes)?;
                // A field that appears twice: the last one counts, as in prost's decoding.
                data = (!bytes.is_empty()).then_some(bytes);
            } else {
                self.copy_field(tag, Some(end), &mut out)?;
            }
        }
        Ok((out, data))
    }
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

/// Splits the ONNX model that `r` yields (at most `hint` bytes) into its skeleton and weights.
pub(crate) fn split(r: impl BufRead, hint: u64) -> Result<Split> {
    let mut walker = Walker {
        r,
        read: 0,
        hint,
        initializers: 0,
    };
    let mut weights = Vec::new();
    let skeleton = walker.model(&mut weights)?;
    Ok(Split { skeleton, weights })
}

/// The initializers' data for tract's external-data reader: slot `offset`, handed over whole.
struct Slots(Mutex<Vec<Option<Vec<u8>>>>);

/// Where [`Slots`] are said to live: tract checks that an external-data path names an existing
/// place inside the model directory before it asks the reader, so both are the root, which
/// every native file system has. No file is ever read there.
const SLOT_DIR: &str = "/";
const SLOT_LOCATION: &str = ".";

impl tract_onnx::data_resolver::ModelDataResolver for Slots {
    fn read_bytes_from_path(
        &self,
        buf: &mut Vec<u8>,
        p: &std::path::Path,
        offset: usize,
        length: Option<usize>,
    ) -> TractResult<()> {
        ensure!(
            p == std::path::Path::new(SLOT_DIR),
            "external data ({p:?}): a package keeps its weights inside its graph file"
        );
        let mut slots = self
            .0
            .lock()
            .map_err(|_| format_err!("the weights' slots are poisoned"))?;
        let data = slots
            .get_mut(offset)
            .and_then(Option::take)
            .ok_or_else(|| format_err!("external data slot {offset} does not exist or was used"))?;
        ensure!(
            length == Some(data.len()),
            "external data slot {offset} holds {} bytes, not {length:?}",
            data.len()
        );
        if buf.is_empty() {
            *buf = data;
        } else {
            buf.extend_from_slice(&data);
        }
        Ok(())
    }
}

/// Reads, verifies and parses the graph `stream` into tract's model: see the module's comment.
/// `framework` is the ONNX front end to parse with (its data reader is replaced here).
pub(crate) fn parse(
    stream: FileStream,
    mut framework: tract_onnx::Onnx,
) -> Result<tract_onnx::prelude::InferenceModel> {
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
    if let Some(t) = graph.initializer.iter().find(|t| {
        !t.external_data.is_empty()
            || t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
    }) {
        return Err(RuntimeError::Model(format!(
            "initializer `{}` keeps its data outside the graph file (ONNX external data), \
             which a package does not allow",
            t.name
        )));
    }
    let mut slots = Vec::with_capacity(weights.len());
    for (slot, (index, data)) in weights.into_iter().enumerate() {
        let tensor = graph
            .initializer
            .get_mut(index)
            .ok_or_else(|| bad(format!("initializer {index} is missing from the skeleton")))?;
        if cfg!(target_family = "wasm") {
            // WASI has no `canonicalize`, which tract's external-data path needs: the data
            // goes back into the protobuf (moved, not copied), and is freed after the parse.
            tensor.raw_data = data;
            continue;
        }
        let entry = |key: &str, value: String| pb::StringStringEntryProto {
            key: key.into(),
            value,
        };
        tensor.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
        tensor.external_data = vec![
            entry("location", SLOT_LOCATION.into()),
            entry("offset", slot.to_string()),
            entry("length", data.len().to_string()),
        ];
        slots.push(Some(data));
    }
    framework.provider = std::sync::Arc::new(Slots(Mutex::new(slots)));
    let dir = (!cfg!(target_family = "wasm")).then_some(SLOT_DIR);
    let parsed = framework
        .parse(&proto, dir)
        .map_err(|e| RuntimeError::Model(format!("{e:?}")))?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(RuntimeError::Model(format!(
            "the graph uses values it never defines: {:?}",
            parsed.unresolved_inputs
        )));
    }
    Ok(parsed.model)
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

    fn model() -> pb::ModelProto {
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
                        dims: vec![2],
                        data_type: pb::tensor_proto::DataType::Float as i32,
                        float_data: vec![4.0, 5.0],
                        ..Default::default()
                    },
                    tensor("b", &[6.0; 300]),
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
                node: vec![pb::NodeProto {
                    name: "add".into(),
                    op_type: "Add".into(),
                    input: vec!["a".into(), "x".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_skeleton_is_the_model_without_raw_data() {
        let m = model();
        let bytes = m.encode_to_vec();
        let split = split(&bytes[..], bytes.len() as u64).unwrap();
        let skeleton = pb::ModelProto::decode(&split.skeleton[..]).unwrap();
        let mut expected = m.clone();
        let mut taken = vec![];
        for (i, t) in expected
            .graph
            .as_mut()
            .unwrap()
            .initializer
            .iter_mut()
            .enumerate()
        {
            if !t.raw_data.is_empty() {
                taken.push((i, std::mem::take(&mut t.raw_data)));
            }
        }
        assert_eq!(skeleton, expected);
        assert_eq!(split.weights, taken);
        assert_eq!(
            split.weights.iter().map(|w| w.0).collect::<Vec<_>>(),
            [0, 2]
        );
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
        }
        // A group (wire type 3) and field 0.
        assert!(split(&[0x0b][..], 1).is_err());
        assert!(split(&[0x00, 0x00][..], 2).is_err());
        // A length past its message: graph of 2 bytes holding a field of 100.
        assert!(split(&[0x3a, 0x02, 0x0a, 0x64][..], 4).is_err());
        // A huge declared length does not allocate it: the read just comes up short.
        let huge = [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2];
        assert!(split(&huge[..], huge.len() as u64).is_err());
        // Eleven-byte varint.
        assert!(split(
            &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01][..],
            12
        )
        .is_err());
    }

    #[test]
    fn tract_gets_the_same_constants() {
        let bytes = model().encode_to_vec();
        let stream = autoglm_package::FileStream::of_bytes("model.onnx", bytes.clone());
        let streamed = parse(stream, tract_onnx::onnx()).unwrap();
        let whole = tract_onnx::onnx()
            .model_for_proto_model(&pb::ModelProto::decode(&bytes[..]).unwrap())
            .unwrap();
        let consts = |m: &InferenceModel| -> Vec<(String, Tensor)> {
            m.nodes()
                .iter()
                .filter_map(|n| {
                    let c = n.op_as::<tract_onnx::tract_hir::ops::konst::Const>()?;
                    Some((n.name.clone(), c.val().as_ref().clone()))
                })
                .collect()
        };
        assert_eq!(consts(&streamed).len(), 3);
        assert_eq!(consts(&streamed), consts(&whole));
    }

    #[test]
    fn external_data_in_the_file_is_refused() {
        let mut m = model();
        let t = &mut m.graph.as_mut().unwrap().initializer[1];
        t.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
        t.external_data = vec![pb::StringStringEntryProto {
            key: "location".into(),
            value: "etc/passwd".into(),
        }];
        let stream = autoglm_package::FileStream::of_bytes("model.onnx", m.encode_to_vec());
        let e = parse(stream, tract_onnx::onnx()).unwrap_err().to_string();
        assert!(e.contains("external data"), "{e}");
    }
}
