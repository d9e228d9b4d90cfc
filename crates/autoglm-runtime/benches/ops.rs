//! Our own operators' kernels on the shapes of all-MiniLM-L6-v2 at 128 tokens: dynamic
//! quantization of a `[128, 384]` and a `[128, 1536]` activation (the int8 graph runs 24 of
//! them per inference), and the key-bias add of `[12, 128, 128]` attention scores.
//!
//! cargo bench -p autoglm-runtime --bench ops

use autoglm_runtime::ops::{add_key_bias, quantize};
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

criterion_group!(benches, dynamic_quantize, key_bias);
criterion_main!(benches);
