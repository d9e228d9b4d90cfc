//! Per-operator profile of a package's tract plan: where the time of one inference goes, by
//! operator kind, for symbolic (as loaded today) or concrete (batch, sequence) shapes.
//! BENCHMARKS.md ("Where the time goes") records its output.
//!
//! cargo run --release -p autoglm-runtime --example profile -- PKG [--seq 32,128,512]
//!     [--batch 1] [--iters 5] [--concrete] [--threads 1]

// The allocator the `autoglm` binary uses (crates/autoglm-cli/src/main.rs): glibc's malloc
// unmaps and re-faults the large activations of every run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use autoglm_package::Package;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tract_hir::prelude::*;

fn list(s: &str) -> Vec<usize> {
    s.split(',').map(|x| x.parse().expect("a number")).collect()
}

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let package = args
        .first()
        .expect("usage: profile PKG [--seq ..] [--batch ..] [--iters N] [--concrete]");
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let seqs = flag("--seq")
        .map(|s| list(&s))
        .unwrap_or(vec![32, 128, 512]);
    let batches = flag("--batch").map(|s| list(&s)).unwrap_or(vec![1]);
    let iters: usize = flag("--iters")
        .map(|s| s.parse().expect("iters"))
        .unwrap_or(5);
    // --batch-only: only the batch dim is made concrete (the sequence stays symbolic).
    let batch_only = args.iter().any(|a| a == "--batch-only");
    let concrete = batch_only || args.iter().any(|a| a == "--concrete");
    // --threads N: the runs go through an N-thread pool, as `autoglm --threads N` does.
    let threads: usize = flag("--threads")
        .map(|s| s.parse().expect("threads"))
        .unwrap_or(1);
    let executor = if threads > 1 {
        tract_linalg::multithread::Executor::multithread(threads)
    } else {
        tract_linalg::multithread::Executor::SingleThread
    };
    let top_nodes: Option<usize> = flag("--nodes").map(|s| s.parse().expect("nodes"));

    let pkg = Package::open(package)?;
    let onnx = pkg.file(&pkg.manifest().graph.file)?;
    let mut model = tract_onnx::onnx().model_for_read(&mut &onnx[..])?;
    let multiple = pkg.manifest().graph.sequence_multiple;
    autoglm_runtime::tract::state_whole_blocks(&mut model, multiple)?;
    let mut decluttered = model.into_typed()?.into_decluttered()?;
    if !args.iter().any(|a| a == "--plain") {
        // As the backend does when it builds the plan (`AUTOGLM_F32_LINEAR` chooses).
        let n = autoglm_runtime::ops::rewrite(&mut decluttered)?
            + autoglm_runtime::ops::fuse_after_cache(&mut decluttered)?;
        println!("our operators replaced {n} nodes (--plain: none)");
    }
    println!(
        "cpu: {:?}; {} plan",
        tract_linalg::isa::native(),
        if concrete { "concrete" } else { "symbolic" }
    );
    let symbolic = (!concrete)
        .then(|| decluttered.clone().into_optimized()?.into_runnable())
        .transpose()?;
    for &batch in &batches {
        for &seq in &seqs {
            let plan = match &symbolic {
                Some(plan) => plan.clone(),
                None => {
                    let mut values = SymbolValues::default();
                    for (name, v) in [
                        ("batch", batch),
                        ("sequence", seq),
                        ("blocks", seq / multiple.max(1)),
                    ] {
                        if name != "batch" && batch_only {
                            continue;
                        }
                        if let Some(s) = decluttered.symbols.get(name) {
                            values = values.with(&s, v as i64);
                        }
                    }
                    let t = Instant::now();
                    let plan = decluttered
                        .set_symbols(&values.to_dim_map())?
                        .into_optimized()?
                        .into_runnable()?;
                    println!("optimizing for batch {batch} x {seq}: {:?}", t.elapsed());
                    plan
                }
            };
            let tokens = autoglm_runtime::batch::bench_ids(seq).repeat(batch);
            let input = |v: Vec<i64>| -> TractResult<TValue> {
                Ok(Tensor::from_shape(&[batch, seq], &v)?.into_tvalue())
            };
            let inputs = || -> TractResult<TVec<TValue>> {
                Ok(tvec![
                    input(tokens.clone())?,
                    input(vec![1; batch * seq])?,
                    input(vec![0; batch * seq])?
                ])
            };
            let mut state = plan.spawn()?;
            let mut per_node = vec![Duration::ZERO; plan.model().nodes().len()];
            // As the backend runs one text (a pool's other workers kept awake).
            let started = autoglm_runtime::tract::run_on(&executor, || {
                state.run(inputs()?)?;
                let started = Instant::now();
                for _ in 0..iters {
                    state.run_plan_with_eval(
                        inputs()?,
                        |session, op_state, node, node_inputs| {
                            let t = Instant::now();
                            let out = tract_hir::tract_core::plan::eval(
                                session,
                                op_state,
                                node,
                                node_inputs,
                            );
                            per_node[node.id] += t.elapsed();
                            out
                        },
                    )?;
                }
                TractResult::Ok(started)
            })?;
            let nodes = plan.model().nodes().len();
            let total = started.elapsed() / iters as u32;
            let mut by_op: BTreeMap<String, (Duration, usize)> = BTreeMap::new();
            for (id, t) in per_node.iter().enumerate() {
                let entry = by_op
                    .entry(plan.model().node(id).op().name().to_string())
                    .or_default();
                entry.0 += *t / iters as u32;
                entry.1 += 1;
            }
            if let Some(n) = top_nodes {
                let mut ids: Vec<usize> = (0..nodes).collect();
                ids.sort_by(|a, b| per_node[*b].cmp(&per_node[*a]));
                for &id in ids.iter().take(n) {
                    let node = plan.model().node(id);
                    println!(
                        "{:8.3} ms  {} {}  -> {:?}",
                        (per_node[id] / iters as u32).as_secs_f64() * 1e3,
                        node.op().name(),
                        node.name,
                        node.outputs.first().map(|o| &o.fact)
                    );
                    if args.iter().any(|a| a == "--info") {
                        for line in node.op().info()? {
                            println!("            {line}");
                        }
                    }
                }
            }
            let mut rows: Vec<_> = by_op.into_iter().collect();
            rows.sort_by(|a, b| b.1 .0.cmp(&a.1 .0));
            println!("\nbatch {batch} x {seq} tokens: {total:.2?} per run ({iters} runs)");
            println!("| op | nodes | ms | share |\n|---|---:|---:|---:|");
            for (op, (t, n)) in rows.iter().filter(|r| !r.1 .0.is_zero()) {
                println!(
                    "| {op} | {n} | {:.2} | {:.1} % |",
                    t.as_secs_f64() * 1e3,
                    100.0 * t.as_secs_f64() / total.as_secs_f64()
                );
            }
        }
    }
    Ok(())
}
