#!/usr/bin/env bash
# Whole-process cold start, alternated (issue #15's goal: `autoglm classify --engine wasm` on the
# embedded default with a cached `.cwasm`, start + load + first answer, <= 250 ms): for each
# round, a fresh process classifies one text through the component, then natively. Wall time
# and peak RSS by GNU time. The `.cwasm` and the native plan cache are primed first, so every
# timed run is a cached start. Prints the CPU flags, every run, then per engine the median and
# the least time and the median peak RSS.
#
# Usage: tools/bench/coldstart_rounds.sh AUTOGLM_BIN [ROUNDS] [PKG]
#   AUTOGLM_BIN  an `autoglm` built with the wasm feature; the component is found as it finds it
#                (AUTOGLM_COMPONENT, or autoglm-edge.wasm next to the binary)
#   PKG          a package instead of the embedded default
set -euo pipefail
usage='usage: coldstart_rounds.sh AUTOGLM_BIN [ROUNDS] [PKG]'
bin=${1:?$usage}
rounds=${2:-8}
model=()
[ -n "${3:-}" ] && model=(--model "$3")
text="the food was cold and the service slow"
command -v /usr/bin/time >/dev/null || {
  echo "coldstart_rounds.sh: needs GNU time (/usr/bin/time)" >&2
  exit 1
}
grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(fma|avx2|avx512f|avx512_vnni|avx_vnni|amx_int8|asimddp|i8mm)$' | tr '\n' ' ' | sed 's/^/cpu flags: /;s/$/\n/'
"$bin" classify "${model[@]}" --engine wasm "$text" >/dev/null
"$bin" classify "${model[@]}" "$text" >/dev/null
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
for _ in $(seq "$rounds"); do
  for engine in wasm native; do
    flags=("${model[@]}")
    [ "$engine" = wasm ] && flags+=(--engine wasm)
    /usr/bin/time -f "$engine %e %M" -o "$runs" -a "$bin" classify "${flags[@]}" "$text" >/dev/null
  done
done
cat "$runs"
for engine in wasm native; do
  times=$(awk -v e="$engine" '$1 == e { print $2 }' "$runs" | sort -n)
  rss=$(awk -v e="$engine" '$1 == e { print $3 }' "$runs" | sort -n)
  n=$(echo "$times" | wc -l)
  mid=$(((n + 1) / 2))
  printf '%-6s median %s s, least %s s, median peak RSS %s MB\n' "$engine" \
    "$(echo "$times" | sed -n "${mid}p")" "$(echo "$times" | head -1)" \
    "$(($(echo "$rss" | sed -n "${mid}p") / 1024))"
done
