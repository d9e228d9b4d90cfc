#!/usr/bin/env python3
"""Accuracy vs shots, with variance: `autoglm adapt` (frozen MiniLM + linear head, pure Rust)
beside scikit-learn's LogisticRegression() on the same embeddings and the same seeded draws.

    nice .cache/sklearn-venv/bin/python tools/bench/shots.py [--threads 2] [--seeds 10]

For every data set, shot count k (8/16/32/64/128 per class, and all) and seed, one stratified
draw of the training split trains both learners; the table has mean +- standard deviation over
the seeds. Sentiment also gets `adapt --unlabeled` (self-training on 2,000 other training texts,
labels dropped; the draws never include them). Spam (long e-mails) runs twice: with the dense
256-token package and with a window-attention package reading 2048 tokens. Last, `autoglm rank`
on draws of the same sizes and seeds from each test split: is the related source first?

Needs .cache/assets (tools/setup/fetch-assets.sh, and `fetch-assets.sh spam`) and a venv with
scikit-learn + numpy. Training-text embeddings come from adapt's own cache (`--cache`, read here by
text sha256), test-text embeddings from one `autoglm embed --json` per split; all heads of a data
set are merged into one multi-task package, so one `autoglm classify` pass scores every head.
"""
import argparse, hashlib, json, os, random, shutil, subprocess, sys, tempfile, time
import numpy as np
from sklearn.linear_model import LogisticRegression

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/autoglm-edge/target"))
BIN = os.path.join(TARGET, "release", "autoglm")
SHOTS = [8, 16, 32, 64, 128, None]


def read(path):
    return [json.loads(l) for l in open(path) if l.strip()]


