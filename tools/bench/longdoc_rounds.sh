#!/usr/bin/env bash
# Long documents, alternated: for each precision and length, our window-256 package with the
# `after` binary (and the `before` one, if given), then ONNX Runtime on the dense export of the
# same model, ROUNDS times. One line per measurement: round, precision, tokens, engine, median
# ms, peak RSS MB. Interleaving the engines within each round keeps a noisy machine from
# favouring one of them (BENCHMARKS.md, wave 8).
#
# The packages are the ones tools/bench/pareto.py exports (.cache/pareto/{none,int8}-dense and
# -window256-global1); run it once first.
#
# Usage: tools/bench/longdoc_rounds.sh AFTER_BIN [BEFORE_BIN] [ROUNDS]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/../env.sh"
cd "$root"
after=${1:?usage: longdoc_rounds.sh AFTER_BIN [BEFORE_BIN] [ROUNDS]}
before=${2:-}
rounds=${3:-3}
python=.cache/py-venv/bin/python
median='import json, sys; d = json.loads(sys.stdin.read().strip().splitlines()[-1]); print(round(d["median_ms"], 1), round(d.get("peak_rss_mb", 0)))'
grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(fma|avx2|avx512f|avx512_vnni|avx_vnni|amx_int8|asimddp|i8mm)$' | tr '\n' ' ' | sed 's/^/cpu flags: /;s/$/\n/'
for round in $(seq "$rounds"); do
  for precision in int8 none; do
    for tokens in 2048 4096; do
      for engine in before after; do
        bin=${!engine}
        [ -n "$bin" ] || continue
        echo "$round $precision $tokens $engine $("$bin" bench --model ".cache/pareto/$precision-window256-global1" \
          --seq "$tokens" --batch 1 --iters 3 --json 2>/dev/null | "$python" -c "$median")"
      done
      echo "$round $precision $tokens ort-dense $("$python" tools/bench/peer_bench.py --ort-worker \
        --model ".cache/pareto/$precision-dense" --seq "$tokens" --batch 1 --threads 1 --iters 3 2>/dev/null |
        "$python" -c "$median")"
    done
  done
done
