//! Every fast path of the tract backend against the plain graph (tract's own optimization of
//! the same ONNX, no operator of ours, one state, one thread): our operators patched into the
//! plan, the per-row plan (each row cut to its own length), blocks of short rows run at once,
//! pooled run states, and batches split across threads. Random token ids, lengths that
//! are and are not multiples of anything, padding in every batch; dense, window and int8
//! packages of the tiny fixture model. The real model has the same test in the CLI's suite
//! (`fast_paths::`).

use autoglm_export::{export, fixture, ExportOptions};
use autoglm_runtime::{batch, Attention, Backend, Encoded, Quantization, TractBackend};
use autoglm_testkit::max_abs_diff;

/// Deterministic pseudo-random numbers (the test needs variety, not a generator crate).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % below
    }
}

fn random_texts(rng: &mut Lcg, count: usize, max_len: usize, vocab: usize) -> Vec<Encoded> {
    (0..count)
        .map(|_| {
            let len = 1 + rng.next(max_len);
            Encoded {
                ids: (0..len).map(|_| rng.next(vocab) as i64).collect(),
                type_ids: vec![0; len],
            }
        })
        .collect()
}

/// `options` on the fixture model and adapter, written under `dir`.
fn on_fixture(dir: &std::path::Path, options: ExportOptions) -> ExportOptions {
    let sources = fixture::options(dir, true);
    ExportOptions {
        base: sources.base,
        adapter: sources.adapter,
        ..options
    }
}

fn check(name: &str, options: ExportOptions) {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = on_fixture(dir.path(), options);
    let package = export(&options).expect("export");
    let manifest = package.manifest().clone();
    let onnx = package.file(&manifest.graph.file).expect("graph");
    let multiple = manifest.graph.sequence_multiple;
    let plain = TractBackend::plain(onnx, 1, multiple).expect("plain plan");
    let mut rng = Lcg(0x5eed ^ name.len() as u64);
    for threads in [1, 2, 3] {
        let fast = TractBackend::new(onnx, threads, multiple).expect("patched plan");
        assert!(fast.rewrites() > 0, "{name}: no attention add was replaced");
        assert!(fast.per_row(), "{name}: per-row plan");
        // Short rows run in blocks, except where activations are quantized per run (int8).
        assert_eq!(
            fast.blocks(),
            !name.contains("int8"),
            "{name}: blocks of rows"
        );
        // Attention is fused, one operator per layer: dense (fp32 or int8) or window.
        let (dense, window) = (
            fast.op_count("AutoglmAttention"),
            fast.op_count("AutoglmWindowAttention"),
        );
        let (is_window, is_int8) = (name.contains("window"), name.contains("int8"));
        let want = if is_window {
            (0, fixture::LAYERS)
        } else {
            (fixture::LAYERS, 0)
        };
        assert_eq!((dense, window), want, "{name}: attention not fused");
        // No softmax is left to tract: the window's global queries are in its operator too.
        assert_eq!(
            fast.op_count("Softmax"),
            0,
            "{name}: a softmax left unfused"
        );
        if is_window {
            // Nor a transpose into the window op (it reads the linear layers' layout), nor
            // out of it: where the graph moved its output back (int8), and before the output
            // projection (fp32, where tract would make one of its own).
            assert_eq!(fast.op_count("MoveAxis"), 0, "{name}: transposes left");
        }
        // int8: every linear layer of every layer (q, k, v, output, up, down) is one op.
        let int8_linears = if is_int8 { 6 * fixture::LAYERS } else { 0 };
        assert_eq!(fast.op_count("AutoglmLinearI8"), int8_linears, "{name}");
        // int8: the feed-forward's GELU runs inside its up projection (in parts on a pool).
        if is_int8 {
            assert_eq!(
                fast.op_count("GeluExact"),
                0,
                "{name}: a GELU left to tract"
            );
        }
        // fp32 (x86_64, where it is the default): every linear layer of every layer on our f32
        // kernel (and the task head's), with the feed-forward's GELU inside it.
        if autoglm_runtime::ops::flinear::chosen() && !is_int8 {
            let linears = fast.op_count("AutoglmLinearF32");
            assert!(linears >= 6 * fixture::LAYERS, "{name}: {linears}");
            assert_eq!(
                fast.op_count("OptMatMul"),
                0,
                "{name}: a product left to tract"
            );
            assert_eq!(
                fast.op_count("GeluExact"),
                0,
                "{name}: a GELU left to tract"
            );
        }
        for round in 0..6 {
            let count = 1 + rng.next(7);
            let mut texts =
                random_texts(&mut rng, count, manifest.max_length, fixture::vocab_size());
            if round >= 4 {
                // Rows of one length, or of lengths a step apart: what forms blocks of rows.
                let len = texts[0].len().max(2);
                for (i, t) in texts.iter_mut().enumerate() {
                    let l = len - (round - 4) * (i % 2);
                    t.ids.resize(l, 5);
                    t.type_ids.resize(l, 0);
                }
            }
            for b in batch::plan(&texts, 8, 0, multiple) {
                // int8 quantizes each text's activations over that text alone: the reference
                // is the plain graph on each text alone (for fp32, on the padded batch).
                let expected = if is_int8 {
                    b.rows
                        .iter()
                        .flat_map(|&row| {
                            let alone = batch::plan(&texts[row..=row], 1, 0, multiple);
                            plain.run(&alone[0]).expect("plain run")
                        })
                        .collect()
                } else {
                    plain.run(&b).expect("plain run")
                };
                // Twice: the second run reuses the pooled states.
                for _ in 0..2 {
                    let got = fast.run(&b).expect("fast run");
                    let d = max_abs_diff(&expected, &got);
                    assert!(
                        d <= 1e-5,
                        "{name}, {threads} threads, round {round}, batch of {} x {}: |Δ| {d:e}",
                        b.rows.len(),
                        b.sequence
                    );
                }
            }
        }
    }
}

