#!/usr/bin/env bash
# Builds the WASI component (crates/autoglm-component, world autoglm:edge/edge in wit/) for
# wasm32-wasip2 with the `wasm` profile (fat LTO, stripped, SIMD128) and installs it as
# autoglm-edge.wasm next to the release binaries, where `autoglm --engine wasm` looks first.
# Prints the installed path. Extra arguments go to cargo.
#   AUTOGLM_COMPONENT_OUT=path   install elsewhere
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/../env.sh"
cd "$root"
tools/setup/cross.sh wasm
cargo build -p autoglm-component --target wasm32-wasip2 --profile wasm "$@" >&2
built=$CARGO_TARGET_DIR/wasm32-wasip2/wasm/autoglm_component.wasm
dest=${AUTOGLM_COMPONENT_OUT:-$CARGO_TARGET_DIR/release/autoglm-edge.wasm}
mkdir -p "$(dirname "$dest")"
cp "$built" "$dest.tmp" && mv "$dest.tmp" "$dest"
echo "$dest"
