#!/usr/bin/env bash
# The heavy Python environment used only to (re)make the adapter and the goldens:
# torch (with its CUDA wheels, ~3 GB: no CPU-only torch on PyPI), transformers, peft.
# Never used by CI: the adapter and the goldens are committed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.cache/train-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet torch==2.15.0 transformers==5.23.0 peft==0.21.2 \
  safetensors numpy onnxruntime==1.31.1 scikit-learn
echo "$venv"
