#!/usr/bin/env bash
# The whole test suite, as CI runs it: assets and the ONNX Runtime library (stdlib Python only),
# the cross toolchains, then every crate's tests in release mode (tract is far too slow
# unoptimized for the real-model tests) with both backends and the WASI component, the
# component from Node.js, the fuzz targets for a short time (nightly), and the aarch64 subset
# under emulation on two CPU models.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/env.sh"
cd "$root"
# Each stage's start is printed, and at the end a table of the stages' durations with the CPU
# they ran on (BENCHMARKS.md, "CI time", keeps these tables for cold and warm runs).
stages=() started=$(date +%s) last=$started
step() {
  local now; now=$(date +%s)
  [ ${#stages[@]} -gt 0 ] && stages[-1]+=$'\t'$((now - last))
  stages+=("$1") last=$now
  printf '\n== %s (%s)\n' "$1" "$(date +%T)" >&2
}
timings() {
  step "end"; unset 'stages[-1]'
  printf '\n== stage timings (s) on %s, %s cores\n' "$(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1)" "$(nproc)" >&2
  printf '%s\n' "$(grep -m1 -o -w -E 'avx2|fma|avx512f|avx512_vnni|avx_vnni|amx_tile|amx_int8' /proc/cpuinfo | tr '\n' ' ')" >&2
  printf '%s\n' "${stages[@]}" | awk -F'\t' '{printf "%6d  %s\n", $2, $1}' >&2
  printf '%6d  total\n' $(($(date +%s) - started)) >&2
}
trap timings EXIT
step "assets, toolchains, manifests"
tools/setup/fetch-assets.sh >/dev/null
tools/setup/cross.sh aarch64 wasm
tools/check/validate-k8s.sh   # deploy/kubeedge manifests against the Kubernetes schemas (offline)
tools/check/lint-containerfile.sh
# The minisign tool (Debian's), for the test that its keys and signatures work with ours.
if ! command -v minisign >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends minisign >/dev/null
fi
# The ort backend's tests load this library; under CI a missing one fails them (no skip).
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(tools/setup/fetch-onnxruntime.sh)}
cargo fmt --all --check
# ONNX Runtime and wasmtime are opt-in: the default binary must not even depend on them.
for dep in ort wasmtime; do
  if cargo tree -e normal -p autoglm-cli --prefix none | grep -q "^$dep v"; then
    echo "the default build of autoglm-cli depends on $dep; it must stay behind a feature" >&2
    exit 1
  fi
done
step "the WASI component (wasm32-wasip2)"
AUTOGLM_COMPONENT=$(tools/build/component.sh)
export AUTOGLM_COMPONENT
ls -l "$AUTOGLM_COMPONENT" >&2
step "x86_64: every crate, both backends, the wasm engine"
# Everything once, ort and wasm compiled in (one feature-unified build of tract).
cargo test --release --workspace --exclude autoglm-component \
  --features autoglm-cli/ort,autoglm-cli/wasm,autoglm-cli/otel "$@"
step "examples/ (built and tested by the stage above; run once more here, for the log)"
"$CARGO_TARGET_DIR"/release/autoglm-example-classify models/sentiment-int8.tar "I loved this film"
"$CARGO_TARGET_DIR"/release/autoglm-example-wasm-host models/sentiment-int8.tar "I loved this film"
step "the component from Node.js (jco)"
AUTOGLM_BIN=$CARGO_TARGET_DIR/release/autoglm tools/check/test-js.sh
step "x86_64: the build without ort"
# The build without the feature refuses `ort` clearly. Same selection (--workspace), so every
# dependency keeps its features and only autoglm-runtime and its dependents rebuild, not tract.
cargo test --release --workspace --exclude autoglm-component --lib -- backend::tests
step "fuzzing (nightly, 20 s per target)"
# Every cargo-fuzz target from the committed seeds; says so and goes on where no nightly is.
# The targets that run a model need an instrumented build of tract and wasmtime: 22-25 min
# cold, which would take a cold CI run to ~80 min (BENCHMARKS.md, wave 12). Where that build
# has never been made here, or the run is already past 30 min, only the package readers are
# fuzzed, and it says so; the model targets' seeds still replay in the stable tests above.
# Warm runs, the usual case, fuzz every target.
if [ $(($(date +%s) - started)) -lt 1800 ]; then
  tools/check/fuzz.sh --models-if-built 20
else
  echo "fuzz: this run is past 30 min: the package targets only" >&2
  tools/check/fuzz.sh --packages-only 20
fi
step "aarch64 under qemu (Cortex-A72, Cortex-A76)"
tools/check/test-aarch64.sh
step "static binaries (musl) and the container image (podman)"
# The release profile, not the fat-LTO dist one, for time: the aarch64 binary reuses what the
# stage above compiled for aarch64-unknown-linux-musl; x86_64-musl is one more build of tract,
# ~10 min on a cold machine, which took a cold run past 90 min (BENCHMARKS.md, wave 18). So,
# as the fuzzing stage does: where the run is already past 60 min (a cold machine; warm runs get
# here at ~40), the image is built and checked for linux/arm64 only, and it says so.
if [ $(($(date +%s) - started)) -lt 3600 ]; then
  platforms="amd64 arm64"
else
  platforms=arm64
  echo "static binaries: this run is past 60 min: linux/arm64 only (no x86_64-musl build, no amd64 image)" >&2
fi
AUTOGLM_PLATFORMS=$platforms AUTOGLM_DIST_PROFILE=release tools/build/dist.sh
AUTOGLM_PLATFORMS=$platforms tools/build/image.sh
