//! Load time of all-MiniLM-L6-v2 (`--max-length 512`) on tract: package open to a runnable
//! plan, one thread, from the ONNX graph (fp32 and int8) and from the plan cache (int8: fp32
//! plans are not cached, src/plan_cache.rs). ONNX Runtime's session creation on the same file
//! is in `tools/bench/load_rounds.sh`.

use autoglm_export::{export_to, ExportOptions};
use autoglm_runtime::{Package, PlanCache, Quantization, TractBackend};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::path::Path;

mod common;

fn load(package: &Path, cache: Option<&Path>) -> TractBackend {
    let (package, graph) = Package::open_streaming_graph(package).expect("open");
    let multiple = package.manifest().graph.sequence_multiple;
    TractBackend::from_stream_with_cache(graph, 1, multiple, cache).expect("load")
}

fn loads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("plans");
    let mut group = c.benchmark_group("minilm_load");
    group.sample_size(10);
    for (name, quantization) in [("fp32", Quantization::None), ("int8", Quantization::Int8)] {
        let mut options = ExportOptions::new(common::assets().join("minilm"));
        options.max_length = Some(512);
        options.quantization = quantization;
        let package = dir.path().join(name);
        export_to(&options, &package).expect("export");
        group.bench_with_input(BenchmarkId::new("onnx", name), &package, |b, p| {
            b.iter(|| std::hint::black_box(load(p, None)))
        });
        if quantization == Quantization::None {
            continue;
        }
        // The first load writes the plan; the bench then reads it.
        assert!(matches!(
            load(&package, Some(&cache)).plan_cache(),
            PlanCache::Written(_)
        ));
        group.bench_with_input(BenchmarkId::new("plan_cache", name), &package, |b, p| {
            b.iter(|| {
                let backend = load(p, Some(&cache));
                assert!(matches!(backend.plan_cache(), PlanCache::Read(_)));
                std::hint::black_box(backend)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, loads);
criterion_main!(benches);
