#!/usr/bin/env bash
# Re-export the embedded default package (models/sentiment-int8.tar) from the base model and the
# committed adapter. Deterministic: unchanged inputs and exporter give the same bytes
# (checked by the test `the_committed_default_package_is_reproducible`).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/../env.sh"
cd "$root"
tools/setup/fetch-assets.sh >/dev/null
cargo build --release -q -p autoglm-cli --no-default-features
"$CARGO_TARGET_DIR/release/autoglm" export --base "$AUTOGLM_ASSETS/minilm" --adapter models/sentiment-lora \
  --quantize int8 --out models/sentiment-int8.tar
