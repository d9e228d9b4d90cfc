"""Side-by-side latency of our runtime (tract) and ONNX Runtime on the same .onnx file.

Each configuration runs in fresh processes, ours (`autoglm bench --json`) and ORT's (this script
with --ort-worker), so that peak RSS is per engine and per configuration. Both feed the same
synthetic token ids (see `bench_ids` in crates/autoglm-runtime/src/batch.rs) of exactly SEQ tokens.
Prints a markdown table with medians, the ours/ORT ratio (< 1 means we are faster) and peak RSS.

  .cache/py-venv/bin/python tools/bench/peer_bench.py --autoglm BIN --model PKG [--seq 32,128,512]
      [--batch 1,32] [--threads 1,2] [--iters 10] [--ort-lib LIB]

With --ort-lib (BIN built with `--features ort`, LIB from tools/setup/fetch-onnxruntime.sh) a third
engine joins: our runtime on its ONNX Runtime backend, in process (`autoglm bench --backend ort`),
which tells our own overhead (tokenizer-free here, so batching and copies) from the engine's.

With --autoglm-b BIN2 a second build of ours joins every cell (e.g. the static musl binary
beside the glibc one): its median, and BIN2/BIN. With --rounds R, BIN (BIN2) and ONNX Runtime
alternate R times per cell, a fresh process each, and each column is the median of its R
process medians (so that slow drift of the machine, or processes that land in different
speeds, hit every engine alike).
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


def bench_ids(n):
    return [101 if i == 0 else 102 if i == n - 1 else 1000 + (i * 7919) % 20000 for i in range(n)]


def cpu_flags(wanted=("fma", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                      "asimddp", "i8mm")):
    """Which of `wanted` (by default the CPU features that decide our kernels and ONNX Runtime's)
    this CPU has, from /proc/cpuinfo (also used by int8_reference.py)."""
    try:
        with open("/proc/cpuinfo") as c:
            flags = next((line.split(":", 1)[1].split() for line in c if line.startswith(("flags", "Features"))), [])
    except OSError:
        return "unknown"
    return " ".join(f for f in wanted if f in flags) or "none of " + " ".join(wanted)


def ort_worker(args):
    import numpy as np
    import onnxruntime as ort

    manifest = json.load(open(os.path.join(args.model, "manifest.json")))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(os.path.join(args.model, manifest["graph"]["file"]), opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    ids = np.array([bench_ids(args.seq)] * args.batch, dtype=np.int64)
    feeds = dict(zip(manifest["graph"]["inputs"], [ids, np.ones_like(ids), np.zeros_like(ids)]))
    sess.run(None, feeds)
    times = []
    for _ in range(args.iters):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"engine": f"onnxruntime-{ort.__version__}", "median_ms": statistics.median(times), "min_ms": min(times),
                      "peak_rss_mb": rss, "load_ms": load_ms}))


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--autoglm", required=False)
    p.add_argument("--model", required=True)
    p.add_argument("--seq", default="32,128,512")
    p.add_argument("--batch", default="1,32")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--ort-lib", help="also run `autoglm bench --backend ort` with this libonnxruntime")
    p.add_argument("--autoglm-b", help="a second autoglm binary, measured in the same cells (column B, ratio B/ours)")
    p.add_argument("--label-b", default="B", help="column name of --autoglm-b")
    p.add_argument("--rounds", type=int, default=1, help="alternations of --autoglm and --autoglm-b per cell")
    p.add_argument("--ort-worker", action="store_true")
    args, _ = p.parse_known_args()
    if args.ort_worker:
        args.seq, args.batch, args.threads = int(args.seq), int(args.batch), int(args.threads)
        return ort_worker(args)
    manifest = json.load(open(os.path.join(args.model, "manifest.json")))
    print(f"model: {args.model} ({manifest['kind']}, {manifest['quantization']}, attention {manifest['attention']['type']}); "
          f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; flags: {cpu_flags()}; "
          f"iters {args.iters}, rounds {args.rounds}\n")
    ort_col = " ours (ort backend) ms |" if args.ort_lib else ""
    b_col = f" {args.label_b} ms | {args.label_b}/ours |" if args.autoglm_b else ""
    b_rss_col = f" {args.label_b} peak RSS MB |" if args.autoglm_b else ""
    print(f"| seq | batch | threads | ours (tract) ms |{b_col} ORT ms | ours/ORT |{ort_col} ours peak RSS MB |{b_rss_col} ORT peak RSS MB |")
    print("|---:|---:|---:|---:|" + ("---:|---:|" if args.autoglm_b else "") + "---:|---:|"
          + ("---:|" if args.ort_lib else "") + "---:|" + ("---:|" if args.autoglm_b else "") + "---:|")
    for seq in map(int, args.seq.split(",")):
        for batch in map(int, args.batch.split(",")):
            iters = args.iters if seq * batch < 4096 else max(3, args.iters // 3)
            for threads in map(int, args.threads.split(",")):
                def bench(binary):
                    return run_json([binary, "bench", "--model", args.model, "--seq", str(seq), "--batch", str(batch),
                                     "--threads", str(threads), "--iters", str(iters), "--json"])
                def ort():
                    return run_json([sys.executable, __file__, "--ort-worker", "--model", args.model, "--seq", str(seq),
                                     "--batch", str(batch), "--threads", str(threads), "--iters", str(iters)])
                # Every engine gets one fresh process per round, alternated: on machines whose
                # processes land in different speeds, each side then sees the same mix.
                runs_a, runs_b, runs_ort = [], [], []
                for _ in range(max(1, args.rounds)):
                    runs_a.append(bench(args.autoglm))
                    if args.autoglm_b:
                        runs_b.append(bench(args.autoglm_b))
                    runs_ort.append(ort())
                ours = dict(runs_a[0], median_ms=statistics.median(r["median_ms"] for r in runs_a),
                            peak_rss_mb=max(r["peak_rss_mb"] for r in runs_a))
                b_cell = b_rss = ""
                if args.autoglm_b:
                    b_ms = statistics.median(r["median_ms"] for r in runs_b)
                    b_cell = f" {b_ms:.2f} | {b_ms / ours['median_ms']:.3f} |"
                    b_rss = f" {max(r['peak_rss_mb'] for r in runs_b):.0f} |"
                peer = dict(runs_ort[0], median_ms=statistics.median(r["median_ms"] for r in runs_ort),
                            peak_rss_mb=max(r["peak_rss_mb"] for r in runs_ort))
                ratio = ours["median_ms"] / peer["median_ms"]
                ort_cell = ""
                if args.ort_lib:
                    ours_ort = run_json([args.autoglm, "bench", "--model", args.model, "--seq", str(seq), "--batch", str(batch),
                                         "--threads", str(threads), "--iters", str(iters), "--json",
                                         "--backend", "ort", "--ort-lib", args.ort_lib])
                    ort_cell = f" {ours_ort['median_ms']:.2f} |"
                print(f"| {seq} | {batch} | {threads} | {ours['median_ms']:.2f} |{b_cell} {peer['median_ms']:.2f} | {ratio:.2f} |{ort_cell} "
                      f"{ours['peak_rss_mb']:.0f} |{b_rss} {peer['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
