//! Our own operators' kernels on the shapes of all-MiniLM-L6-v2 at 128 tokens: dynamic
//! quantization of a `[128, 384]` and a `[128, 1536]` activation (the int8 graph runs 24 of
//! them per inference), the key-bias add of `[12, 128, 128]` attention scores, and the fused
//! attention of one layer (12 heads of 32) at 128 and 512 tokens, on one and two threads and on
//! every f32 tier this CPU has (one thread), and
//! the fused window attention (window 256, one global token) of one layer at 2048 tokens, and
//! the int8 linear layer's product (`[128, 384] × [384, 1536]` and `[128, 1536] × [1536, 384]`)
//! on every integer-kernel tier this CPU has, then on the chosen tier with the weights changing
//! from one call to the next (eight copies: cold caches, as in a model) and at 4,096 rows, and
//! the f32 linear layer (`AutoglmLinearF32`: `[m, 384] × [384, 1536]` + bias + GELU and
//! `[m, 1536] × [1536, 384]` + bias, m = 32, 128, 512) on one and two threads, and MiniLM-L6's
//! 36 linear layers one after the other, each with weights of its own (`f32_linear_model`: the
//! weights come from memory, as in a model), and the residual add with the LayerNorm after it
//! (`add_layer_norm`: two passes against `AutoglmAddLayerNorm`'s one, at 128 and 512 tokens).
//!
//! cargo bench -p autoglm-runtime --bench ops

