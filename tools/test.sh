#!/usr/bin/env bash
# The whole test suite, as CI runs it: assets (stdlib Python only), then every crate's tests in
# release mode (tract is far too slow unoptimized for the real-model tests).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
tools/fetch-assets.sh >/dev/null
tools/validate-k8s.sh   # deploy/kubeedge manifests against the Kubernetes schemas (offline)
cargo fmt --all --check
cargo test --release --workspace "$@"
