#!/usr/bin/env bash
# The ort backend on an NVIDIA GPU, on a machine with no network: goldens through
# `--backend ort --device cuda` against tract on the CPU, and latency CUDA vs CPU.
#
#   tools/check/test-gpu.sh AUTOGLM_BIN PACKAGE [CPU_ORT_LIB]
#
# AUTOGLM_BIN: an x86_64 `autoglm` built with `--features ort` (may be .xz-compressed).
# PACKAGE: a classification package (directory or .tar) whose texts are tests/goldens/goldens.json.
# CPU_ORT_LIB: optional libonnxruntime.so >= 1.31 (tools/setup/fetch-onnxruntime.sh; may be .xz), used for
#   the CPU rows when the machine has no suitable library of its own.
# ORT_CUDA_LIB: optional, a CUDA build of libonnxruntime.so (>= 1.31) to use instead of searching.
#
# It looks for a CUDA-enabled ONNX Runtime (ORT_CUDA_LIB, python3's onnxruntime, any
# libonnxruntime_providers_cuda.so in site-packages and the usual prefixes), puts the CUDA
# libraries that pip packages (torch's nvidia-*) ship on LD_LIBRARY_PATH, and runs what it can.
# Always exits 0; the last line, "RESULT: …", says what was proven or why not.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:?usage: tools/check/test-gpu.sh AUTOGLM_BIN PACKAGE [CPU_ORT_LIB]}
pkg=${2:?usage: tools/check/test-gpu.sh AUTOGLM_BIN PACKAGE [CPU_ORT_LIB]}
cpu_lib=${3:-}
py=${PYTHON:-python3}
work=$(mktemp -d)
result() { echo "RESULT: $*"; exit 0; }
t() { timeout "${STEP_TIMEOUT:-180}" "$@"; }

unxz_to() { # file dest-name: decompress .xz copies into $work, keep others as they are
  case "$1" in
    *.xz) "$py" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$work/$2" &&
      echo "$work/$2" ;;
    *) echo "$1" ;;
  esac
}
bin=$(unxz_to "$bin" autoglm) || result "cannot decompress $1"
chmod +x "$bin" 2>/dev/null
[ -n "$cpu_lib" ] && { cpu_lib=$(unxz_to "$cpu_lib" libonnxruntime.so.1.32.0) && cpu_lib=$(realpath "$cpu_lib") || cpu_lib=; }
"$bin" --version >/dev/null 2>&1 || result "the autoglm binary $bin does not run here ($(uname -m))"

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n2
gpu=$(nvidia-smi -L 2>/dev/null | head -n1)

