#!/usr/bin/env bash
# The small Python environment for the peer (ONNX Runtime) in benchmarks and cross-runtime
# tests: onnxruntime + numpy only (no torch). Prints the venv's python.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.cache/py-venv"
if ! "$venv/bin/python" -c "import onnxruntime, numpy" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check onnxruntime==1.32.0 "numpy<3"
fi
echo "$venv/bin/python"
