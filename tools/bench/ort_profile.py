#!/usr/bin/env python3
"""ONNX Runtime's per-operator profile of a package's graph (one thread, batch 1): the peer's
side of `examples/profile`'s table, to see where the two engines differ.

usage: .cache/py-venv/bin/python tools/bench/ort_profile.py PKG [--seq 128,512] [--runs 5]
"""
import argparse
import collections
import json
import os

import numpy as np
import onnxruntime as ort


def main():
    p = argparse.ArgumentParser()
    p.add_argument("package")
    p.add_argument("--seq", default="128,512")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    manifest = json.load(open(os.path.join(args.package, "manifest.json")))
    model = os.path.join(args.package, manifest["graph"]["file"])
    for seq in [int(s) for s in args.seq.split(",")]:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.enable_profiling = True
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        ids = np.random.RandomState(0).randint(1000, 20000, (1, seq)).astype(np.int64)
        arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        feeds = {i.name: arrays[i.name] for i in sess.get_inputs()}
        sess.run(None, feeds)  # warm-up, not counted below
        warm = sess.end_profiling()
        os.unlink(warm)
        opts.profile_file_prefix = "ort_profile"
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        for _ in range(args.runs + 1):
            sess.run(None, feeds)
        path = sess.end_profiling()
        events = json.load(open(path))
        os.unlink(path)
        per_op = collections.Counter()
        runs = sum(1 for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                per_op[e["args"]["op_name"]] += e["dur"]
        total = sum(per_op.values())
        print(f"\nONNX Runtime {ort.__version__}, batch 1 x {seq} tokens, 1 thread: "
              f"{total / runs / 1000:.2f} ms of kernels per run ({runs} runs)")
        print("| op | ms | share |\n|---|---:|---:|")
        for op, us in per_op.most_common():
            if us / total >= 0.005:
                print(f"| {op} | {us / runs / 1000:.2f} | {100 * us / total:.1f} % |")


if __name__ == "__main__":
    main()
