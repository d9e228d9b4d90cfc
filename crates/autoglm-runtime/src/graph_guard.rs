//! Checks on an ONNX graph before tract analyses it, for what tract trusts and a hostile
//! package controls. Found by fuzzing the load path (`onnx_load`, ROBUSTNESS.md): a
//! `LayerNormalization` whose `axis` is below `-rank` made tract's shape inference loop about
//! 2^64 times (the axis wraps around when it is made positive, and a loop runs up to it).
//! ONNX allows an axis only in `[-rank, rank)`, but the rank is known only after the analysis
//! that hangs; so every axis-like attribute is bounded by [`MAX_RANK`] (no encoder graph has
//! tensors of more than a handful of dimensions), and `LayerNormalization`'s negative axis may
//! only be -1 (the last axis, what every BERT-family export uses): any tensor has that axis.
//! A `Transpose` whose `perm` is not a permutation (a repeated axis) made tract's lowering of
//! it grow without end (2 GB in a second): `perm` must hold each of `0..n` once.
//! Our own fused node (`AutoglmLinearI8`, written by the runtime into a graph it verified) is
//! refused in a file.
//! (Panics inside tract on other malformed graphs are caught by the backend instead.)

use crate::onnx_pb as pb;
use crate::{Result, RuntimeError};

/// Largest tensor rank an attribute may refer to (encoder graphs use rank 4 at most).
pub const MAX_RANK: i64 = 16;

/// Deepest nesting of subgraphs (`If`/`Loop`/`Scan` bodies) looked into.
const MAX_DEPTH: usize = 8;

/// Refuses a graph with an attribute tract would misread: an `axis`/`axes`/`perm` value out of
/// `[-MAX_RANK, MAX_RANK)`, a `LayerNormalization` axis below -1, a `perm` that is not a
/// permutation.
pub fn check(model: &pb::ModelProto) -> Result<()> {
    match &model.graph {
        Some(g) => check_graph(g, 0),
        None => Err(RuntimeError::Model("the ONNX file has no graph".into())),
    }
}

fn check_graph(graph: &pb::GraphProto, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(RuntimeError::Model(format!(
            "subgraphs nested deeper than {MAX_DEPTH}"
        )));
    }
    for node in &graph.node {
        if node.op_type == crate::ops::qlinear::ONNX_OP
            || node.domain == crate::ops::qlinear::DOMAIN
        {
            return Err(RuntimeError::Model(format!(
                "node `{}` uses {} ({}), which only the runtime itself may write",
                node.name, node.op_type, node.domain
            )));
        }
        for a in &node.attribute {
            let values: &[i64] = match a.name.as_str() {
                "axis" => std::slice::from_ref(&a.i),
                "axes" | "perm" => &a.ints,
                _ => &[],
            };
            let lowest = if node.op_type == "LayerNormalization" && a.name == "axis" {
                -1
            } else {
                -MAX_RANK
            };
            if let Some(v) = values.iter().find(|v| !(lowest..MAX_RANK).contains(*v)) {
                return Err(RuntimeError::Model(format!(
                    "node `{}` ({}): attribute {} = {v} is out of range \
                     ({lowest} to {} here)",
                    node.name,
                    node.op_type,
                    a.name,
                    MAX_RANK - 1
                )));
            }
            if a.name == "perm" {
                let mut seen = [false; MAX_RANK as usize];
                let permutation = a.ints.len() <= seen.len()
                    && a.ints.iter().all(|&v| {
                        (0..a.ints.len() as i64).contains(&v)
                            && !std::mem::replace(&mut seen[v as usize], true)
                    });
                if !permutation {
                    return Err(RuntimeError::Model(format!(
                        "node `{}` ({}): perm {:?} is not a permutation of its axes",
                        node.name, node.op_type, a.ints
                    )));
                }
            }
            for g in a.g.iter().map(|g| &**g).chain(&a.graphs) {
                check_graph(g, depth + 1)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(op: &str, name: &str, i: i64, ints: &[i64]) -> pb::ModelProto {
        let attribute = pb::AttributeProto {
            name: name.into(),
            i,
            ints: ints.to_vec(),
            ..Default::default()
        };
        let node = pb::NodeProto {
            name: "n".into(),
            op_type: op.into(),
            attribute: vec![attribute],
            ..Default::default()
        };
        pb::ModelProto {
            graph: Some(pb::GraphProto {
                node: vec![node],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn axes_and_permutations_are_bounded() {
        for ok in [
            model("LayerNormalization", "axis", -1, &[]),
            model("LayerNormalization", "axis", 2, &[]),
            model("Softmax", "axis", -3, &[]),
            model("Transpose", "perm", 0, &[0, 2, 1, 3]),
            model("Unsqueeze", "axes", 0, &[0, -1]),
        ] {
            check(&ok).unwrap();
        }
        for bad in [
            model("LayerNormalization", "axis", -2, &[]),
            model("Softmax", "axis", 1 << 40, &[]),
            model("Softmax", "axis", -17, &[]),
            model("Transpose", "perm", 0, &[0, 0]),
            model("Transpose", "perm", 0, &[0, 2]),
            model("Unsqueeze", "axes", 0, &[99]),
        ] {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
        assert!(check(&pb::ModelProto::default()).is_err());
    }
}
