//! `autoglm bench`: inference latency on synthetic inputs of exact token lengths.

use crate::model::{bounded, parse_batch, ModelArgs};
use anyhow::{bail, Result};
use autoglm_runtime::Encoded;
use clap::Args;
use serde_json::json;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Token lengths to measure (special tokens included).
    #[arg(long, value_delimiter = ',', default_value = "32,128,512")]
    seq: Vec<usize>,
    /// Batch sizes to measure (each 1 to 1024).
    #[arg(long, value_delimiter = ',', default_value = "1,32", value_parser = parse_batch)]
    batch: Vec<usize>,
    /// Timed runs per configuration (after one warm-up run; 1 to 1000000).
    #[arg(long, default_value_t = 10, value_parser = parse_iters)]
    iters: usize,
    #[arg(long)]
    json: bool,
}

/// `bench --iters`: each timing is kept, so the count is bounded.
fn parse_iters(s: &str) -> Result<usize, String> {
    bounded(s, MAX_BENCH_ITERS, "iterations")
}

const MAX_BENCH_ITERS: usize = 1_000_000;

pub fn run(a: BenchArgs) -> Result<()> {
    let load_start = Instant::now();
    let model = a.model.load()?;
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let engine = format!("autoglm-{}", model.backend_name());
    let backend = model.backend_description();
    if !a.json {
        println!("backend: {backend} (loaded in {load_ms:.0} ms)");
    }
    for &seq in &a.seq {
        if seq < 2 || seq > model.manifest().max_length {
            bail!(
                "--seq {seq}: this package takes 2 to {} tokens",
                model.manifest().max_length
            );
        }
        for &batch in &a.batch {
            let ids = autoglm_runtime::batch::bench_ids(seq);
            let inputs: Vec<Encoded> = (0..batch)
                .map(|_| Encoded {
                    ids: ids.clone(),
                    type_ids: vec![0; seq],
                })
                .collect();
            model.outputs_for(&inputs)?;
            let mut times = Vec::with_capacity(a.iters);
            for _ in 0..a.iters.max(1) {
                let t = Instant::now();
                std::hint::black_box(model.outputs_for(&inputs)?);
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            let rss = peak_rss_mb();
            if a.json {
                println!(
                    "{}",
                    json!({"engine": engine, "backend": backend, "seq": seq, "batch": batch, "threads": a.model.threads,
                           "median_ms": median, "min_ms": times[0], "iters": times.len(), "peak_rss_mb": rss, "load_ms": load_ms})
                );
            } else {
                println!("seq {seq:>5}  batch {batch:>3}  threads {}  median {median:>9.2} ms  min {:>9.2} ms  peak RSS {rss:.0} MB", a.model.threads, times[0]);
            }
        }
    }
    Ok(())
}

/// Peak resident set size of this process in MB (Linux `VmHWM`), 0 where unknown.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
