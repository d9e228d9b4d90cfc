//! Property tests (proptest) of the runtime's pure parts and of its equivalences on random
//! shapes: tokenizer truncation, batching plans, per-channel int8 weight quantization, the int8
//! and window-attention graphs on our fast paths against the plain graph, and window attention
//! against its dense reference (the tiny fixture model; no downloaded asset).

// Tests fail by panicking: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use autoglm_export::bert::{quantize_columns, AttentionGraph};
use autoglm_export::hf::Tensor;
use autoglm_export::{export, fixture, ExportOptions};
use autoglm_runtime::{
    batch, Attention, Backend, Encoded, LoadOptions, Model, Quantization, TextEncoder, TractBackend,
};
use autoglm_testkit::max_abs_diff;
use proptest::prelude::*;
use std::sync::OnceLock;

fn encoder(max_length: usize) -> TextEncoder {
    TextEncoder::from_bytes(fixture::tokenizer_json().as_bytes(), max_length).unwrap()
}

/// Texts of fixture words (in the vocabulary) mixed with arbitrary characters (mostly not).
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            3 => proptest::sample::select(fixture::WORDS.to_vec()).prop_map(str::to_owned),
            1 => any::<String>(),
        ],
        0..40,
    )
    .prop_map(|words| words.join(" "))
}

fn encodings() -> impl Strategy<Value = Vec<Encoded>> {
    proptest::collection::vec(1usize..50, 0..20).prop_map(|lengths| {
        lengths
            .into_iter()
            .enumerate()
            .map(|(i, n)| Encoded {
                ids: (0..n).map(|j| (i * 7 + j) as i64 % 13 + 1).collect(),
                type_ids: vec![0; n],
            })
            .collect()
    })
}

/// The fixture classification package's graph with `change` applied: (onnx, max_length,
/// sequence multiple).
fn graph(change: impl FnOnce(&mut ExportOptions)) -> (Vec<u8>, usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = fixture::options(dir.path(), true);
    change(&mut options);
    let package = export(&options).unwrap();
    let m = package.manifest();
    (
        package.file(&m.graph.file).unwrap().to_vec(),
        m.max_length,
        m.graph.sequence_multiple,
    )
}

/// Plain and patched (2 threads) backends of one graph, built once per test binary.
struct Pair {
    plain: TractBackend,
    fast: TractBackend,
    max_length: usize,
    multiple: usize,
    int8: bool,
}

fn pair(change: impl FnOnce(&mut ExportOptions)) -> Pair {
    let mut int8 = false;
    let (onnx, max_length, multiple) = graph(|o| {
        change(o);
        int8 = o.quantization == Quantization::Int8;
    });
    Pair {
        int8,
        plain: TractBackend::plain(&onnx, 1, multiple).unwrap(),
        fast: TractBackend::new(&onnx, 2, multiple).unwrap(),
        max_length,
        multiple,
    }
}

