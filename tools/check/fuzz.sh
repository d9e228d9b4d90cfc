#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/, ROBUSTNESS.md) for SECONDS each (default 20) on nightly
# Rust, from the committed seeds, with new inputs kept outside the repository. Where no nightly
# toolchain is installed it says so and exits 0: the stable test suite replays the same seeds.
#   tools/check/fuzz.sh [--packages-only | --models-if-built] [SECONDS] [TARGET...]
# --packages-only: the package readers' targets only (their build takes a minute).
# --models-if-built: the targets that load a model too, but only where their instrumented build
#   (tract and wasmtime: 22-25 min cold on 2 cores) has been made before; else the package
#   targets, and it says so. CI passes it: a cold CI run stays under an hour.
# The component_call target needs AUTOGLM_COMPONENT (tools/build/component.sh; built here when
# unset). The instrumented build has its own target directory beside the main one (it is a
# different compiler and different flags); the first build compiles tract and wasmtime again.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/../env.sh"
cd "$root"
package_targets=(package_tar package_dir manifest_json)
model_targets=(tokenize_batch onnx_load int8_kernels http_request component_call)
fuzz_dir=${AUTOGLM_FUZZ_TARGET_DIR:-$(dirname "$CARGO_TARGET_DIR")/fuzz-target}
which=all
case ${1:-} in
  --packages-only) which=packages; shift ;;
  --models-if-built)
    which=all
    shift
    if [ ! -x "$fuzz_dir/$(rustc -vV | sed -n 's/^host: //p')/release/onnx_load" ]; then
      echo "fuzz: the instrumented build of the model targets has not been made here: the package targets only (their seeds replay in the stable tests)" >&2
      which=packages
    fi
    ;;
esac
seconds=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=("${package_targets[@]}")
  [ "$which" = packages ] || targets+=("${model_targets[@]}")
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain here: not fuzzing (the corpus replays on stable in the tests)" >&2
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install --locked cargo-fuzz >&2
fi
if [ -z "${AUTOGLM_COMPONENT:-}" ] && [[ " ${targets[*]} " == *" component_call "* ]]; then
  AUTOGLM_COMPONENT=$(tools/build/component.sh)
fi
export AUTOGLM_COMPONENT=${AUTOGLM_COMPONENT:-}
export CARGO_TARGET_DIR=$fuzz_dir
# No sanitizer: safe Rust needs no AddressSanitizer, and without it the build and every
# execution are faster. libFuzzer still catches panics, aborts, timeouts and memory growth.
# The targets that load a graph need tract and wasmtime (features); the package ones do not, and
# then the build takes a minute instead of ~25 (cold).
flags=(--sanitizer none)
for t in "${targets[@]}"; do
  [[ " ${package_targets[*]} " == *" $t "* ]] || flags=(--sanitizer none --features serve,wasm)
done
cd fuzz
cargo +nightly fuzz build "${flags[@]}" >&2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
printf '%-16s %10s %8s\n' target executions exec/s
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  log=$scratch/$t.log
  # -rss_limit_mb: a target that grows past 2 GiB is a finding (inputs are a few KB);
  # -timeout: one input running 60 s is a hang.
  seeds=corpus/$t
  [ "$t" = package_dir ] && seeds=corpus/package_tar # the same seeds: their members become files
  if ! cargo +nightly fuzz run "${flags[@]}" "$t" "$scratch/$t" "$seeds" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=60 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz: $t failed; the input is under fuzz/artifacts/$t/ (ROBUSTNESS.md: replay, fix, commit as a regression seed)" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  printf '%-16s %10s %8s\n' "$t" "${runs:-?}" "${rate:-?}"
done