echo "== ONNX Runtime libraries"
"$py" -c 'import onnxruntime as o; print("python onnxruntime", o.__version__, o.get_available_providers(), o.__file__)' 2>&1 | tail -n1
site=$("$py" -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
# Every CUDA provider library we can see, then the libonnxruntime.so beside it.
candidates=()
[ -n "${ORT_CUDA_LIB:-}" ] && candidates+=("$ORT_CUDA_LIB")
while IFS= read -r prov; do
  for lib in "$(dirname "$prov")"/libonnxruntime.so*; do
    [ -f "$lib" ] && candidates+=("$lib")
  done
done < <(find $site /usr/lib /usr/local /opt "$root/.cache" -maxdepth 6 -name 'libonnxruntime_providers_cuda.so' 2>/dev/null)
for c in "${candidates[@]}"; do echo "  CUDA-enabled candidate: $c"; done
[ ${#candidates[@]} -eq 0 ] && echo "  no libonnxruntime_providers_cuda.so anywhere (a CPU-only onnxruntime cannot run CUDA)"

# The CUDA runtime, cuBLAS and cuDNN that pip wheels (torch's nvidia-* deps) ship.
libdirs=$(find $site -maxdepth 4 -type d -path '*nvidia/*/lib' 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64"

# ort api-31 needs ONNX Runtime 1.31 or newer.
version_ok() { local v; v=$(basename "$1" | sed -n 's/.*\.so\.1\.\([0-9]*\).*/\1/p'); [ -z "$v" ] || [ "$v" -ge 31 ]; }
cuda_lib=
for c in "${candidates[@]}"; do
  if version_ok "$c"; then cuda_lib=$c; break; fi
  echo "  $c is older than 1.31: this build of autoglm (ort api-31) cannot load it"
done

echo "== goldens"
"$py" - "$root/tests/goldens/goldens.json" "$work/goldens.jsonl" <<'PY'
import json, sys
g = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    for t in g["texts"]:
        f.write(json.dumps({"text": t["text"]}) + "\n")
PY
classify() { # name args... -> $work/name.jsonl, stderr in $work/name.err
  local name=$1; shift
  t "$bin" classify --model "$pkg" --json --input "$work/goldens.jsonl" "$@" >"$work/$name.jsonl" 2>"$work/$name.err"
}
compare() { # name: max |Δ| of the probabilities against tract's, and against softmax(golden logits)
  "$py" - "$root/tests/goldens/goldens.json" "$work/tract.jsonl" "$work/$1.jsonl" <<'PY'
import json, math, sys
g = json.load(open(sys.argv[1]))
labels = g["meta"]["labels"]
def probs(l):
    m = max(l); e = [math.exp(x - m) for x in l]; s = sum(e); return [x / s for x in e]
ref = [[json.loads(l)["scores"][k] for k in labels] for l in open(sys.argv[2])]
ours = [[json.loads(l)["scores"][k] for k in labels] for l in open(sys.argv[3])]
gold = [probs(t["logits"]) for t in g["texts"]]
d = lambda a, b: max(abs(x - y) for r, s in zip(a, b) for x, y in zip(r, s))
same = sum(max(range(len(r)), key=r.__getitem__) == max(range(len(s)), key=s.__getitem__) for r, s in zip(ours, ref))
print(f"{len(ours)} texts, max |dp| vs tract {d(ours, ref):.2e}, vs transformers {d(ours, gold):.2e}, same label as tract {same}/{len(ours)}")
PY
}
classify tract || result "tract failed on the package: $(tail -n2 "$work/tract.err")"
echo "  tract cpu: $(compare tract)"

rows=()
bench() { # label args...
  local label=$1; shift
  local out
  out=$(t "$bin" bench --model "$pkg" --seq 128 --batch 1,32 --iters "${ITERS:-20}" --json "$@" 2>"$work/bench.err") ||
    { echo "  bench $label failed: $(tail -n1 "$work/bench.err")"; return 1; }
  while IFS= read -r line; do
    rows+=("$("$py" -c 'import json,sys; r=json.loads(sys.argv[2]); print("| %s | %d | %d | %.2f | %.2f | %s |" % (sys.argv[1], r["seq"], r["batch"], r["median_ms"], r["min_ms"], r["backend"]))' "$label" "$line")")
  done <<<"$out"
}
threads=${THREADS:-$(nproc)}
bench "tract cpu, $threads threads" --threads "$threads"

reason=
if [ -n "$cuda_lib" ]; then
  if classify cuda --backend ort --device cuda --ort-lib "$cuda_lib"; then
    echo "  ort cuda: $(compare cuda)  [$(grep -m1 '^backend:' "$work/cuda.err")]"
    classify ortcpu --backend ort --device cpu --ort-lib "$cuda_lib" && echo "  ort cpu:  $(compare ortcpu)"
    bench "ort cuda" --backend ort --device cuda --ort-lib "$cuda_lib"
    bench "ort cpu, $threads threads" --backend ort --device cpu --ort-lib "$cuda_lib" --threads "$threads"
    reason="CUDA execution provider ran ($cuda_lib on ${gpu:-an unnamed GPU}); compare the rows above"
  else
    echo "  ort cuda failed: $(grep -m1 error "$work/cuda.err")"
    reason="a CUDA-enabled ONNX Runtime ($cuda_lib) was found but its CUDA provider did not start: $(grep -m1 error "$work/cuda.err")"
  fi
else
  reason="no CUDA-enabled ONNX Runtime >= 1.31 on this machine (python3's onnxruntime is CPU-only or too old): CUDA not tested; set ORT_CUDA_LIB to an onnxruntime-gpu libonnxruntime.so to test it"
fi
# The CPU rows of ONNX Runtime from the carried library, when the CUDA one did not give them.
if [ -n "$cpu_lib" ] && [ -z "$cuda_lib" -o -n "${reason##CUDA execution provider ran*}" ]; then
  if classify ortcpu --backend ort --ort-lib "$cpu_lib"; then
    echo "  ort cpu ($cpu_lib): $(compare ortcpu)"
    bench "ort cpu, $threads threads" --backend ort --ort-lib "$cpu_lib" --threads "$threads"
  else
    echo "  ort cpu failed: $(grep -m1 error "$work/ortcpu.err")"
  fi
fi

echo
echo "| engine | seq | batch | median ms | min ms | backend |"
echo "|---|---:|---:|---:|---:|---|"
for r in "${rows[@]}"; do echo "$r"; done
echo
result "$reason"