fn fast_equals_plain(p: &Pair, lengths: &[usize], max_batch: usize) -> Result<(), TestCaseError> {
    let texts: Vec<Encoded> = lengths
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let n = n.clamp(1, p.max_length);
            Encoded {
                ids: (0..n)
                    .map(|j| ((i * 31 + j * 17) % fixture::vocab_size()) as i64)
                    .collect(),
                type_ids: vec![0; n],
            }
        })
        .collect();
    for b in batch::plan(&texts, max_batch, 0, p.multiple) {
        // int8 quantizes each text's activations over that text alone (per-row plans): its
        // reference is the plain graph on each text alone; fp32's, the padded batch.
        let expected: Vec<f32> = if p.int8 {
            b.rows
                .iter()
                .flat_map(|&row| {
                    let alone = batch::plan(&texts[row..=row], 1, 0, p.multiple);
                    p.plain.run(&alone[0]).unwrap()
                })
                .collect()
        } else {
            p.plain.run(&b).unwrap()
        };
        let d = max_abs_diff(&expected, &p.fast.run(&b).unwrap());
        prop_assert!(
            d <= 1e-5,
            "batch {} x {}: |Δ| {d:e}",
            b.rows.len(),
            b.sequence
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Truncation keeps [CLS], the first tokens in order, and [SEP]: the encoding at a small
    /// limit is the one at a large limit cut to size.
    #[test]
    fn truncation_keeps_the_first_tokens(text in text(), limit in 2usize..40) {
        let long = encoder(512).encode(&text).unwrap();
        let short = encoder(limit).encode(&text).unwrap();
        prop_assert!(short.len() <= limit && short.len() >= 2);
        prop_assert_eq!(short.ids[0], long.ids[0]);
        if long.len() <= limit {
            prop_assert_eq!(&short, &long);
        } else {
            prop_assert_eq!(&short.ids[..limit - 1], &long.ids[..limit - 1]);
            prop_assert_eq!(short.ids[limit - 1], *long.ids.last().unwrap());
        }
    }

    /// Every text lands in exactly one batch of at most `max_batch` rows, padded to the
    /// smallest multiple of `multiple` that holds its longest row, ids then padding.
    #[test]
    fn batch_plans_cover_every_text_once_with_minimal_padding(
        texts in encodings(), max_batch in 1usize..9, multiple in 1usize..9, pad in 0i64..3,
    ) {
        let batches = batch::plan(&texts, max_batch, pad, multiple);
        let mut seen = vec![0; texts.len()];
        for b in &batches {
            prop_assert!(!b.rows.is_empty() && b.rows.len() <= max_batch);
            let longest = b.rows.iter().map(|&i| texts[i].len()).max().unwrap();
            prop_assert_eq!(b.sequence, longest.div_ceil(multiple) * multiple);
            for (r, &i) in b.rows.iter().enumerate() {
                seen[i] += 1;
                let row = &b.input_ids[r * b.sequence..(r + 1) * b.sequence];
                let mask = &b.attention_mask[r * b.sequence..(r + 1) * b.sequence];
                let n = texts[i].len();
                prop_assert_eq!(&row[..n], &texts[i].ids[..]);
                prop_assert!(row[n..].iter().all(|&id| id == pad));
                prop_assert!(mask[..n].iter().all(|&m| m == 1) && mask[n..].iter().all(|&m| m == 0));
            }
        }
        prop_assert!(seen.iter().all(|&s| s == 1));
    }

    /// Per-channel symmetric quantization: every value within the limit, and within half a
    /// step of the weight it stands for.
    #[test]
    fn int8_weights_are_within_half_a_step(
        (rows, cols, data) in (1usize..12, 1usize..12).prop_flat_map(|(r, c)| {
            (Just(r), Just(c), proptest::collection::vec(-4.0f32..4.0, r * c))
        }),
        limit in prop_oneof![Just(63), Just(127)],
    ) {
        let w = Tensor::new(vec![rows, cols], data);
        let (q, scales) = quantize_columns(&w, limit);
        for (i, (&v, &q)) in w.data.iter().zip(&q).enumerate() {
            let s = scales[i % cols];
            prop_assert!(i32::from(q).abs() <= limit);
            prop_assert!((f32::from(q) * s - v).abs() <= s / 2.0 + 1e-6);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The int8 graph on our fast paths (patched plan, pooled states, 2 threads) equals the
    /// plain graph on random batch shapes.
    #[test]
    fn int8_fast_paths_equal_the_plain_graph(
        lengths in proptest::collection::vec(1usize..64, 1..7), max_batch in 1usize..5,
    ) {
        static PAIR: OnceLock<Pair> = OnceLock::new();
        let p = PAIR.get_or_init(|| pair(|o| o.quantization = Quantization::Int8));
        fast_equals_plain(p, &lengths, max_batch)?;
    }

    /// The window-attention graph on our fast paths equals the plain graph on random shapes.
    #[test]
    fn window_fast_paths_equal_the_plain_graph(
        lengths in proptest::collection::vec(1usize..64, 1..7), max_batch in 1usize..5,
    ) {
        static PAIR: OnceLock<Pair> = OnceLock::new();
        let p = PAIR.get_or_init(|| pair(|o| o.attention = Attention::Window { window: 6, global: 2 }));
        fast_equals_plain(p, &lengths, max_batch)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    /// Window attention (blocked, linear) equals the dense graph with the equivalent mask for
    /// random (even) windows, global counts and text lengths, batched with padding.
    #[test]
    fn window_attention_equals_its_dense_reference(
        half in 1usize..6, global in 0usize..4, lengths in proptest::collection::vec(1usize..48, 1..5),
    ) {
        let window = 2 * half; // the exporter takes even windows (half on each side)
        let dir = tempfile::tempdir().unwrap();
        fixture::write_base(&dir.path().join("base"));
        let mut options = ExportOptions::new(dir.path().join("base"));
        options.max_length = Some(48);
        options.attention = Attention::Window { window, global };
        let sparse = Model::from_package(export(&options).unwrap(), &LoadOptions::default()).unwrap();
        options.reference_attention = Some(AttentionGraph::WindowReference { window, global });
        let dense = Model::from_package(export(&options).unwrap(), &LoadOptions::default()).unwrap();
        let words = fixture::WORDS;
        let texts: Vec<String> = lengths
            .iter()
            .map(|&n| (0..n).map(|i| words[(i * 5 + n) % words.len()]).collect::<Vec<_>>().join(" "))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for (x, y) in sparse.embed(&refs).unwrap().iter().zip(&dense.embed(&refs).unwrap()) {
            let d = max_abs_diff(x, y);
            prop_assert!(d <= 1e-4, "window {window} global {global}: |Δ| {d:e}");
        }
    }
}
