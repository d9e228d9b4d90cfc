#!/usr/bin/env bash
# aarch64 (Raspberry Pi 4/5, Jetson Orin) tests under user-mode emulation, on two CPU models:
#   cortex-a72  Pi 4: NEON only, no dotprod, no fp16
#   cortex-a76  Pi 5 (and close to Orin's A78AE): dotprod, fp16
#   max         (operator tests only) the int8 matrix-multiply extension, I8MM, which no Pi has
#               (Neoverse V1/N2 servers, Cortex-A710 and later): the `i8mm` int8 tier
# Kernels are picked at run time: our int8 kernels from the CPU features qemu reports (`sdot` on
# the A76, `neon`/SMLAL on the A72; their tests run every tier the CPU has), tract's fp32 tuning
# from the CPU part in /proc/cpuinfo, which qemu-user does not
# emulate (it shows the host's); so the A72 run names its part with TRACT_CPU_AARCH64_KIND=a72
# (tract's A72-tuned fp32 kernels) and the A76 run takes tract's generic choice, as a real A76
# would (tract has no A76-specific tuning).
# The test binaries are cross-built once (release), then run twice. The target is the static
# aarch64-unknown-linux-musl, the one tools/build/dist.sh ships (so the tests check the shipped libc,
# qemu needs no sysroot, and the container image stage after this one reuses the compiled
# dependencies: it only links `autoglm`).
#
# Emulation is hundreds of times slower than native, so this runs a subset (docs/gateways.md):
# every autoglm-runtime test; the transformers goldens (token ids, embeddings and logits of the
# 41 texts of at most 64 tokens, every script and edge case, same bounds as on x86; the two
# 256-token texts alone took most of the emulated time); and the CLI end to end
# (fp32 package, and the embedded int8 default).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/../env.sh"
cd "$root"
tools/setup/cross.sh musl
tools/setup/fetch-assets.sh >/dev/null
target=aarch64-unknown-linux-musl
qemu="qemu-aarch64"
# Every cargo command below selects the same two packages, so that cargo resolves the same
# features for every dependency and reuses this one build: `-p autoglm-runtime` alone leaves out
# features that the CLI's dependencies turn on (smallvec's, memchr's, ...), and tract was built
# a second time for it (8-10 min of a cold run on 2 cores, ~2 min of a warm one: the runtime
# crate twice). The runtime's own test targets are named instead: its unit tests and each file
# under its tests/.
build=(cargo test --release --target "$target" -p autoglm-runtime -p autoglm-cli)
"${build[@]}" --no-run
runtime_tests=(--lib)
for t in crates/autoglm-runtime/tests/*.rs crates/autoglm-runtime/tests/*/main.rs; do
  [ -e "$t" ] || continue
  t=${t#crates/autoglm-runtime/tests/}; t=${t%/main.rs}; runtime_tests+=(--test "${t%.rs}")
done
for cpu in ${AUTOGLM_ARM_CPUS:-cortex-a72 cortex-a76}; do
  echo "== aarch64 under qemu -cpu $cpu" >&2
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER="$qemu -cpu $cpu"
  export AUTOGLM_TEST_RUNNER="$qemu -cpu $cpu"
  # Emulation is tens of times slower: the heavy tests' time budgets stretch with it.
  export AUTOGLM_TEST_BUDGET_SCALE=30
  if [ "$cpu" = cortex-a72 ]; then export TRACT_CPU_AARCH64_KIND=a72; else unset TRACT_CPU_AARCH64_KIND; fi
  "${build[@]}" "${runtime_tests[@]}"
  "${build[@]}" --doc   # the runtime's doc examples (cargo runs --doc alone)
  AUTOGLM_GOLDENS_MAX_TOKENS=64 "${build[@]}" --test it -- \
    fidelity::token_ids_equal_hf_tokenizers \
    fidelity::tract::embeddings_match_transformers \
    fidelity::tract::logits_match_transformers \
    cli::classify_prints_labels_and_scores \
    cli::classify_uses_the_embedded_default_package
done
# I8MM: the operators' tests (every int8 tier the CPU has against the definition, the fused
# int8 model against tract's plan) on qemu's `max` CPU, which has it.
echo "== aarch64 under qemu -cpu max (int8 tier i8mm)" >&2
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER="$qemu -cpu max"
unset TRACT_CPU_AARCH64_KIND
"${build[@]}" --lib ops::