def write(path, rows, labels=True):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps({"text": r["text"], "label": r["label"]} if labels else {"text": r["text"]}) + "\n")
    return path


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


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def stats(v):
    return float(np.mean(v)) * 100, float(np.std(v)) * 100


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="2")
    ap.add_argument("--model", default=os.path.join(ROOT, ".cache/packages/minilm"))
    ap.add_argument("--window-model", default=os.path.join(ROOT, ".cache/packages/minilm-window-2048"))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--unlabeled", type=int, default=2000, help="sentiment self-training pool (0: off)")
    ap.add_argument("--spam-train", type=int, default=1000)
    ap.add_argument("--spam-test", type=int, default=600)
    ap.add_argument("--data", default="sentiment,spam,spam-window")
    ap.add_argument("--json", help="also write every per-seed result here")
    ap.add_argument("--cache", default=os.path.join(ROOT, ".cache/embeddings"),
                    help="adapt's embedding cache (keyed by graph and text: reruns skip the backbone)")
    a = ap.parse_args()
    assets = os.environ.get("AUTOGLM_ASSETS", os.path.join(ROOT, ".cache/assets"))
    if not os.path.isdir(a.model):
        run(["export", "--base", os.path.join(assets, "minilm"), "--out", a.model])
    if "spam-window" in a.data and not os.path.isdir(a.window_model):
        run(["export", "--base", os.path.join(assets, "minilm"), "--out", a.window_model,
             "--attention", "window:256,global:1", "--max-length", "2048"])
    tmp = tempfile.mkdtemp(prefix="shots-")
    spam = lambda: (cap(read(f"{assets}/spam/train.jsonl"), a.spam_train, 0),
                    cap(read(f"{assets}/spam/test.jsonl"), a.spam_test, 0))
    specs = {
        "sentiment": (a.model, lambda: (read(f"{assets}/sentiment/train.jsonl"), read(f"{assets}/sentiment/test.jsonl")), a.unlabeled),
        "spam": (a.model, spam, 0),
        "spam-window": (a.window_model, spam, 0),
    }
    results, per_seed, keep = [], [], {}
    for name in a.data.split(","):
        model, load, n_unlabeled = specs[name]
        train, test = load()
        t0 = time.time()
        cache = os.path.join(a.cache, os.path.basename(model))
        test_path = write(os.path.join(tmp, f"{name}-test.jsonl"), test)
        out = run(["embed", "--model", model, "--threads", a.threads, "--json", "--input", test_path], capture_output=True, text=True).stdout
        x_test = np.array([json.loads(l)["embedding"] for l in out.splitlines()])
        y_test = [r["label"] for r in test]
        merged = []
        draws = {}
        for seed in range(a.seeds):
            # The unlabelled pool first; the draws come from the rest, so they never overlap.
            pool_u = cap(train, n_unlabeled, 1000 + seed) if n_unlabeled else []
            used = {r["text"] for r in pool_u}
            pool = [r for r in train if r["text"] not in used]
            u_path = write(os.path.join(tmp, f"{name}-u{seed}.jsonl"), pool_u, labels=False) if pool_u else None
            singles = []
            # "all" first: at seed 0 it fills the embedding cache for every smaller draw.
            for k in reversed(SHOTS):
                rows = train if k is None else per_class(pool, k, seed)
                tag = f"{'all' if k is None else f'k{k}'}-s{seed}"
                draws[tag] = rows
                path = write(os.path.join(tmp, f"{name}-{tag}.jsonl"), rows)
                base = ["adapt", "--model", model, "--threads", a.threads, "--cache", cache, "--quiet",
                        "--train", path, "--seed", str(seed)]
                pkg = os.path.join(tmp, f"{name}-{tag}")
                run(base + ["--out", pkg, "--task", tag])
                singles.append(f"{tag}={pkg}")
                if k is None and seed == 0:
                    # Kept (a copy) as a ranking source.
                    keep[name] = pkg + "-source"
                    shutil.copytree(pkg, keep[name])
                if u_path and k is not None:
                    run(base + ["--out", pkg + "-st", "--task", tag + "-st", "--unlabeled", u_path])
                    singles.append(f"{tag}-st={pkg}-st")
            seed_pkg = os.path.join(tmp, f"{name}-seed{seed}")
            run(["multitask", "--model", model, "--out", seed_pkg] + singles, capture_output=True)
            for s in singles:
                shutil.rmtree(s.split("=", 1)[1])
            merged.append(seed_pkg)
            print(f"{name}: seed {seed} trained ({time.time()-t0:.0f}s)", file=sys.stderr, flush=True)
        multi = os.path.join(tmp, f"{name}-multi")
        run(["multitask", "--model", model, "--out", multi] + merged, capture_output=True)
        for m in merged:
            shutil.rmtree(m)
        out = run(["classify", "--model", multi, "--threads", a.threads, "--json", "--input", test_path],
                  capture_output=True, text=True).stdout
        shutil.rmtree(multi)
        preds = [json.loads(l) for l in out.splitlines()]
        table = cache_vectors(cache, x_test.shape[1])
        majority = max(y_test.count(l) for l in set(y_test)) / len(y_test)
        for k in SHOTS:
            ours, ref, st = [], [], []
            for seed in range(a.seeds):
                tag = f"{'all' if k is None else f'k{k}'}-s{seed}"
                rows = draws[tag]
                acc = lambda t: float(np.mean([p[t]["label"] == y for p, y in zip(preds, y_test)]))
                ours.append(acc(tag))
                if n_unlabeled and k is not None:
                    st.append(acc(tag + "-st"))
                x = np.array([table[sha(r["text"])] for r in rows])
                clf = LogisticRegression(max_iter=2000).fit(x, [r["label"] for r in rows])
                ref.append(float(np.mean(clf.predict(x_test) == np.array(y_test))))
                per_seed.append({"data": name, "shots": k, "seed": seed, "ours": ours[-1], "sklearn": ref[-1],
                                 "self_training": st[-1] if st else None})
            row = (name, "all" if k is None else str(k), len(draws[f"{'all' if k is None else f'k{k}'}-s0"]),
                   len(test), stats(ours), stats(ref), stats(st) if st else None, majority)
            results.append(row)
            print(f"{name:11} shots {row[1]:>4}  ours {row[4][0]:5.1f}±{row[4][1]:.1f}  sklearn {row[5][0]:5.1f}±{row[5][1]:.1f}"
                  + (f"  self-training {row[6][0]:5.1f}±{row[6][1]:.1f}" if row[6] else ""), file=sys.stderr, flush=True)
        print(f"{name}: {time.time()-t0:.0f}s", file=sys.stderr, flush=True)

    print(f"| data | shots per class | train examples | test examples | autoglm adapt | sklearn LogisticRegression | ours − sklearn | adapt --unlabeled {a.unlabeled} | majority |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, k, n, nt, ours, ref, st, maj in results:
        st_cell = f"{st[0]:.1f} ± {st[1]:.1f} % ({st[0]-ours[0]:+.1f})" if st else "–"
        print(f"| {name} | {k} | {n} | {nt} | {ours[0]:.1f} ± {ours[1]:.1f} % | {ref[0]:.1f} ± {ref[1]:.1f} % | "
              f"{ours[0]-ref[0]:+.1f} | {st_cell} | {maj*100:.1f} % |")
    for name in dict.fromkeys(r[0] for r in results):
        rows = [r for r in results if r[0] == name]
        within = all(r[4][0] >= r[5][0] - 1 for r in rows)
        monotone = all(b[4][0] >= a_[4][0] - b[4][1] for a_, b in zip(rows, rows[1:]))
        print(f"\n{name}: ours within 1 point of sklearn at every shot count: {'yes' if within else 'NO'}; "
              f"mean never decreases by more than one sd as shots grow: {'yes' if monotone else 'NO'}")

    # Source ranking on draws of the same sizes and seeds, from each test split.
    if {"sentiment", "spam"} <= set(keep):
        print("\n| target | shots per class | related source first |\n|---|---|---|")
        sources = [keep["sentiment"], keep["spam"]]
        for name in ("sentiment", "spam"):
            test = read(f"{assets}/{name}/test.jsonl") if name == "sentiment" else specs["spam"][1]()[1]
            for k in SHOTS[:-1]:
                first = 0
                for seed in range(a.seeds):
                    tpath = write(os.path.join(tmp, f"rank-{name}-{k}-{seed}.jsonl"), per_class(test, k, seed))
                    out = run(["rank", "--model", a.model, "--threads", a.threads, "--cache",
                               os.path.join(a.cache, os.path.basename(a.model)), "--quiet", "--json",
                               "--target", tpath] + sources, capture_output=True, text=True).stdout
                    top = json.loads(out.splitlines()[0])["package"]
                    first += top == keep[name]
                print(f"| {name} | {k} | {first} / {a.seeds} |", flush=True)
    if a.json:
        json.dump(per_seed, open(a.json, "w"), indent=1)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
