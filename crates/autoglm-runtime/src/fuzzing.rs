//! The body of the `tokenize_batch` fuzz target (`fuzz/`, cargo-fuzz on nightly) and of its
//! corpus replay test (`tests/fuzz_corpus.rs`, stable): the same code for both. Not a public API.

use crate::batch;
use crate::tokenize::TextEncoder;

/// Target `tokenize_batch`: arbitrary bytes, read as (lossy) UTF-8 and split into texts at
/// `\n`, tokenized with the tokenizer `tokenizer_json` and batched. The limits come from the
/// input's length, so the corpus covers several: `max_length` 1 to 64 (1 is below the two
/// special tokens), `max_batch` 1 to 4, `multiple` 1 to 8.
///
/// Must never panic; every encoding must respect `max_length`, and every batch must hold each
/// text once, padded to a multiple of `multiple`, with a mask of ones over exactly its tokens.
pub fn tokenize_batch(tokenizer_json: &[u8], bytes: &[u8]) {
    let n = bytes.len();
    let max_length = 1 + n % 64;
    let max_batch = 1 + n % 4;
    let multiple = 1 + n % 8;
    let Ok(encoder) = TextEncoder::from_bytes(tokenizer_json, max_length) else {
        return;
    };
    let text = String::from_utf8_lossy(bytes);
    let texts: Vec<&str> = text.split('\n').collect();
    let Ok(encoded) = encoder.encode_all(&texts) else {
        return;
    };
    for e in &encoded {
        assert!(
            e.len() <= max_length,
            "{} tokens over max_length {max_length}",
            e.len()
        );
        assert_eq!(e.ids.len(), e.type_ids.len());
    }
    let batches = batch::plan(&encoded, max_batch, encoder.pad_id(), multiple);
    let mut seen = vec![false; encoded.len()];
    for b in &batches {
        assert!(!b.rows.is_empty() && b.rows.len() <= max_batch);
        assert_eq!(b.sequence % multiple, 0);
        let cells = b.rows.len() * b.sequence;
        assert_eq!(b.input_ids.len(), cells);
        assert_eq!(b.attention_mask.len(), cells);
        assert_eq!(b.token_type_ids.len(), cells);
        for (r, &i) in b.rows.iter().enumerate() {
            assert!(
                !std::mem::replace(&mut seen[i], true),
                "row {i} batched twice"
            );
            let e = &encoded[i];
            let row = r * b.sequence..(r + 1) * b.sequence;
            assert!(e.len() <= b.sequence);
            assert_eq!(&b.input_ids[row.start..row.start + e.len()], &e.ids[..]);
            assert_eq!(
                b.attention_mask[row].iter().sum::<i64>(),
                e.len() as i64,
                "mask of row {i}"
            );
        }
    }
    assert!(seen.iter().all(|&s| s), "a text is in no batch");
}

/// Target `onnx_load`: arbitrary bytes as the graph (`model.onnx`) of a package whose other
/// files and manifest are `template`'s (the manifest's digest and size are updated to match,
/// as an attacker who writes a package can). Loads it on tract, as `autoglm` does, and if the
/// load is accepted, runs two texts through it.
///
/// Must never panic or abort: a graph that tract cannot parse, type or optimise is a
/// [`crate::RuntimeError`], and a graph that loads must run (or refuse) without panicking and
/// give one output row per text, of the width the manifest's check accepted.
pub fn onnx_load(template: &crate::Package, bytes: &[u8]) {
    let manifest = template.manifest().clone();
    let graph = manifest.graph.file.clone();
    let files = template
        .files()
        .map(|(name, data)| {
            let data = if name == graph { bytes } else { data };
            (name.to_string(), data.to_vec())
        })
        .collect();
    let Ok(package) = crate::Package::new(manifest, files) else {
        return;
    };
    let options = crate::LoadOptions::default();
    let Ok(model) = crate::Model::from_package(package, &options) else {
        return;
    };
    let texts = ["a short text", ""];
    if let Ok(outputs) = model.outputs(&texts) {
        assert_eq!(outputs.len(), texts.len());
        let width = outputs[0].len();
        assert!(outputs.iter().all(|o| o.len() == width && width > 0));
        if model.manifest().kind == crate::ModelKind::Classification {
            assert_eq!(width, model.labels().len());
        }
    }
}

/// Target `int8_kernels`: arbitrary bytes as one integer product. The first bytes choose the
/// shape (`rows` 1–16, `k` 1–200, `n` 1–40), the zero point and whether the weights are limited
/// to the exporter's ±63; the rest, cycled, are the activations and weights. Every integer
/// kernel this CPU runs ([`crate::ops::qgemm::Tier::available`]) on one and on two threads.
///
/// Must never panic, and every kernel must equal the definition (i64 sums of `(q − zp)·w`,
/// wrapped to i32, then the f32 rescale) bit for bit.
pub fn int8_kernels(bytes: &[u8]) {
    use crate::ops::qgemm::{qgemm, PackedI8, Tier};
    let [r, k0, k1, n, zp, flags, rest @ ..] = bytes else {
        return;
    };
    let (rows, k, n) = (
        1 + usize::from(*r) % 16,
        1 + (usize::from(*k0) << 8 | usize::from(*k1)) % 200,
        1 + usize::from(*n) % 40,
    );
    let narrow = flags & 1 == 1;
    let byte = |i: usize| rest.get(i % rest.len().max(1)).copied().unwrap_or(0);
    let a: Vec<u8> = (0..rows * k).map(byte).collect();
    let w: Vec<i8> = (0..k * n)
        .map(|i| {
            let v = byte(rows * k + i) as i8;
            if narrow {
                v.clamp(-63, 63)
            } else {
                v
            }
        })
        .collect();
    let scale: Vec<f32> = (0..n).map(|c| 1.0 / (1 + c) as f32).collect();
    let mut expected = vec![0f32; rows * n];
    for (i, e) in expected.iter_mut().enumerate() {
        let (row, col) = (i / n, i % n);
        let sum: i64 = (0..k)
            .map(|kk| (i64::from(a[row * k + kk]) - i64::from(*zp)) * i64::from(w[kk * n + col]))
            .sum();
        *e = sum as i32 as f32 * scale[col];
    }
    static POOL: std::sync::OnceLock<tract_linalg::multithread::Executor> =
        std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| tract_linalg::multithread::Executor::multithread(2));
    for tier in Tier::available() {
        let packed = PackedI8::new(&w, k, n, tier).expect("weights of the stated shape pack");
        for executor in [&tract_linalg::multithread::Executor::SingleThread, pool] {
            let mut out = vec![f32::NAN; rows * n];
            match qgemm(&a, rows, *zp, &packed, &scale, None, &mut out, executor) {
                Ok(()) => assert!(
                    out.iter()
                        .zip(&expected)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{tier:?}: [{rows}, {k}] x [{k}, {n}], zp {zp}"
                ),
                // Only the avx2 tier refuses, and only weights beyond ±64.
                Err(_) => assert!(tier == Tier::Avx2 && packed.max_abs > 64),
            }
        }
    }
}
