//! Property tests (proptest) of the package format: what is written reads back equal, through
//! a `.tar` and through a directory; any changed byte of a file is caught by its digest; and a
//! manifest is accepted only when every limit its schema states holds, and then round-trips.

// Tests fail by panicking: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use autoglm_package::{
    Attention, Manifest, Package, PackageError, MAX_LABELS, MAX_LABEL_BYTES, MAX_MAX_LENGTH,
    MAX_SEQUENCE_MULTIPLE,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Extra files with valid names (`[A-Za-z0-9._-]`, not starting with a dot) and any bytes.
fn extra_files() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::vec(
        (
            "[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}",
            proptest::collection::vec(any::<u8>(), 0..3000),
        ),
        0..4,
    )
}

fn package(graph: Vec<u8>, extra: Vec<(String, Vec<u8>)>) -> Option<Package> {
    let mut files = vec![
        ("model.onnx".to_string(), graph),
        ("tokenizer.json".to_string(), b"{}".to_vec()),
    ];
    for (name, bytes) in extra {
        if name != "manifest.json" && files.iter().all(|(n, _)| *n != name) {
            files.push((name, bytes));
        }
    }
    Some(Package::new(Manifest::example(), files).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn packages_round_trip_through_tar_and_directory(
        graph in proptest::collection::vec(any::<u8>(), 0..5000),
        extra in extra_files(),
    ) {
        let p = package(graph, extra).unwrap();
        prop_assert_eq!(&Package::from_tar(&p.to_tar()).unwrap(), &p);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pkg");
        p.write(&path).unwrap();
        prop_assert_eq!(&Package::open(&path).unwrap(), &p);
        let tar = dir.path().join("pkg.tar");
        p.write(&tar).unwrap();
        prop_assert_eq!(&Package::open(&tar).unwrap(), &p);
    }

    #[test]
    fn a_changed_byte_in_any_file_is_refused(
        graph in proptest::collection::vec(any::<u8>(), 1..5000),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let p = package(graph, Vec::new()).unwrap();
        let mut entries: std::collections::BTreeMap<String, Vec<u8>> =
            p.files().map(|(n, b)| (n.to_string(), b.to_vec())).collect();
        entries.insert("manifest.json".into(), p.manifest().to_json());
        let onnx = entries.get_mut("model.onnx").unwrap();
        let i = at.index(onnx.len());
        onnx[i] ^= flip;
        let refused = matches!(Package::from_entries(entries), Err(PackageError::Digest { .. }));
        prop_assert!(refused);
    }

    /// Random values in the fields a hostile manifest controls: accepted exactly when the
    /// schema's limits hold; accepted ones serialize back to the same manifest.
    #[test]
    fn manifests_are_accepted_only_within_their_limits(
        max_length in prop_oneof![0usize..600, Just(MAX_MAX_LENGTH), Just(MAX_MAX_LENGTH + 1), any::<usize>()],
        multiple in prop_oneof![0usize..80, Just(MAX_SEQUENCE_MULTIPLE + 1), any::<usize>()],
        labels in proptest::collection::vec("[a-c]{1,3}|x{250,260}", 0..6),
        window in proptest::option::of((0usize..1200, 0usize..700)),
        size in prop_oneof![0u64..100, Just(u64::MAX), Just(1u64 << 40)],
    ) {
        let example = package(b"onnx".to_vec(), Vec::new()).unwrap();
        let mut v: Value = serde_json::from_slice(&example.manifest().to_json()).unwrap();
        v["max_length"] = json!(max_length);
        v["graph"]["sequence_multiple"] = json!(multiple);
        v["labels"] = json!(labels);
        if let Some((w, g)) = window {
            v["attention"] = serde_json::to_value(Attention::Window { window: w, global: g }).unwrap();
        }
        v["files"]["model.onnx"]["size"] = json!(size);
        let parsed = Manifest::from_json(v.to_string().as_bytes());
        let unique = labels.iter().collect::<std::collections::BTreeSet<_>>().len() == labels.len();
        let within = (2..=MAX_MAX_LENGTH).contains(&max_length)
            && multiple >= 1 && multiple <= max_length && multiple <= MAX_SEQUENCE_MULTIPLE
            && labels.len() >= 2 && labels.len() <= MAX_LABELS && unique
            && labels.iter().all(|l| l.len() <= MAX_LABEL_BYTES)
            && window.is_none_or(|(w, g)| w >= 2 && w <= 2 * max_length && g < max_length)
            && size <= 4 << 30;
        prop_assert_eq!(parsed.is_ok(), within, "{:?}", parsed.as_ref().err());
        if let Ok(m) = parsed {
            if let Some((w, g)) = window {
                prop_assert_eq!(m.attention, Attention::Window { window: w, global: g });
            }
            prop_assert_eq!(&Manifest::from_json(&m.to_json()).unwrap(), &m);
        }
    }
}
