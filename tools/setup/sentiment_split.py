"""Rotten Tomatoes sentiment split of design.md §5, stdlib only (CI runs it without a venv).

fresh -> positive, rotten -> negative, plot rows dropped, texts stripped, empty texts dropped,
duplicate texts kept once and texts seen with both labels dropped; test = md5(utf-8 text) % 5 == 0.
Writes train.jsonl and test.jsonl ({"text": ..., "label": ...} a line) in sorted-text order.
"""
import bz2
import csv
import hashlib
import io
import json
import sys

LABELS = {"fresh": "positive", "rotten": "negative"}


def main(src: str, out_dir: str) -> None:
    seen: dict[str, set[str]] = {}
    with bz2.open(src) as raw:
        for row in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")):
            label = LABELS.get(row["category"])
            text = row["text"].strip()
            if label is None or not text:
                continue
            seen.setdefault(text, set()).add(label)
    splits = {"train": [], "test": []}
    for text in sorted(seen):
        labels = seen[text]
        if len(labels) != 1:
            continue
        bucket = int(hashlib.md5(text.encode("utf-8")).hexdigest(), 16) % 5
        splits["test" if bucket == 0 else "train"].append({"text": text, "label": labels.pop()})
    for name, rows in splits.items():
        with open(f"{out_dir}/{name}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} rows", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
