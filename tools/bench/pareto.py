"""The accuracy / latency / memory / size trade-off of the export options, in one run.

For fp32 and int8, dense and window attention (window W, 1 global token): exports the packages,
measures batch-1 latency and peak RSS at 128 / 512 / 2048 / 4096 tokens with `autoglm bench`
(one process per point), ONNX Runtime on the dense files at the same lengths (same machine, same
run), sentiment accuracy (classification packages, test split) and spam accuracy on long e-mails
(a logistic-regression head on frozen embeddings; dense truncated at 512 vs windows at 2048/4096).
Prints markdown tables.

  .cache/py-venv/bin/python tools/bench/pareto.py --autoglm BIN [--windows 128,256,512] [--lengths 128,512,2048,4096]
      [--spam-per-class 100] [--skip-accuracy]
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASSETS = os.environ.get("AUTOGLM_ASSETS", os.path.join(ROOT, ".cache", "assets"))
OUT = os.path.join(ROOT, ".cache", "pareto")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_bench  # noqa: E402


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def export(autoglm, name, quant, attention, max_length, adapter=False):
    out = os.path.join(OUT, name)
    cmd = [autoglm, "export", "--base", os.path.join(ASSETS, "minilm"), "--out", out, "--quantize", quant,
           "--attention", attention, "--max-length", str(max_length)]
    if adapter:
        cmd += ["--adapter", os.path.join(ROOT, "models", "sentiment-lora")]
    sh(cmd)
    return out


def size_mb(pkg):
    return sum(os.path.getsize(os.path.join(pkg, f)) for f in os.listdir(pkg)) / 1e6


def bench(autoglm, pkg, seq, iters):
    out = sh([autoglm, "bench", "--model", pkg, "--seq", str(seq), "--batch", "1", "--iters", str(iters), "--json"])
    return json.loads(out.strip().splitlines()[-1])


def ort_bench(pkg, seq, iters):
    out = sh([sys.executable, peer_bench.__file__, "--ort-worker", "--model", pkg, "--seq", str(seq), "--batch", "1",
              "--threads", "1", "--iters", str(iters)])
    return json.loads(out.strip().splitlines()[-1])


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def classify_accuracy(autoglm, pkg, rows):
    inp = os.path.join(OUT, "sentiment-test.jsonl")
    with open(inp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"text": r["text"]}) + "\n")
    out = sh([autoglm, "classify", "--model", pkg, "--json", "--threads", "2", "--input", inp])
    preds = [json.loads(line)["label"] for line in out.splitlines()]
    return sum(p == r["label"] for p, r in zip(preds, rows)) / len(rows)


def embed(autoglm, pkg, rows, tag):
    inp = os.path.join(OUT, f"{tag}.jsonl")
    with open(inp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"text": r["text"]}) + "\n")
    out = sh([autoglm, "embed", "--model", pkg, "--json", "--threads", "2", "--batch-size", "4", "--input", inp])
    return np.array([json.loads(line)["embedding"] for line in out.splitlines()])


def logistic_regression(x, y, l2=1e-2, iters=50):
    """Newton's method on the L2-regularized logistic loss (small, exact, deterministic)."""
    x = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(x.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-x @ w))
        grad = x.T @ (p - y) / len(y) + l2 * w
        hess = (x.T * (p * (1 - p))) @ x / len(y) + l2 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    return lambda z: (np.hstack([z, np.ones((len(z), 1))]) @ w > 0).astype(float)


