#!/usr/bin/env bash
# Whole-process cold start of two builds of the component path, alternated: for each round a
# fresh `autoglm classify --engine wasm` on the embedded default from build A, then from B, each
# with its own `.cwasm` cached first (issue #15's goal: start + load + first answer <= 250 ms).
# Wall time and peak RSS by GNU time (10 ms resolution). Prints the CPU flags, then per build
# the median, least and most time and the peak RSS of the median run.
#
# Usage: tools/bench/coldstart_ab.sh DIR_A DIR_B [ROUNDS]
#   DIR_*  a directory holding an `autoglm` built with the wasm feature and the
#          `autoglm-edge.wasm` it was built with (the host finds it next to the binary)
set -euo pipefail
usage='usage: coldstart_ab.sh DIR_A DIR_B [ROUNDS]'
a=${1:?$usage} b=${2:?$usage} rounds=${3:-10}
text="the food was cold and the service slow"
command -v /usr/bin/time >/dev/null || {
  echo "coldstart_ab.sh: needs GNU time (/usr/bin/time)" >&2
  exit 1
}
grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(fma|avx2|avx512f|avx512_vnni|avx_vnni|amx_int8|sha_ni|asimddp|i8mm|sha2)$' | tr '\n' ' ' | sed 's/^/cpu flags: /;s/$/\n/'
for d in "$a" "$b"; do "$d/autoglm" classify --engine wasm "$text" >/dev/null; done
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
for _ in $(seq "$rounds"); do
  for d in "$a" "$b"; do
    /usr/bin/time -f "$d %e %M" -o "$runs" -a "$d/autoglm" classify --engine wasm "$text" >/dev/null
  done
done
for d in "$a" "$b"; do
  awk -v d="$d" '$1 == d { print $2, $3 }' "$runs" | sort -n | awk -v d="$d" '
    { t[NR] = $1; r[NR] = $2 }
    END {
      m = int((NR + 1) / 2)
      printf "%s: median %s s, least %s s, most %s s, peak RSS of the median run %d MB (%d runs)\n", d, t[m], t[1], t[NR], r[m] / 1024, NR
    }'
done
