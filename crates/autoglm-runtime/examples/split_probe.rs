//! One thread against two on the f32 linear layers of MiniLM (`[m, 384] × [384, 384]`,
//! `× [384, 1536]` + GELU, `[m, 1536] × [1536, 384]`; m = 32, 128, 512), alternated call by
//! call in one process (this machine's cores slow down and speed up from one moment to the
//! next: criterion's runs of one variant after the other compare moments, not variants).
//! The two threads run as the backend runs one text (`tract::run_on`: workers kept awake).
//!
//! cargo run --release -p autoglm-runtime --example split_probe
use autoglm_runtime::ops::{fgemm, flinear};
use std::time::Instant;

fn main() {
    let tier = fgemm::Tier::chosen();
    let values = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1000) as f32) / 1000.0 - 0.5)
            .collect()
    };
    let pool = tract_linalg::multithread::Executor::multithread(2);
    let single = tract_linalg::multithread::Executor::SingleThread;
    println!("tier {}; median (least) µs per call", tier.name());
    for (k, n, gelu) in [
        (384usize, 384usize, false),
        (384, 1536, true),
        (1536, 384, false),
    ] {
        let mut w = fgemm::Packed::default();
        w.pack(tier, &values(k * n), (k, n), (n, 1)).expect("packs");
        let op = flinear::LinearF32 {
            weights: std::sync::Arc::new(w),
            tier,
            k,
            n,
            axes: 1,
            bias: Some(std::sync::Arc::new(values(n))),
            gelu,
        };
        for rows in [32usize, 128, 512] {
            let x = values(rows * k);
            let mut out = vec![0f32; rows * n];
            let reps = (1_000_000_000 / (rows * k * n)).max(5);
            let (mut one, mut two) = (Vec::new(), Vec::new());
            autoglm_runtime::tract::run_on(&pool, || {
                for _ in 0..reps {
                    for (executor, times) in [(&single, &mut one), (&pool, &mut two)] {
                        let t = Instant::now();
                        flinear::linear(&op, &x, &mut out, executor).expect("product");
                        times.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                }
            });
            for t in [&mut one, &mut two] {
                t.sort_by(f64::total_cmp);
            }
            let (m1, m2) = (one[one.len() / 2], two[two.len() / 2]);
            println!(
                "{rows}x{k}x{n}: one thread {m1:.0} ({:.0}), two {m2:.0} ({:.0}): {:.2}x by median",
                one[0],
                two[0],
                m1 / m2
            );
        }
    }
}
