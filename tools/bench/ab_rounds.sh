#!/usr/bin/env bash
# Two builds or settings of ours, one process at a time, alternated: for ROUNDS rounds, a fresh
# process of A then of B runs `bench --model PKG --seq SEQ --batch 1 --threads THREADS --iters 10`.
# Prints, per side, the median and the least of the per-process medians, and B/A. For machines
# whose processes land in different speeds from one run to the next (BENCHMARKS.md, wave 13):
# many short processes, interleaved, instead of one long one per side.
#
# Usage: tools/bench/ab_rounds.sh PKG SEQ THREADS ROUNDS A_BIN B_BIN
#   A_BIN and B_BIN are `autoglm` binaries, or scripts that exec one with settings, e.g.
#   printf '#!/bin/sh\nAUTOGLM_F32_LINEAR=tract exec autoglm "$@"\n' > /tmp/tract.sh
set -euo pipefail
[ $# -eq 6 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
pkg=$1 seq=$2 threads=$3 rounds=$4 a=$5 b=$6
median() { "$1" bench --model "$pkg" --seq "$seq" --batch 1 --threads "$threads" --iters 10 --json |
  python3 -c 'import json, sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["median_ms"])'; }
for _ in $(seq "$rounds"); do
  echo "a $(median "$a")"
  echo "b $(median "$b")"
done | python3 -c '
import statistics as s, sys
d = {}
for line in sys.stdin:
    side, ms = line.split()
    d.setdefault(side, []).append(float(ms))
a, b = d["a"], d["b"]
print(f"seq '"$seq"', threads '"$threads"', {len(a)} processes each: A median {s.median(a):.2f} ms, least {min(a):.2f}; "
      f"B median {s.median(b):.2f}, least {min(b):.2f}; B/A {s.median(b) / s.median(a):.3f} by median, {min(b) / min(a):.3f} by least")
'