def spam_subset(rows, per_class):
    key = lambda r: hashlib.md5(r["id"].encode() + r["group"].encode()).hexdigest()
    picked = []
    for label in ("ham", "spam"):
        picked += sorted((r for r in rows if r["label"] == label), key=key)[:per_class]
    return picked


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--autoglm", required=True)
    p.add_argument("--windows", default="128,256,512")
    p.add_argument("--lengths", default="128,512,2048,4096")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--spam-per-class", type=int, default=100)
    p.add_argument("--skip-accuracy", action="store_true")
    a = p.parse_args()
    os.makedirs(OUT, exist_ok=True)
    lengths = [int(x) for x in a.lengths.split(",")]
    longest = max(lengths)
    attentions = ["dense"] + [f"window:{w},global:1" for w in a.windows.split(",")]
    rows = []
    for quant in ("none", "int8"):
        for att in attentions:
            name = f"{quant}-{att.replace(':', '').replace(',', '-')}"
            pkg = export(a.autoglm, name, quant, att, longest)
            row = {"precision": "fp32" if quant == "none" else "int8", "attention": att, "size_mb": size_mb(pkg), "ours": {}, "ort": {}}
            for seq in lengths:
                iters = a.iters if seq <= 512 else max(2, a.iters // 2)
                row["ours"][seq] = bench(a.autoglm, pkg, seq, iters)
                if att == "dense":
                    row["ort"][seq] = ort_bench(pkg, seq, iters)
                print(f"{name} @{seq}: ours {row['ours'][seq]['median_ms']:.1f} ms", file=sys.stderr, flush=True)
            if not a.skip_accuracy:
                cls = export(a.autoglm, name + "-sentiment", quant, att, 256 if att == "dense" else max(256, 2 * int(att.split(":")[1].split(",")[0])), adapter=True)
                row["sentiment"] = classify_accuracy(a.autoglm, cls, jsonl(os.path.join(ASSETS, "sentiment", "test.jsonl")))
            rows.append(row)

    print("### Latency (batch 1, 1 thread) and peak RSS\n")
    head = " | ".join(f"{s} tok ms (RSS MB)" for s in lengths)
    print(f"| precision | attention | package MB | sentiment acc. | {head} |")
    print("|---|---|---:|---:|" + "---:|" * len(lengths))
    for r in rows:
        cells = " | ".join(f"{r['ours'][s]['median_ms']:.1f} ({r['ours'][s]['peak_rss_mb']:.0f})" for s in lengths)
        acc = f"{100 * r['sentiment']:.2f} %" if "sentiment" in r else "–"
        print(f"| {r['precision']} | {r['attention']} | {r['size_mb']:.1f} | {acc} | {cells} |")
        if r["ort"]:
            cells = " | ".join(f"{r['ort'][s]['median_ms']:.1f} ({r['ort'][s]['peak_rss_mb']:.0f})" for s in lengths)
            print(f"| {r['precision']} | dense, **ONNX Runtime** | {r['size_mb']:.1f} | | {cells} |")
    dense_ort = {r["precision"]: r["ort"] for r in rows if r["ort"]}
    print("\n### Speed-up of our window attention over dense ONNX Runtime (same precision, same file family)\n")
    print("| precision | attention | " + " | ".join(f"{s} tok" for s in lengths) + " |")
    print("|---|---|" + "---:|" * len(lengths))
    for r in rows:
        if r["attention"] == "dense":
            continue
        ort = dense_ort[r["precision"]]
        print(f"| {r['precision']} | {r['attention']} | " + " | ".join(f"{ort[s]['median_ms'] / r['ours'][s]['median_ms']:.2f}×" for s in lengths) + " |")

    if a.skip_accuracy:
        return
    train = spam_subset(jsonl(os.path.join(ASSETS, "spam", "train.jsonl")), a.spam_per_class)
    test = spam_subset(jsonl(os.path.join(ASSETS, "spam", "test.jsonl")), a.spam_per_class)
    ytr = np.array([r["label"] == "spam" for r in train], dtype=float)
    yte = np.array([r["label"] == "spam" for r in test], dtype=float)
    print(f"\n### Long documents: spam accuracy ({len(train)} train / {len(test)} test e-mails, linear head on frozen embeddings)\n")
    print("| package | max tokens | test accuracy |")
    print("|---|---:|---:|")
    for quant, att, max_len in (("none", "dense", 512), ("none", "window:256,global:1", 2048), ("none", "window:256,global:1", 4096),
                                ("int8", "window:256,global:1", 4096)):
        name = f"spam-{quant}-{att.replace(':', '').replace(',', '-')}-{max_len}"
        pkg = export(a.autoglm, name, quant, att, max_len)
        xtr, xte = embed(a.autoglm, pkg, train, name + "-train"), embed(a.autoglm, pkg, test, name + "-test")
        acc = (logistic_regression(xtr, ytr)(xte) == yte).mean()
        print(f"| {'fp32' if quant == 'none' else 'int8'} {att} | {max_len} | {100 * acc:.1f} % |", flush=True)


if __name__ == "__main__":
    main()
