//! Export on the real model: determinism, provenance, and refusal of tampered packages.

use crate::support::*;
use autoglm_export::{export, ExportOptions};
use autoglm_package::{ModelKind, Package, PackageError};
use autoglm_runtime::{Model, RuntimeError};

#[test]
fn export_is_byte_for_byte_deterministic() {
    let Some(first) = sentiment_package() else {
        return;
    };
    let again = export(&ExportOptions::new(base_dir().unwrap()).with_adapter(adapter_dir()))
        .expect("export");
    let dir = tempfile::tempdir().unwrap();
    again.write(&dir.path().join("again")).unwrap();
    for name in ["manifest.json", "model.onnx", "tokenizer.json"] {
        let a = std::fs::read(first.join(name)).unwrap();
        let b = std::fs::read(dir.path().join("again").join(name)).unwrap();
        assert!(a == b, "{name} differs between two exports");
    }
    // The tar form is deterministic too.
    assert_eq!(again.to_tar(), Package::open(&first).unwrap().to_tar());
}

#[test]
fn manifests_describe_the_models() {
    let (Some(emb), Some(cls)) = (embedding_package(), sentiment_package()) else {
        return;
    };
    let emb = Package::open(emb).unwrap();
    let m = emb.manifest();
    assert_eq!(m.kind, ModelKind::Embedding);
    assert_eq!(m.max_length, 256, "sentence-transformers' max_seq_length");
    assert!(m.normalize);
    assert_eq!(m.graph.output, "sentence_embedding");
    let cls = Package::open(cls).unwrap();
    let m = cls.manifest();
    assert_eq!(m.kind, ModelKind::Classification);
    assert_eq!(m.labels, ["negative", "positive"]);
    assert_eq!(m.provenance.adapter.as_deref(), Some("sentiment-lora"));
    assert_eq!(
        m.provenance.base_weights_sha256,
        emb.manifest().provenance.base_weights_sha256
    );
    // Standard ops only, nothing from a vendor domain.
    let ops = autoglm_export::onnx::op_counts(cls.file("model.onnx").unwrap()).unwrap();
    assert!(ops.keys().all(|op| !op.contains("::")), "{ops:?}");
    assert_eq!(ops["Softmax"], 6);
}

#[test]
fn a_tampered_package_is_refused() {
    let Some(pkg) = sentiment_package() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("pkg");
    std::fs::create_dir(&copy).unwrap();
    for f in ["manifest.json", "model.onnx", "tokenizer.json"] {
        std::fs::copy(pkg.join(f), copy.join(f)).unwrap();
    }
    let mut tok = std::fs::read(copy.join("tokenizer.json")).unwrap();
    let at = tok.len() / 2;
    tok[at] = if tok[at] == b'a' { b'b' } else { b'a' };
    std::fs::write(copy.join("tokenizer.json"), tok).unwrap();
    let err = Model::load(&copy).unwrap_err();
    assert!(
        matches!(err, RuntimeError::Package(PackageError::Digest { ref name, .. }) if name == "tokenizer.json"),
        "{err}"
    );
    // The graph is streamed into tract and verified as it is read: a changed byte in a weight
    // (still a well-formed graph), or a cut, is refused as damage, not parsed.
    std::fs::copy(pkg.join("tokenizer.json"), copy.join("tokenizer.json")).unwrap();
    let mut graph = std::fs::read(copy.join("model.onnx")).unwrap();
    let at = graph.len() / 2;
    graph[at] ^= 1;
    std::fs::write(copy.join("model.onnx"), &graph).unwrap();
    let err = Model::load(&copy).unwrap_err();
    assert!(
        matches!(err, RuntimeError::Package(PackageError::Digest { ref name, .. }) if name == "model.onnx"),
        "{err}"
    );
    std::fs::write(copy.join("model.onnx"), &graph[..at]).unwrap();
    let err = Model::load(&copy).unwrap_err();
    assert!(
        matches!(err, RuntimeError::Package(PackageError::Size { ref name, .. }) if name == "model.onnx"),
        "{err}"
    );
}

#[test]
fn a_streamed_graph_gives_the_same_outputs_as_a_graph_read_whole() {
    let Some(pkg) = sentiment_package() else {
        return;
    };
    let texts = ["a wonderful, moving film", "dull and far too long", ""];
    let streamed = Model::load(&pkg).unwrap().outputs(&texts).unwrap();
    let package = autoglm_package::Package::open(&pkg).unwrap();
    let whole = Model::from_package(package, &Default::default()).unwrap();
    assert_eq!(streamed, whole.outputs(&texts).unwrap());
}
