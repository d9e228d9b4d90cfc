//! Tokenization throughput with the package's tokenizer: ours (src/wordpiece.rs, what the
//! runtime uses for a BERT WordPiece file) and the `tokenizers` crate on the same file; and
//! reading the file (part of every load).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod common;

fn tokenize(c: &mut Criterion) {
    let package = common::embedding_package();
    let json = package.file("tokenizer.json").unwrap();
    let engines = [
        (
            "ours",
            autoglm_runtime::TextEncoder::from_bytes(json, 256).unwrap(),
        ),
        (
            "tokenizers",
            autoglm_runtime::TextEncoder::with_tokenizers_crate(json, 256).unwrap(),
        ),
    ];
    assert!(engines[0].1.is_ours());
    let texts = common::texts();
    let bytes: usize = texts.iter().map(String::len).sum();
    let long = texts.join(" ");
    let mut group = c.benchmark_group("tokenize");
    for (name, encoder) in &engines {
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(format!("{name}/{}_reviews", texts.len()), |b| {
            b.iter(|| {
                for t in &texts {
                    std::hint::black_box(encoder.encode(t).unwrap());
                }
            })
        });
        group.throughput(Throughput::Bytes(long.len() as u64));
        group.bench_function(format!("{name}/one_long_text_truncated_to_256"), |b| {
            b.iter(|| std::hint::black_box(encoder.encode(&long).unwrap()))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("tokenizer_load");
    group.bench_function("ours", |b| {
        b.iter(|| autoglm_runtime::TextEncoder::from_bytes(json, 256).unwrap())
    });
    group.bench_function("tokenizers", |b| {
        b.iter(|| autoglm_runtime::TextEncoder::with_tokenizers_crate(json, 256).unwrap())
    });
    group.finish();
}

criterion_group!(benches, tokenize);
criterion_main!(benches);