#[test]
fn dense_fast_paths_equal_the_plain_graph() {
    check("dense", ExportOptions::new("unused"));
}

#[test]
fn window_fast_paths_equal_the_plain_graph() {
    let mut options = ExportOptions::new("unused");
    options.attention = Attention::Window {
        window: 4,
        global: 1,
    };
    check("window", options);
}

#[test]
fn int8_window_fast_paths_equal_the_plain_graph() {
    let mut options = ExportOptions::new("unused");
    options.quantization = Quantization::Int8;
    options.attention = Attention::Window {
        window: 4,
        global: 1,
    };
    check("int8 window", options);
}

#[test]
fn int8_fast_paths_equal_the_plain_graph() {
    let mut options = ExportOptions::new("unused");
    options.quantization = Quantization::Int8;
    check("int8", options);
}

/// int8 graphs quantize activations at run time: an answer must not depend on the thread
/// count (nor on the rest of its batch).
#[test]
fn int8_answers_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    fixture::write_base(&dir.path().join("base"));
    let mut options = ExportOptions::new(dir.path().join("base"));
    options.quantization = Quantization::Int8;
    let package = export(&options).expect("export");
    let onnx = package.file(&package.manifest().graph.file).expect("graph");
    let one = TractBackend::new(onnx, 1, 1).expect("1 thread");
    let two = TractBackend::new(onnx, 2, 1).expect("2 threads");
    let mut rng = Lcg(7);
    let texts = random_texts(&mut rng, 6, 16, fixture::vocab_size());
    for b in batch::plan(&texts, 8, 0, 1) {
        assert_eq!(one.run(&b).expect("run"), two.run(&b).expect("run"));
    }
}

