//! Inference latency of all-MiniLM-L6-v2 on tract at 32/128/512 tokens, batch 1 and 8, one
//! thread; and batches of 32 short texts with and without blocks of rows
//! (`AUTOGLM_BLOCK_TOKENS`). The package is exported with `--max-length 512`
//! (sentence-transformers' default is 256). The side-by-side comparison with ONNX Runtime is
//! `tools/bench/peer_bench.py`.

use autoglm_export::{export, ExportOptions};
use autoglm_runtime::{Encoded, LoadOptions, Model};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

mod common;

fn ids(len: usize) -> Encoded {
    let ids = (0..len)
        .map(|i| {
            if i == 0 {
                101
            } else if i + 1 == len {
                102
            } else {
                1000 + (i as i64 * 7919) % 20000
            }
        })
        .collect();
    Encoded {
        ids,
        type_ids: vec![0; len],
    }
}

fn inference(c: &mut Criterion) {
    let options = LoadOptions {
        threads: 1,
        max_batch: 32,
        ..LoadOptions::default()
    };
    let mut long = ExportOptions::new(common::assets().join("minilm"));
    long.max_length = Some(512);
    let model = Model::from_package(export(&long).expect("export"), &options).unwrap();
    let mut group = c.benchmark_group("minilm_tract_1thread");
    group.sample_size(10);
    for seq in [32, 128, 512] {
        for batch in [1, 8] {
            let inputs: Vec<Encoded> = (0..batch).map(|_| ids(seq)).collect();
            group.bench_with_input(
                BenchmarkId::new(format!("batch{batch}"), seq),
                &inputs,
                |b, inputs| b.iter(|| std::hint::black_box(model.outputs_for(inputs).unwrap())),
            );
        }
    }
    group.finish();

    // Blocks of short rows (the default) against every row alone on a batch-1 plan.
    std::env::set_var("AUTOGLM_BLOCK_TOKENS", "0");
    let alone = Model::from_package(export(&long).expect("export"), &options).unwrap();
    std::env::remove_var("AUTOGLM_BLOCK_TOKENS");
    let mut group = c.benchmark_group("minilm_tract_1thread_batch32");
    group.sample_size(10);
    for seq in [32, 64] {
        let inputs: Vec<Encoded> = (0..32).map(|_| ids(seq)).collect();
        for (name, model) in [("blocks", &model), ("rows_alone", &alone)] {
            group.bench_with_input(BenchmarkId::new(name, seq), &inputs, |b, inputs| {
                b.iter(|| std::hint::black_box(model.outputs_for(inputs).unwrap()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, inference);
criterion_main!(benches);
