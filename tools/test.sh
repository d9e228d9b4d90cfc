#!/usr/bin/env bash
# The whole test suite, as CI runs it: assets and the ONNX Runtime library (stdlib Python only),
# then every crate's tests in release mode (tract is far too slow unoptimized for the real-model
# tests), with both backends.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
tools/fetch-assets.sh >/dev/null
tools/validate-k8s.sh   # deploy/kubeedge manifests against the Kubernetes schemas (offline)
# The ort backend's tests load this library; under CI a missing one fails them (no skip).
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(tools/fetch-onnxruntime.sh)}
cargo fmt --all --check
# ONNX Runtime is opt-in: the default binary must not even depend on it.
if cargo tree -e normal -p autoglm-cli --prefix none | grep -q '^ort v'; then
  echo "the default build of autoglm-cli depends on ort; it must stay behind --features ort" >&2
  exit 1
fi
# Everything once, with the ort backend compiled in (one feature-unified build of tract).
cargo test --release --workspace --features autoglm-cli/ort "$@"
# The build without the feature refuses `ort` clearly. Same selection (--workspace), so every
# dependency keeps its features and only autoglm-runtime and its dependents rebuild, not tract.
cargo test --release --workspace --lib -- backend::tests
