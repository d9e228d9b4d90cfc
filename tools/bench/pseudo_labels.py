#!/usr/bin/env python3
"""How right are self-training's pseudo-labels? For the draws of tools/bench/shots.py (same seeds,
same unlabelled pool of 2,000 sentiment training texts whose labels are known but unused), fit the
labelled head's objective (scikit-learn LogisticRegression(), C = 1: what `adapt`'s fixed schedule
minimises) and score the first round's pseudo-labels as `adapt --unlabeled` picks them (predicted
class at least 0.55 probable, the same number per class, at most 500, most confident first).

    .cache/sklearn-venv/bin/python tools/bench/pseudo_labels.py   # after shots.py filled the cache

Self-training can only help when the confident pseudo-labels are far more accurate than the head.
"""
import os, sys
import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shots import ROOT, cap, cache_vectors, per_class, read, sha  # noqa: E402


def main():
    assets = os.environ.get("AUTOGLM_ASSETS", os.path.join(ROOT, ".cache/assets"))
    cache = os.path.join(ROOT, ".cache/embeddings/minilm")
    train = read(f"{assets}/sentiment/train.jsonl")
    table = cache_vectors(cache, 384)
    labels = sorted({r["label"] for r in train})
    vec = lambda rows: np.array([table[sha(r["text"])] for r in rows])
    ys = lambda rows: np.array([labels.index(r["label"]) for r in rows])
    print("| shots per class | head accuracy on the pool | pseudo-labels per class | pseudo-label accuracy |")
    print("|---|---|---|---|")
    for k in [8, 16, 32, 64, 128]:
        head, taken, right = [], [], []
        for seed in range(10):
            pool_u = cap(train, 2000, 1000 + seed)
            used = {r["text"] for r in pool_u}
            rows = per_class([r for r in train if r["text"] not in used], k, seed)
            clf = LogisticRegression(max_iter=2000).fit(vec(rows), ys(rows))
            xu, yu = vec(pool_u), ys(pool_u)
            p = clf.predict_proba(xu)
            pred, conf = p.argmax(1), p.max(1)
            head.append(np.mean(pred == yu))
            cand = [np.where((pred == c) & (conf >= 0.55))[0] for c in range(len(labels))]
            n = min(500, min(len(c) for c in cand))
            picked = np.concatenate([c[np.argsort(-conf[c])][:n] for c in cand])
            taken.append(n)
            right.append(np.mean(pred[picked] == yu[picked]) if n else np.nan)
        print(f"| {k} | {np.mean(head)*100:.1f} % | {np.mean(taken):.0f} | {np.nanmean(right)*100:.1f} % |")


if __name__ == "__main__":
    main()
