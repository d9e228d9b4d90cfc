#!/usr/bin/env python3
"""Accuracy vs shots: `autoglm adapt` (frozen MiniLM + linear head, pure Rust) beside
scikit-learn's LogisticRegression on the same embeddings, sentiment and spam test splits.

    nice .cache/sklearn-venv/bin/python tools/bench/shots.py [--threads 2]

Needs .cache/assets (tools/setup/fetch-assets.sh; spam is local-only) and a venv with scikit-learn +
numpy. The embeddings of the training texts come from adapt's own embedding cache (`--cache`,
read here by text sha256), those of the test texts from one `autoglm embed --json` per split; all
shot-count heads are combined into one multi-task package, so one `autoglm classify` pass over
each test split scores every head.
"""
import argparse, hashlib, json, os, random, struct, subprocess, sys, tempfile, time
import numpy as np
from sklearn.linear_model import LogisticRegression

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/autoglm-edge/target"))
BIN = os.path.join(TARGET, "release", "autoglm")


def read(path):
    return [json.loads(l) for l in open(path) if l.strip()]


def write(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps({"text": r["text"], "label": r["label"]}) + "\n")


def cap(rows, n, seed):
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:n]


def per_class(rows, k, seed):
    rng = random.Random(seed)
    out = []
    for label in sorted({r["label"] for r in rows}):
        members = [r for r in rows if r["label"] == label]
        out += rng.sample(members, min(k, len(members)))
    return out


def run(args, **kw):
    return subprocess.run([BIN] + args, check=True, **kw)


def cache_vectors(cache_dir, dim):
    rec = 64 + 4 * dim
    table = {}
    for name in os.listdir(cache_dir):
        data = open(os.path.join(cache_dir, name), "rb").read()
        for i in range(0, len(data) - rec + 1, rec):
            table[data[i:i + 64].decode()] = np.frombuffer(data[i + 64:i + rec], dtype="<f4")
    return table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="2")
    ap.add_argument("--model", default=os.path.join(ROOT, ".cache/packages/minilm"))
    ap.add_argument("--spam-train", type=int, default=1000)
    ap.add_argument("--spam-test", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    assets = os.environ.get("AUTOGLM_ASSETS", os.path.join(ROOT, ".cache/assets"))
    if not os.path.isdir(a.model):
        run(["export", "--base", os.path.join(assets, "minilm"), "--out", a.model])
    tmp = tempfile.mkdtemp(prefix="shots-")
    cache = os.path.join(tmp, "cache")
    datasets = {
        "sentiment": (read(f"{assets}/sentiment/train.jsonl"), read(f"{assets}/sentiment/test.jsonl")),
        "spam": (cap(read(f"{assets}/spam/train.jsonl"), a.spam_train, a.seed),
                 cap(read(f"{assets}/spam/test.jsonl"), a.spam_test, a.seed)),
    }
    shots = [8, 32, 128, None]
    results = []
    for name, (train, test) in datasets.items():
        t0 = time.time()
        test_path = os.path.join(tmp, f"{name}-test.jsonl")
        write(test_path, test)
        out = run(["embed", "--model", a.model, "--threads", a.threads, "--json", "--input", test_path],
                  capture_output=True, text=True).stdout
        x_test = np.array([json.loads(l)["embedding"] for l in out.splitlines()])
        y_test = [r["label"] for r in test]
        heads = []
        # "all" first: it fills the embedding cache for every smaller subset.
        for k in reversed(shots):
            rows = train if k is None else per_class(train, k, a.seed)
            tag = "all" if k is None else f"k{k}"
            path = os.path.join(tmp, f"{name}-{tag}.jsonl")
            write(path, rows)
            pkg = os.path.join(tmp, f"{name}-{tag}")
            run(["adapt", "--model", a.model, "--threads", a.threads, "--cache", cache, "--quiet",
                 "--train", path, "--out", pkg, "--seed", str(a.seed), "--task", tag])
            heads.append((k, tag, rows, pkg))
        multi = os.path.join(tmp, f"{name}-multi")
        run(["multitask", "--model", a.model, "--out", multi] + [f"{tag}={pkg}" for _, tag, _, pkg in heads])
        out = run(["classify", "--model", multi, "--threads", a.threads, "--json", "--input", test_path],
                  capture_output=True, text=True).stdout
        preds = [json.loads(l) for l in out.splitlines()]
        table = cache_vectors(cache, x_test.shape[1])
        for k, tag, rows, _ in sorted(heads, key=lambda h: h[0] or 1 << 30):
            ours = np.mean([p[tag]["label"] == y for p, y in zip(preds, y_test)])
            x = np.array([table[hashlib.sha256(r["text"].encode()).hexdigest()] for r in rows])
            clf = LogisticRegression(max_iter=2000).fit(x, [r["label"] for r in rows])
            ref = np.mean(clf.predict(x_test) == np.array(y_test))
            majority = max(y_test.count(l) for l in set(y_test)) / len(y_test)
            results.append((name, "all" if k is None else str(k), len(rows), len(test), ours, ref, majority))
            print(f"{name:9} shots {results[-1][1]:>4}  n={len(rows):>5}  autoglm adapt {ours*100:5.1f}%  "
                  f"sklearn {ref*100:5.1f}%  majority {majority*100:5.1f}%", file=sys.stderr, flush=True)
        print(f"{name}: {time.time()-t0:.0f}s", file=sys.stderr, flush=True)
    print("| data | shots per class | train examples | test examples | autoglm adapt (linear) | sklearn LogisticRegression | majority |")
    print("|---|---|---|---|---|---|---|")
    for name, k, n, nt, ours, ref, maj in results:
        print(f"| {name} | {k} | {n} | {nt} | {ours*100:.1f} % | {ref*100:.1f} % | {maj*100:.1f} % |")


if __name__ == "__main__":
    main()
