#!/usr/bin/env bash
# The main job on a fresh machine: build `autoglm`, classify with the embedded default package
# (the committed int8 sentiment classifier: no download), then run the whole pipeline from the
# real inputs: fetch all-MiniLM-L6-v2, export it with the committed LoRA adapter, classify again.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/env.sh"
cd "$root"
cargo build --release -q -p autoglm-cli
autoglm="$CARGO_TARGET_DIR/release/autoglm"
if [ $# -eq 0 ]; then set -- "I loved this film" "A dull, lifeless waste of two hours."; fi
echo "== embedded default package (int8)"
"$autoglm" classify "$@"
echo "== exported now from all-MiniLM-L6-v2 + models/sentiment-lora (fp32)"
tools/setup/fetch-assets.sh >/dev/null
pkg="$root/.cache/packages/sentiment"
"$autoglm" export --base "$AUTOGLM_ASSETS/minilm" --adapter models/sentiment-lora --out "$pkg"
"$autoglm" classify --model "$pkg" "$@"