use autoglm_runtime::ops::qgemm::{self, PackedI8, Tier};
use autoglm_runtime::ops::{
    add_key_bias, attention, fgemm, flinear, layernorm, quantize, softmax, window,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

fn activations(n: usize) -> Vec<f32> {
    autoglm_export::fixture::values(7, n)
        .into_iter()
        .map(|v| v * 6.0 - 0.4)
        .collect()
}

fn dynamic_quantize(c: &mut Criterion) {
    let mut group = c.benchmark_group("dynamic_quantize");
    for width in [384usize, 1536] {
        let xs = activations(128 * width);
        let mut ys = vec![0u8; xs.len()];
        group.throughput(Throughput::Elements(xs.len() as u64));
        group.bench_with_input(BenchmarkId::new("128x", width), &xs, |b, xs| {
            b.iter(|| {
                black_box(quantize::dynamic_quantize(black_box(xs), &mut ys));
            })
        });
    }
    group.finish();
}

fn key_bias(c: &mut Criterion) {
    let mut scores = activations(12 * 128 * 128);
    let bias = activations(128);
    c.bench_function("key_bias_add/12x128x128", |b| {
        b.iter(|| add_key_bias(black_box(&mut scores), black_box(&bias), 1))
    });
}

/// One query block's softmax rows (128 rows of 128 or 512 scores, as the attention's), on
/// every f32 tier; scores from 64-byte boundaries, as the attention's.
fn softmax_rows(c: &mut Criterion) {
    let mut group = c.benchmark_group("softmax_rows");
    for keys in [128usize, 512] {
        let scores = activations(128 * keys);
        let mut buf = vec![0f32; 128 * keys + 16];
        let skip = buf.as_ptr().align_offset(64);
        let rows = &mut buf[skip..skip + 128 * keys];
        group.throughput(Throughput::Elements(scores.len() as u64));
        for tier in fgemm::Tier::available() {
            group.bench_function(
                BenchmarkId::new(format!("128x/{}", tier.name()), keys),
                |b| {
                    b.iter(|| {
                        rows.copy_from_slice(&scores);
                        for row in rows.chunks_mut(keys) {
                            softmax::softmax_in_place(tier, row);
                        }
                    })
                },
            );
        }
    }
    group.finish();
}

fn fused_attention(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention");
    let two = tract_linalg::multithread::Executor::multithread(2);
    for seq in [128usize, 512] {
        let d = attention::Dims {
            batch: 1,
            seq,
            heads: 12,
            head_dim: 32,
        };
        let n = seq * 12 * 32;
        let (q, k, v) = (activations(n), activations(n + 1), activations(n + 2));
        let (k, v) = (&k[1..], &v[2..]);
        let bias = vec![0f32; seq];
        let mut out = vec![0f32; n];
        for (threads, executor) in [
            (1, tract_linalg::multithread::Executor::SingleThread),
            (2, two.clone()),
        ] {
            group.bench_function(BenchmarkId::new(format!("12x32/{threads}t"), seq), |b| {
                b.iter(|| {
                    attention::attention(d, 0.177, [&q, k, v], &bias, &mut out, &executor)
                        .expect("attention")
                })
            });
        }
        // Every f32 tier of the products, one thread.
        let single = tract_linalg::multithread::Executor::SingleThread;
        for tier in fgemm::Tier::available() {
            let id = BenchmarkId::new(format!("12x32/1t/{}", tier.name()), seq);
            group.bench_function(id, |b| {
                b.iter(|| {
                    attention::attention_on(tier, d, 0.177, [&q, k, v], &bias, &mut out, &single)
                        .expect("attention")
                })
            });
        }
    }
    group.finish();
}

/// The two products of one head's attention at 512 tokens, alone, on the chosen f32 tier: the
/// scores `[128, 32] × [32, 512]` (a query block against every key: depth 32) and the context
/// `[128, 512] × [512, 32]` (depth 512), the same multiply-adds, the queries strided as in the
/// `[seq, heads, head_dim]` layout.
fn attention_products(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention_products");
    let tier = fgemm::Tier::chosen();
    let (rows, dim, keys, stride) = (128usize, 32usize, 512usize, 384usize);
    let queries = activations(rows * stride);
    let key_values = activations(keys * stride + 1);
    let mut packed_keys = fgemm::Packed::default();
    packed_keys
        .pack(tier, &key_values, (dim, keys), (1, stride))
        .expect("packs");
    let mut packed_values = fgemm::Packed::default();
    packed_values
        .pack(tier, &key_values, (keys, dim), (stride, 1))
        .expect("packs");
    let bias = vec![0f32; keys];
    let probabilities = activations(rows * keys);
    let mut scores = vec![0f32; rows * keys];
    let mut context = vec![0f32; rows * dim];
    group.throughput(Throughput::Elements((rows * dim * keys) as u64));
    group.bench_function(format!("{}/scores/{rows}x{dim}x{keys}", tier.name()), |b| {
        b.iter(|| {
            let a = fgemm::Strided {
                data: black_box(&queries),
                row: stride,
            };
            let store = fgemm::Store::AddRow(&bias);
            let b = packed_keys.rows(0..dim);
            fgemm::gemm(tier, rows, 0.177, a, b, store, &mut scores, keys).expect("product")
        })
    });
    group.bench_function(
        format!("{}/context/{rows}x{keys}x{dim}", tier.name()),
        |b| {
            b.iter(|| {
                let a = fgemm::Strided {
                    data: black_box(&probabilities),
                    row: keys,
                };
                let store = fgemm::Store::Overwrite;
                let b = packed_values.rows(0..keys);
                fgemm::gemm(tier, rows, 1.0, a, b, store, &mut context, dim).expect("product")
            })
        },
    );
    group.finish();
}

fn window_attention(c: &mut Criterion) {
    let mut group = c.benchmark_group("window_attention");
    let two = tract_linalg::multithread::Executor::multithread(2);
    let d = window::WindowDims {
        batch: 1,
        heads: 12,
        blocks: 16,
        block: 128,
        head_dim: 32,
        global: 1,
        token_major: false,
        token_major_out: false,
    };
    let n = 16 * 128 * 12 * 32;
    let (q, k, v) = (activations(n), activations(n + 1), activations(n + 2));
    let (k, v) = (&k[1..], &v[2..]);
    // The band of window 256 (radius 128 around each query); out-of-range blocks and the
    // global token (attended through its own column) masked.
    let band: Vec<f32> = (0..16 * 128 * 384)
        .map(|i| {
            let (c, r, j) = (i / (128 * 384), i / 384 % 128, i % 384);
            let in_range = (c > 0 || j > 128) && (c < 15 || j < 256);
            let near = (j as i64 - 128 - r as i64).abs() <= 128;
            if in_range && near {
                0.0
            } else {
                -1e9
            }
        })
        .collect();
    // The global query (token 0) attends to every key.
    let keys = vec![0f32; 2048];
    let mut out = vec![0f32; n];
    // Last, Q, K, V and the context in the linear layers' `[batch, seq, heads, head_dim]`
    // layout, as the fused graphs run it (`window::fuse_token_major`, `fuse_token_major_out`).
    let token_major = window::WindowDims {
        token_major: true,
        token_major_out: true,
        ..d
    };
    let single = tract_linalg::multithread::Executor::SingleThread;
    for (name, dims, executor) in [
        ("12x32/1t", d, single.clone()),
        ("12x32/2t", d, two),
        ("12x32/token-major/1t", token_major, single),
    ] {
        group.bench_function(BenchmarkId::new(name, 2048), |b| {
            b.iter(|| {
                let biases = window::Biases {
                    band: &band,
                    global: &[0.0],
                    keys: Some(&keys),
                };
                window::window_attention(dims, 0.177, [&q, k, v], biases, &mut out, &executor)
                    .expect("window attention")
            })
        });
    }
    group.finish();
}

fn int8_linear(c: &mut Criterion) {
    let mut group = c.benchmark_group("int8_linear");
    let rows = 128;
    for (k, n) in [(384usize, 1536usize), (1536, 384)] {
        let a: Vec<u8> = activations(rows * k)
            .iter()
            .map(|v| (v * 40.0 + 128.0).clamp(0.0, 255.0) as u8)
            .collect();
        let w: Vec<i8> = activations(k * n)
            .iter()
            .map(|v| (v * 20.0).clamp(-63.0, 63.0) as i8)
            .collect();
        let scale = vec![1e-3f32; n];
        let bias = activations(n);
        let on = |executor: &tract_linalg::multithread::Executor,
                  a: &[u8],
                  w: &PackedI8,
                  out: &mut [f32]| {
            qgemm::qgemm(
                black_box(a),
                a.len() / k,
                3,
                w,
                &scale,
                Some(&bias),
                out,
                executor,
            )
            .expect("product")
        };
        let product = |a: &[u8], w: &PackedI8, out: &mut [f32]| {
            on(
                &tract_linalg::multithread::Executor::SingleThread,
                a,
                w,
                out,
            )
        };
        let mut out = vec![0f32; rows * n];
        group.throughput(Throughput::Elements((rows * k * n) as u64));
        for tier in Tier::available() {
            let packed = PackedI8::new(&w, k, n, tier).expect("packs");
            let name = format!("{}/{rows}x{k}x{n}", tier.name());
            group.bench_function(name, |b| b.iter(|| product(&a, &packed, &mut out)));
        }
        // As in a model: each call on other weights (eight copies, 4.7 MB packed, more than a
        // core's second-level cache), so that the weights come from further away each time.
        let tier = Tier::chosen();
        let layers: Vec<PackedI8> = (0..8)
            .map(|_| PackedI8::new(&w, k, n, tier).expect("packs"))
            .collect();
        let mut next = 0;
        group.bench_function(format!("{}/{rows}x{k}x{n}/8-weights", tier.name()), |b| {
            b.iter(|| {
                next = (next + 1) % layers.len();
                product(&a, &layers[next], &mut out)
            })
        });
        // The same on two threads (each call wakes the pool: a model's run keeps it awake).
        let two = tract_linalg::multithread::Executor::multithread(2);
        group.bench_function(format!("{}/2t/{rows}x{k}x{n}", tier.name()), |b| {
            b.iter(|| on(&two, &a, &layers[0], &mut out))
        });
        // A long document's rows (4,096 tokens), which go in blocks ([`qgemm::LONG_ROWS`]).
        let long = 4096;
        let a_long: Vec<u8> = a.iter().copied().cycle().take(long * k).collect();
        let mut out_long = vec![0f32; long * n];
        group.throughput(Throughput::Elements((long * k * n) as u64));
        group.sample_size(10);
        group.bench_function(format!("{}/{long}x{k}x{n}", tier.name()), |b| {
            b.iter(|| product(&a_long, &layers[0], &mut out_long))
        });
        group.sample_size(100);
    }
    group.finish();
}

/// An f32 linear layer `[k, n]` (+ bias, + GELU if `gelu`) with `weights` packed for `tier`.
fn linear_op(
    tier: fgemm::Tier,
    (k, n): (usize, usize),
    gelu: bool,
    weights: &[f32],
) -> flinear::LinearF32 {
    let mut packed = fgemm::Packed::default();
    packed.pack(tier, weights, (k, n), (n, 1)).expect("packs");
    flinear::LinearF32 {
        weights: std::sync::Arc::new(packed),
        tier,
        k,
        n,
        axes: 1,
        bias: Some(std::sync::Arc::new(activations(n))),
        gelu,
    }
}

/// The residual add and the LayerNorm after it at 128 and 512 tokens (`[m, 384]`): as two
/// passes (the add, then the norm: the plan before `AutoglmAddLayerNorm`) and fused, on one
/// thread and two (a pool whose workers sleep between calls, where the backend's runs keep
/// them awake).
fn add_layer_norm(c: &mut Criterion) {
    let mut group = c.benchmark_group("add_layer_norm");
    let two = tract_linalg::multithread::Executor::multithread(2);
    let single = tract_linalg::multithread::Executor::SingleThread;
    let width = 384;
    let ln = layernorm::LayerNorm {
        recip: 1.0 / width as f32,
        eps: 1e-12,
        gamma: std::sync::Arc::new(activations(width)),
        beta: std::sync::Arc::new(activations(width + 1)[1..].to_vec()),
    };
    for rows in [128usize, 512] {
        let (a, residual) = (activations(rows * width), activations(rows * width + 3));
        let residual = &residual[3..];
        let mut xs = a.clone();
        group.throughput(Throughput::Elements((rows * width) as u64));
        group.bench_function(BenchmarkId::new("two_passes/1t", rows), |b| {
            b.iter(|| {
                xs.copy_from_slice(&a);
                for (x, r) in xs.iter_mut().zip(residual) {
                    *x += *r;
                }
                layernorm::layer_norm(black_box(&mut xs), &ln).expect("norm")
            })
        });
        for (threads, executor) in [(1, &single), (2, &two)] {
            let id = BenchmarkId::new(format!("fused/{threads}t"), rows);
            group.bench_function(id, |b| {
                b.iter(|| {
                    xs.copy_from_slice(&a);
                    layernorm::add_layer_norm_on(black_box(&mut xs), Some(residual), &ln, executor)
                        .expect("norm")
                })
            });
        }
    }
    group.finish();
}

fn f32_linear(c: &mut Criterion) {
    let mut group = c.benchmark_group("f32_linear");
    group.sample_size(20);
    let two = tract_linalg::multithread::Executor::multithread(2);
    let tier = fgemm::Tier::chosen();
    // The feed-forward's two products at text lengths, and the attention's projections at a
    // long document's 4,096 rows (several blocks of rows, `fgemm::TILES`).
    for (k, n, gelu, all_rows) in [
        (384usize, 1536usize, true, &[32usize, 128, 512][..]),
        (1536, 384, false, &[32, 128, 512]),
        (384, 384, false, &[4096]),
    ] {
        let op = linear_op(tier, (k, n), gelu, &activations(k * n));
        for &rows in all_rows {
            let x = activations(rows * k);
            let mut out = vec![0f32; rows * n];
            group.throughput(Throughput::Elements((rows * k * n) as u64));
            for (threads, executor) in [
                (1, tract_linalg::multithread::Executor::SingleThread),
                (2, two.clone()),
            ] {
                let id = format!("{}/{threads}t/{rows}x{k}x{n}", tier.name());
                group.bench_function(id, |b| {
                    b.iter(|| {
                        flinear::linear(&op, black_box(&x), &mut out, &executor).expect("product")
                    })
                });
            }
        }
    }
    group.finish();
}

/// The 36 linear layers of MiniLM-L6 (per layer: four `384 × 384`, `384 × 1536` + GELU,
/// `1536 × 384`), each with weights of its own (42.5 MB in all, as in the model: they come from
/// memory, not from the core's caches), one after the other on one thread; one iteration is
/// one forward pass's products at `m` rows (multiply-adds per second as throughput).
fn f32_linear_model(c: &mut Criterion) {
    let mut group = c.benchmark_group("f32_linear_model");
    group.sample_size(20);
    let tier = fgemm::Tier::chosen();
    let shapes = [
        (384usize, 384usize, false),
        (384, 384, false),
        (384, 384, false),
        (384, 384, false),
        (384, 1536, true),
        (1536, 384, false),
    ];
    let layers: Vec<flinear::LinearF32> = (0..6)
        .flat_map(|_| shapes)
        .enumerate()
        // Layer `i`'s weights: the fixture's values from the `i`-th on (each layer its own).
        .map(|(i, (k, n, gelu))| linear_op(tier, (k, n), gelu, &activations(k * n + i)[i..]))
        .collect();
    let macs: usize = layers.iter().map(|l| l.k * l.n).sum();
    for rows in [32usize, 128] {
        let x = activations(rows * 1536);
        let mut out = vec![0f32; rows * 1536];
        group.throughput(Throughput::Elements((rows * macs) as u64));
        group.bench_function(format!("{}/1t/{rows}", tier.name()), |b| {
            b.iter(|| {
                for op in &layers {
                    let (input, output) = (&x[..rows * op.k], &mut out[..rows * op.n]);
                    flinear::linear(
                        op,
                        black_box(input),
                        output,
                        &tract_linalg::multithread::Executor::SingleThread,
                    )
                    .expect("product")
                }
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    f32_linear,
    f32_linear_model,
    int8_linear,
    dynamic_quantize,
    key_bias,
    add_layer_norm,
    softmax_rows,
    fused_attention,
    attention_products,
    window_attention
);
criterion_main!(benches);