/// The plan cache (src/plan_cache.rs): an int8 package's first load writes its plan, the
/// second reads it, and both answer bit for bit as the ONNX load does, dense and window. A
/// damaged or truncated cache file is ignored and written again; a damaged package is still
/// refused when its plan is cached. fp32 plans are not cached (they load no faster).
#[test]
fn cached_plans_answer_as_the_onnx_load() {
    use autoglm_runtime::{Package, PlanCache};
    let mut int8 = ExportOptions::new("unused");
    int8.quantization = Quantization::Int8;
    let mut window = ExportOptions::new("unused");
    window.attention = Attention::Window {
        window: 4,
        global: 1,
    };
    let mut int8_window = window.clone();
    int8_window.quantization = Quantization::Int8;
    for (name, options) in [
        ("dense", ExportOptions::new("unused")),
        ("int8", int8),
        ("window", window),
        ("int8 window", int8_window),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = on_fixture(dir.path(), options);
        let out = dir.path().join("package");
        let package = autoglm_export::export_to(&options, &out).expect("export");
        let manifest = package.manifest().clone();
        let multiple = manifest.graph.sequence_multiple;
        let onnx = package.file(&manifest.graph.file).expect("graph");
        let reference = TractBackend::new(onnx, 1, multiple).expect("ONNX load");
        let cache = dir.path().join("plans");
        let load = || {
            let (_, graph) = Package::open_streaming_graph(&out).expect("open");
            TractBackend::from_stream_with_cache(graph, 1, multiple, Some(&cache))
        };
        let first = load().expect("first load");
        if !name.contains("int8") {
            assert_eq!(first.plan_cache(), &PlanCache::Off, "{name}");
            assert!(!cache.exists(), "{name}: an fp32 plan was written");
            continue;
        }
        let Some(PlanCache::Written(file)) = Some(first.plan_cache().clone()) else {
            panic!("{name}: first load: {:?}", first.plan_cache());
        };
        let second = load().expect("second load");
        assert_eq!(
            second.plan_cache(),
            &PlanCache::Read(file.clone()),
            "{name}"
        );
        assert_eq!(second.rewrites(), reference.rewrites(), "{name}");
        assert_eq!(second.blocks(), reference.blocks(), "{name}");
        for op in [
            "AutoglmAttention",
            "AutoglmWindowAttention",
            "AutoglmLinearI8",
        ] {
            assert_eq!(second.op_count(op), reference.op_count(op), "{name}: {op}");
        }
        let mut rng = Lcg(0xcac4e ^ name.len() as u64);
        let texts = random_texts(&mut rng, 7, manifest.max_length, fixture::vocab_size());
        for b in batch::plan(&texts, 4, 0, multiple) {
            let want = reference.run(&b).expect("reference run");
            assert_eq!(first.run(&b).expect("first run"), want, "{name}");
            assert_eq!(second.run(&b).expect("cached run"), want, "{name}");
        }
        // Flipped bytes in every part of the file, a header length past its end, cut files:
        // each time the load takes the ONNX way and writes the plan again.
        let bytes = std::fs::read(&file).expect("cache file");
        let flip = |at: usize, bits: u8| {
            let mut b = bytes.clone();
            b[at] ^= bits;
            b
        };
        let mut huge_header = bytes.clone();
        huge_header[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let damages = [
            flip(bytes.len() / 2, 0x40),
            flip(0, 1),                // the magic
            flip(20, 0x20),            // the header
            flip(bytes.len() - 1, 1),  // the checksum
            flip(bytes.len() - 12, 1), // the archive's length
            huge_header,
            bytes[..bytes.len() / 3].to_vec(),
            bytes[..10].to_vec(),
            Vec::new(),
        ];
        for damaged in damages {
            std::fs::write(&file, damaged).expect("damage the cache");
            let again = load().expect("load past a damaged cache");
            assert_eq!(
                again.plan_cache(),
                &PlanCache::Written(file.clone()),
                "{name}"
            );
            assert_eq!(
                load().expect("reload").plan_cache(),
                &PlanCache::Read(file.clone())
            );
        }
        // A damaged graph file is refused even though its plan is cached.
        let graph_file = out.join(&manifest.graph.file);
        let mut graph = std::fs::read(&graph_file).expect("graph file");
        let at = graph.len() / 2;
        graph[at] ^= 1;
        std::fs::write(&graph_file, graph).expect("damage the graph");
        assert!(load().is_err(), "{name}: a damaged graph file was loaded");
    }
}

/// A package that must be signed (trusted keys) runs only what its signature covers: its plan
/// is neither read from nor written to the cache directory. Without keys the same package
/// goes through the cache.
#[test]
fn signed_loads_do_not_use_the_plan_cache() {
    use autoglm_package::signature::{generate_keypair, write_new_key_file};
    use autoglm_package::{SigningKey, TrustedKeys};
    use autoglm_runtime::{LoadOptions, Model};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = ExportOptions::new("unused");
    options.quantization = Quantization::Int8;
    let options = on_fixture(dir.path(), options);
    let mut package = export(&options).expect("export");
    let (public, secret) = generate_keypair(None).expect("keys");
    let (pk, sk) = (dir.path().join("k.pub"), dir.path().join("k.key"));
    write_new_key_file(&pk, &public, false).expect("public key");
    write_new_key_file(&sk, &secret, true).expect("secret key");
    package
        .sign(&SigningKey::from_file(&sk, None).expect("key"), "test")
        .expect("sign");
    let out = dir.path().join("signed");
    package.write(&out).expect("write");
    let signed = LoadOptions {
        trust: TrustedKeys::from_files(&[&pk]).expect("trusted keys"),
        ..LoadOptions::default()
    };
    for _ in 0..2 {
        let model = Model::load_with(&out, &signed).expect("signed load");
        let described = model.backend_description();
        assert!(!described.contains("plan"), "{described}");
    }
    let model = Model::load_with(&out, &LoadOptions::default()).expect("load");
    if autoglm_runtime::plan_cache::cache_dir().is_some() {
        assert!(model.backend_description().contains("plan"));
    }
}
