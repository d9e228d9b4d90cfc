//! Tokenization throughput with the package's tokenizer (WordPiece, pure-Rust regex).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod common;

fn tokenize(c: &mut Criterion) {
    let package = common::embedding_package();
    let encoder =
        autoglm_runtime::TextEncoder::from_bytes(package.file("tokenizer.json").unwrap(), 256)
            .unwrap();
    let texts = common::texts();
    let bytes: usize = texts.iter().map(String::len).sum();
    let mut group = c.benchmark_group("tokenize");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(format!("{}_reviews", texts.len()), |b| {
        b.iter(|| {
            for t in &texts {
                std::hint::black_box(encoder.encode(t).unwrap());
            }
        })
    });
    let long = texts.join(" ");
    group.throughput(Throughput::Bytes(long.len() as u64));
    group.bench_function("one_long_text_truncated_to_256", |b| {
        b.iter(|| std::hint::black_box(encoder.encode(&long).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, tokenize);
criterion_main!(benches);
