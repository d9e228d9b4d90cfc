#!/usr/bin/env bash
# Load time and peak RSS, alternated: for each round, a fresh process of the `after` binary
# (and of the `before` one, if given) loads PKG and runs one text of 128 tokens (`autoglm
# bench`: `load_ms` is package open to ready, `peak_rss_mb` the process's VmHWM), then ONNX
# Runtime creates its session on the same `model.onnx` and runs the same input
# (`peer_bench.py --ort-worker`). Prints every measurement, then per engine the median and the
# least load time and the median peak RSS. Loads are short and this machine is noisy: the
# rounds interleave the engines so that a slow minute hits them all (BENCHMARKS.md, wave 9).
#
# Usage: tools/bench/load_rounds.sh PKG AFTER_BIN [BEFORE_BIN] [ROUNDS]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/../env.sh"
usage='usage: load_rounds.sh PKG AFTER_BIN [BEFORE_BIN] [ROUNDS]'
pkg=$(realpath "${1:?$usage}")
after=${2:?$usage}
before=${3:-}
rounds=${4:-8}
cd "$root"
python=.cache/py-venv/bin/python
fields='import json, sys; d = json.loads(sys.stdin.read().strip().splitlines()[-1]); print(round(d["load_ms"], 1), round(d["peak_rss_mb"], 1))'
grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(fma|avx2|avx512f|avx512_vnni|avx_vnni|amx_int8|asimddp|i8mm)$' | tr '\n' ' ' | sed 's/^/cpu flags: /;s/$/\n/'
for round in $(seq "$rounds"); do
  for engine in after before; do
    bin=${!engine}
    [ -n "$bin" ] || continue
    echo "$engine $("$bin" bench --model "$pkg" --seq 128 --batch 1 --threads 1 --iters 3 --json 2>/dev/null | "$python" -c "$fields")"
  done
  echo "ort $("$python" tools/bench/peer_bench.py --ort-worker --model "$pkg" --seq 128 --batch 1 \
    --threads 1 --iters 3 2>/dev/null | "$python" -c "$fields")"
done | tee /dev/stderr | "$python" -c '
import statistics, sys
runs = {}
for line in sys.stdin:
    engine, load, rss = line.split()
    runs.setdefault(engine, []).append((float(load), float(rss)))
print("| engine | load ms, median | load ms, least | peak RSS MB, median | runs |")
print("|---|---:|---:|---:|---:|")
for engine, v in runs.items():
    print(f"| {engine} | {statistics.median(l for l, _ in v):.1f} | {min(l for l, _ in v):.1f} "
          f"| {statistics.median(r for _, r in v):.1f} | {len(v)} |")
'
