//! The component against the native runtime, in one process, on the same package and texts:
//! start-up (compile, `.cwasm` load, instantiate + package load) and latency at exact token
//! lengths, with the wasm/native ratio. BENCHMARKS.md records its output.
//!
//! cargo run --release -p autoglm-wasm --example wasm_vs_native -- COMPONENT PACKAGE [ITERS]
//! [--deadlines]
//!
//! `--deadlines` compiles the epoch checks in (`HostOptions::deadlines`), to measure their cost.

use autoglm_runtime::Model;
use autoglm_wasm::{Host, HostOptions, Limits, WasmModel};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (flags, args): (Vec<String>, Vec<String>) =
        std::env::args().skip(1).partition(|a| a.starts_with("--"));
    let deadlines = match flags.as_slice() {
        [] => false,
        [f] if f == "--deadlines" => true,
        _ => {
            eprintln!("unknown flags {flags:?}: only --deadlines");
            std::process::exit(2);
        }
    };
    let (Some(component), Some(package)) = (args.first(), args.get(1)) else {
        eprintln!("usage: wasm_vs_native COMPONENT PACKAGE [ITERS] [--deadlines]");
        std::process::exit(2);
    };
    let iters: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let (component, package) = (PathBuf::from(component), PathBuf::from(package));
    let bytes = if package.is_dir() {
        autoglm_package::Package::open(&package)?.to_tar()
    } else {
        std::fs::read(&package)?
    };

    let cache = tempfile::tempdir()?;
    let options = HostOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        deadlines,
        ..HostOptions::default()
    };
    let t = Instant::now();
    drop(Host::new(&component, &options)?);
    let compile = t.elapsed();
    let t = Instant::now();
    let host = Host::new(&component, &options)?;
    let cached = t.elapsed();
    let t = Instant::now();
    let mut wasm = WasmModel::load(&host, bytes.clone(), Limits::default())?;
    let instantiate_load = t.elapsed();
    let t = Instant::now();
    wasm.classify(&["warm-up"])?;
    let first_call = t.elapsed();

    let t = Instant::now();
    let native = Model::load(&package)?;
    let native_load = t.elapsed();
    println!(
        "component {:.1} MB, package {:.1} MB",
        std::fs::metadata(&component)?.len() as f64 / 1e6,
        bytes.len() as f64 / 1e6
    );
    println!(
        "epoch checks (deadlines)        {:>9}",
        if deadlines { "on" } else { "off" }
    );
    println!("compile (Cranelift, no cache)   {:>9.1} ms", ms(compile));
    println!("start from cached .cwasm        {:>9.1} ms", ms(cached));
    println!(
        "instantiate + load package      {:>9.1} ms (native load {:.1} ms)",
        ms(instantiate_load),
        ms(native_load)
    );
    println!("first call                      {:>9.1} ms", ms(first_call));
    println!(
        "cold start with cache           {:>9.1} ms (cached + load + first call)",
        ms(cached + instantiate_load + first_call)
    );

    println!("\n| tokens | batch | native ms | wasm ms | wasm/native |");
    println!("|---:|---:|---:|---:|---:|");
    for tokens in [32usize, 128] {
        // "hello" is one word piece: [CLS] + (tokens - 2) x hello + [SEP].
        let text = vec!["hello"; tokens - 2].join(" ");
        assert_eq!(native.encoder().encode(&text)?.len(), tokens);
        let texts = [text.as_str()];
        let expected = native.outputs(&texts)?;
        let got = wasm.outputs(&texts)?;
        let diff = expected[0]
            .iter()
            .zip(&got[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        eprintln!("{tokens} tokens: max |wasm - native| = {diff:.1e}");
        let (mut n, mut w) = (Vec::new(), Vec::new());
        for _ in 0..iters {
            let t = Instant::now();
            std::hint::black_box(native.outputs(&texts)?);
            n.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(wasm.outputs(&texts)?);
            w.push(t.elapsed());
        }
        let (n, w) = (median(n), median(w));
        println!(
            "| {tokens} | 1 | {:.2} | {:.2} | {:.2} |",
            ms(n),
            ms(w),
            w.as_secs_f64() / n.as_secs_f64()
        );
    }
    Ok(())
}
