#!/usr/bin/env bash
# Load test of `autoglm serve` on loopback with the real sentiment package (MiniLM + the
# committed LoRA adapter). Not part of CI: it takes minutes of both cores.
#   1. sustainable: closed loop, 16 connections -> throughput X and p50/p99;
#   2. overload: paced connections offering ~10X, a SIGHUP reload in the middle -> every answer
#      is 200 or 429, no 5xx, no socket error;
#   3. reload under load: 4 connections, SIGHUP every 3 s -> every answer is 200;
#   then: the process is alive, its peak RSS (VmHWM) is under RSS_LIMIT_MB, the reloads all
#   succeeded, and SIGTERM stops it cleanly. Prints a markdown summary for BENCHMARKS.md.
# Needs wrk (Debian package; installed here when missing and running as root) and curl.
# Knobs: PORT (18080), DURATION seconds per phase (15), RSS_LIMIT_MB (1500), AUTOGLM_BIN.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/../env.sh"
cd "$root"
port=${PORT:-18080}
addr=127.0.0.1:$port
url=http://$addr
duration=${DURATION:-15}
rss_limit=${RSS_LIMIT_MB:-1500}
work=$root/.cache/load-test
mkdir -p "$work"

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq wrk >/dev/null; else
    echo "load-test: needs wrk (apt-get install wrk)" >&2; exit 1; fi
fi

if [ -z "${AUTOGLM_BIN:-}" ]; then
  # The service needs no embedded default package: leave that feature out.
  cargo build --release -q -p autoglm-cli --no-default-features
  AUTOGLM_BIN=$CARGO_TARGET_DIR/release/autoglm
fi
pkg=$work/sentiment
if [ ! -f "$pkg/manifest.json" ]; then
  tools/setup/fetch-assets.sh >/dev/null
  "$AUTOGLM_BIN" export --base "$AUTOGLM_ASSETS/minilm" --adapter models/sentiment-lora --out "$pkg"
fi

log=$work/serve.log
"$AUTOGLM_BIN" serve --model "sentiment=$pkg" --addr "$addr" --threads 1 --max-batch 32 \
  --batch-wait-ms 5 --queue-capacity 64 --poll-secs 0 --shutdown-grace-secs 20 >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 300); do
  curl -sf "$url/v2/health/ready" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "load-test: server died" >&2; exit 1; }
  sleep 0.1
done
curl -sf "$url/v2/health/ready" >/dev/null || { echo "load-test: server not ready" >&2; exit 1; }

fail=0
check() { # message condition...
  local what=$1; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what" >&2; fail=1; fi
}
val() { grep "^$1=" "$2" | cut -d= -f2; }
only_statuses() { # file allowed-regex
  local s; s=$(val statuses "$1")
  [ -n "$s" ] && ! tr ',' '\n' <<<"$s" | cut -d: -f1 | grep -vqE "^($2)$"
}
settle() { # until the queue is empty: what one phase left queued must not count in the next
  for _ in $(seq 1 300); do
    curl -s "$url/metrics" | grep -q '^autoglm_queue_texts{model="sentiment"} 0$' && return 0
    sleep 0.1
  done
}
hup_every() { # seconds count
  for _ in $(seq 1 "$2"); do sleep "$1"; kill -HUP "$pid"; done
}

# 1. Sustainable: closed loop; every request waits for its answer.
wrk -t2 -c16 -d"${duration}s" --timeout 15s -s tools/bench/load-test/post.lua "$url/v1/classify" \
  >"$work/sustained.txt"
rps=$(val rps "$work/sustained.txt")
check "sustainable phase: only 200" only_statuses "$work/sustained.txt" 200
check "sustainable phase: no socket error" test "$(val socket_errors "$work/sustained.txt")" = 0

settle
# 2. Overload at ~10x: 256 paced connections, delay = 256 s / (10 X).
conns=256
delay=$(awk -v r="$rps" -v c="$conns" 'BEGIN { d = int(c * 1000 / (10 * r)); print (d < 1 ? 1 : d) }')
offered=$(awk -v c="$conns" -v d="$delay" 'BEGIN { printf "%.0f", c * 1000 / d }')
hup_every $((duration / 2)) 1 &
hupper=$!
WRK_DELAY_MS=$delay wrk -t2 -c"$conns" -d"${duration}s" --timeout 15s -s tools/bench/load-test/post.lua \
  "$url/v1/classify" >"$work/overload.txt"
wait "$hupper"
check "overload phase: only 200 or 429" only_statuses "$work/overload.txt" "200|429"
check "overload phase: no socket error" test "$(val socket_errors "$work/overload.txt")" = 0
check "overload phase: some 200" grep -q "200:" "$work/overload.txt"

settle
# 3. Reloads under a load the server keeps up with: nothing may be lost.
hups=$((duration / 3))
hup_every 3 "$hups" &
hupper=$!
wrk -t2 -c4 -d"${duration}s" --timeout 15s -s tools/bench/load-test/post.lua "$url/v1/classify" \
  >"$work/reload.txt"
wait "$hupper"
check "reload phase: only 200" only_statuses "$work/reload.txt" 200
check "reload phase: no socket error" test "$(val socket_errors "$work/reload.txt")" = 0

sleep 1
check "server still running" kill -0 "$pid"
curl -s "$url/metrics" >"$work/metrics.txt"
ok_reloads=$(awk '/^autoglm_model_reloads_total\{.*result="success"/ { print $2 }' "$work/metrics.txt")
bad_reloads=$(awk '/^autoglm_model_reloads_total\{.*result="failure"/ { print $2 }' "$work/metrics.txt")
check "reloads: $((hups + 1)) succeeded, none failed" test "${ok_reloads:-0}" = $((hups + 1)) -a "${bad_reloads:-0}" = 0
hwm_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
hwm_mb=$((hwm_kb / 1024))
check "peak RSS ${hwm_mb} MB under ${rss_limit} MB" test "$hwm_mb" -lt "$rss_limit"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
trap - EXIT
check "SIGTERM: clean exit" test "$status" = 0

row() { # phase file
  printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$(val requests "$2")" "$(val rps "$2")" \
    "$(val p50_ms "$2")" "$(val p99_ms "$2")" "$(val statuses "$2")"
}
echo
echo "| phase | requests | req/s | p50 ms | p99 ms | statuses |"
echo "|---|---|---|---|---|---|"
row "sustainable (16 conns, closed loop)" "$work/sustained.txt"
row "overload (~${offered} req/s offered, 1 SIGHUP)" "$work/overload.txt"
row "reload under load (4 conns, $hups SIGHUPs)" "$work/reload.txt"
echo
echo "peak RSS (VmHWM): ${hwm_mb} MB; reloads: ${ok_reloads:-0} ok, ${bad_reloads:-0} failed; $(nproc) cores"
exit "$fail"
