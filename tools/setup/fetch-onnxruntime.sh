#!/usr/bin/env bash
# Fetch ONNX Runtime's shared library for the `ort` backend (design.md §5): the CPU build inside
# the onnxruntime 1.32.0 wheel, unpacked to .cache/onnxruntime/ (ignored, rebuildable).
# Prints the library's path; use it as ORT_DYLIB_PATH or `autoglm … --ort-lib PATH`.
# Idempotent: a library already there is reused without touching the network.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
version=${ORT_VERSION:-1.32.0}
dir="$root/.cache/onnxruntime"
lib="$dir/libonnxruntime.so.$version"
py=${PYTHON:-python3}

if [ ! -f "$lib" ]; then
  mkdir -p "$dir/wheel"
  if ! ls "$dir/wheel"/onnxruntime-"$version"-*.whl >/dev/null 2>&1; then
    "$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$dir/wheel" "onnxruntime==$version"
  fi
  whl=$(ls "$dir/wheel"/onnxruntime-"$version"-*.whl | head -n1)
  # Only the C library: it depends on libc and libstdc++ alone, not on Python.
  "$py" - "$whl" "$lib" "$version" <<'PY'
import sys, zipfile, os
whl, out, version = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    data = z.read(f"onnxruntime/capi/libonnxruntime.so.{version}")
tmp = out + ".part"
with open(tmp, "wb") as f:
    f.write(data)
os.replace(tmp, out)
PY
  rm -rf "$dir/wheel"
fi
echo "$lib"
