#!/usr/bin/env bash
# The WASI component from Node.js: jco (+ the preview2 shim) from the npm registry, `jco transpile`,
# then `node --test js/test/` against the native runtime's answers on the same texts.
# Needs the component (tools/build/component.sh), a native autoglm binary and the assets
# (tools/setup/fetch-assets.sh): the test package is the fp32 sentiment model, exported here.
#   AUTOGLM_COMPONENT  the component (default: next to the release binaries)
#   AUTOGLM_BIN        the native autoglm (default: the release build)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/../env.sh"
component=${AUTOGLM_COMPONENT:-$CARGO_TARGET_DIR/release/autoglm-edge.wasm}
autoglm=${AUTOGLM_BIN:-$CARGO_TARGET_DIR/release/autoglm}
cd "$root/js"
[ -x node_modules/.bin/jco ] || npm ci --no-audit --no-fund --loglevel=error
rm -rf gen
node_modules/.bin/jco transpile "$component" --name autoglm-edge --out-dir gen --no-typescript --quiet
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export AUTOGLM_PACKAGE=$tmp/sentiment.tar AUTOGLM_EXPECTED=$tmp/expected.jsonl
"$autoglm" export --base "$AUTOGLM_ASSETS/minilm" --adapter ../models/sentiment-lora \
  --out "$AUTOGLM_PACKAGE" >/dev/null
"$autoglm" classify --json --model "$AUTOGLM_PACKAGE" --input test/texts.jsonl >"$AUTOGLM_EXPECTED"
node --test test/
