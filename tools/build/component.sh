#!/usr/bin/env bash
# Builds the WASI component (crates/autoglm-component, world autoglm:edge/edge in wit/) for
# wasm32-wasip2 with the `wasm` profile (fat LTO, stripped, SIMD128) and installs it as
# autoglm-edge.wasm next to the release binaries, where `autoglm --engine wasm` looks first.
# Then Binaryen's `wasm-opt -Oz` (through jco, from js/'s npm dependencies): 6.06 -> 5.09 MB
# (BENCHMARKS.md, wave 26), no slower (measured in waves 23 and 24, when cargo's profile was "s");
# ~1-2.3 min on 2 cores, so the result is kept next to cargo's output with the digest of what
# it was made from, and redone only when that changes.
# Prints the installed path. Extra arguments go to cargo.
#   AUTOGLM_COMPONENT_OUT=path   install elsewhere
#   AUTOGLM_WASM_OPT=0           install cargo's output as it is
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/../env.sh"
cd "$root"
tools/setup/cross.sh wasm
cargo build -p autoglm-component --target wasm32-wasip2 --profile wasm "$@" >&2
built=$CARGO_TARGET_DIR/wasm32-wasip2/wasm/autoglm_component.wasm
if [ "${AUTOGLM_WASM_OPT:-1}" != 0 ]; then
  opt=${built%.wasm}.opt.wasm
  source_sum=$(sha256sum "$built" | cut -d' ' -f1)
  if [ ! -f "$opt" ] || [ "$(cat "$opt.source" 2>/dev/null)" != "$source_sum" ]; then
    (
      cd "$root/js"
      [ -x node_modules/.bin/jco ] || npm ci --no-audit --no-fund --loglevel=error
      # The features rustc's wasm32-wasip2 output (with +simd128) uses; Binaryen refuses the
      # module without them.
      node_modules/.bin/jco opt "$built" -o "$opt.tmp" --quiet -- -Oz --enable-simd \
        --enable-bulk-memory --enable-bulk-memory-opt --enable-sign-ext \
        --enable-nontrapping-float-to-int --enable-mutable-globals --enable-multivalue \
        --enable-reference-types
    ) >&2
    mv "$opt.tmp" "$opt"
    echo "$source_sum" >"$opt.source"
  fi
  built=$opt
fi
dest=${AUTOGLM_COMPONENT_OUT:-$CARGO_TARGET_DIR/release/autoglm-edge.wasm}
mkdir -p "$(dirname "$dest")"
cp "$built" "$dest.tmp" && mv "$dest.tmp" "$dest"
echo "$dest"
