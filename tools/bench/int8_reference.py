#!/usr/bin/env python3
"""How far each engine's int8 answers are from an exact evaluation of the same int8 graph.

int8 engines disagree (ONNX Runtime's int8 MatMul on a CPU without VNNI can be off by ~0.1), so
none of them is the reference. The reference here is the ONNX project's own evaluator
(`onnx.reference.ReferenceEvaluator`, numpy): DynamicQuantizeLinear by the spec (round half to
even), MatMulInteger in exact integer arithmetic, every float op in float32 numpy. Against it, on
the token ids of the transformers goldens (tests/goldens/goldens.json, one text at a time):
  - tract: tract's own plan of the ONNX graph, no operator of ours;
  - ours: our patched plan (fused int8 linear layers on each integer-kernel tier given);
  - ONNX Runtime 1.32 on the same model.onnx.
Prints max |Δ| and mean |Δ| of the graph output per engine, how many texts it answers exactly as
the reference does, its distance to transformers' fp32 embeddings (the goldens), and the integer
tier each ran. The float parts (attention, GELU, LayerNorm) round differently in every engine;
where such a difference moves a value across a quantization step, the next layer's integer
product sees a different input, so a float-level difference can grow to a quantization step.

usage: tools/bench/int8_reference.py PKG [--tiers vnni,avx2,scalar] [--max-tokens 64]
       (the example binary: cargo build --release -p autoglm-runtime --example int8_outputs)

Needs `onnx` besides onnxruntime and numpy: installed into .cache/onnx-venv on first use.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from peer_bench import cpu_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.path.join(ROOT, ".cache", "onnx-venv")


def reexec_in_venv():
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    probe = [python, "-c", "import onnx, onnxruntime, numpy"]
    if not os.path.exists(python) or subprocess.run(probe, capture_output=True).returncode != 0:
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "onnx==1.23.2", "onnxruntime==1.32.0", "numpy<3"], check=True)
    os.execv(python, [python] + sys.argv)


def main():
    reexec_in_venv()
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    p = argparse.ArgumentParser()
    p.add_argument("package")
    p.add_argument("--tiers", default="", help="integer kernels to run ours on (AUTOGLM_INT8_KERNEL); default: the best")
    p.add_argument("--max-tokens", type=int, default=64, help="skip longer goldens (the reference is slow)")
    p.add_argument("--example", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/autoglm-edge/target")),
                                                     "release", "examples", "int8_outputs"))
    args = p.parse_args()

    manifest = json.load(open(os.path.join(args.package, "manifest.json")))
    model_path = os.path.join(args.package, manifest["graph"]["file"])
    goldens = json.load(open(os.path.join(ROOT, "tests", "goldens", "goldens.json")))
    chosen = [t for t in goldens["texts"] if 0 < len(t["input_ids"]) <= args.max_tokens]
    texts = [t["input_ids"] for t in chosen]
    fp32 = [np.asarray(t["embedding"], dtype=np.float64) for t in chosen]

    def feeds(names, ids):
        arrays = {"input_ids": np.array([ids], dtype=np.int64),
                  "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
                  "token_type_ids": np.zeros((1, len(ids)), dtype=np.int64)}
        return {n: arrays[n] for n in names}

    model = onnx.load(model_path)
    names = [i.name for i in model.graph.input]
    reference = ReferenceEvaluator(model)
    expected = [np.asarray(reference.run(None, feeds(names, ids))[0], dtype=np.float64).ravel() for ids in texts]

    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    results = {f"onnxruntime {ort.__version__}": [np.asarray(sess.run(None, feeds(names, ids))[0]).ravel() for ids in texts]}

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(texts, f)
    for tier in (args.tiers.split(",") if args.tiers else [""]):
        env = dict(os.environ)
        if tier:
            env["AUTOGLM_INT8_KERNEL"] = tier
        out = json.loads(subprocess.run([args.example, args.package, f.name], env=env, check=True,
                                        capture_output=True, text=True).stdout)
        if tier and out["kernel"] != tier:
            print(f"(this CPU has no {tier} kernel: skipped)", file=sys.stderr)
            continue
        results.setdefault("tract (plain plan)", [np.asarray(r) for r in out["tract"]])
        results[f"ours, {out['kernel']} kernel ({out['linear_ops']} fused layers)"] = [np.asarray(r) for r in out["ours"]]
    os.unlink(f.name)

    print(f"CPU flags: {cpu_flags(('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx_vnni', 'amx_int8', 'asimddp', 'i8mm'))}")
    print(f"{len(texts)} goldens texts of 1..{args.max_tokens} tokens, output `{model.graph.output[0].name}`, "
          f"distance to the exact integer evaluation (onnx.reference {onnx.__version__})\n")
    print("| engine | max abs diff | mean abs diff | texts bit-equal to the reference | max abs diff to transformers fp32 |")
    print("|---|---:|---:|---:|---:|")
    ref_fp32 = max(np.abs(e - g).max() for e, g in zip(expected, fp32)) if len(fp32[0]) == len(expected[0]) else float("nan")
    print(f"| (the exact reference itself) | 0 | 0 | {len(expected)}/{len(expected)} | {ref_fp32:.3g} |")
    for name, rows in results.items():
        rows = [np.asarray(r, dtype=np.float64) for r in rows]
        diffs = np.concatenate([np.abs(r - e) for r, e in zip(rows, expected)])
        equal = sum(int(np.array_equal(r, e)) for r, e in zip(rows, expected))
        to_fp32 = max(np.abs(r - g).max() for r, g in zip(rows, fp32)) if len(fp32[0]) == len(rows[0]) else float("nan")
        print(f"| {name} | {diffs.max():.3g} | {diffs.mean():.3g} | {equal}/{len(rows)} | {to_fp32:.3g} |")


if __name__ == "__main__":
    main()
