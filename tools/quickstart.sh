#!/usr/bin/env bash
# The main job on a fresh machine: fetch the base model, build, export the sentiment package
# (base all-MiniLM-L6-v2 + the committed LoRA adapter), classify a few texts.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
tools/fetch-assets.sh >/dev/null
cargo build --release -q -p autoglm-cli
autoglm="$CARGO_TARGET_DIR/release/autoglm"
pkg="$root/.cache/packages/sentiment"
"$autoglm" export --base "$AUTOGLM_ASSETS/minilm" --adapter models/sentiment-lora --out "$pkg"
if [ $# -eq 0 ]; then set -- "I loved this film" "A dull, lifeless waste of two hours."; fi
"$autoglm" classify --model "$pkg" "$@"
