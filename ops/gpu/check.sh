#!/usr/bin/env bash
# GPU proof: on a machine with an NVIDIA GPU, runs the spine benchmark (raw ORT rows/s at
# several rows per call, then end-to-end events/s and latency on the mock cluster) with the
# CUDA and the TensorRT execution providers, for the GBDT and MLP demo models, and prints
# which provider each run actually used.
#
# Needs what ops/gpu/pack.sh prepares: .cache/gpu/recv/ort-gpu.tar.xz.part-* (the
# onnxruntime-gpu libraries; or ORT_GPU_DIR pointing at an unpacked copy) and
# .cache/gpu/spine-bench (or SPINE_BENCH). CUDA and cuDNN libraries come from the system or
# from the Python environment's nvidia-* packages (nvidia/*/lib), which are added to
# LD_LIBRARY_PATH.
#
#   bash ops/gpu/check.sh                      # all models × cuda, tensorrt
#   MODELS="demo-mlp" EPS="cuda" bash ops/gpu/check.sh
#
# On a machine without a GPU every run reports "execution provider cpu": the fallback.
set -uo pipefail
cd "$(dirname "$0")/../.."

MODELS="${MODELS:-demo demo-mlp}"
EPS="${EPS:-cuda tensorrt}"
EVENTS="${BENCH_EVENTS:-200000}"
SECONDS_OFFERED="${BENCH_SECONDS:-5}"
RATE="${BENCH_RATE:-50000}"
RUN_TIMEOUT="${RUN_TIMEOUT:-150}"

ort_dir="${ORT_GPU_DIR:-.cache/gpu/ort}"
if [[ ! -e "$ort_dir/libonnxruntime.so" ]]; then
  parts=(.cache/gpu/recv/ort-gpu.tar.xz.part-*)
  [[ -e "${parts[0]}" ]] || { echo "no $ort_dir/libonnxruntime.so and no parts in .cache/gpu/recv/ (run ops/gpu/pack.sh)" >&2; exit 2; }
  if [[ -f .cache/gpu/parts/SHA256SUMS ]]; then
    (cd .cache/gpu/recv && sha256sum -c --quiet ../parts/SHA256SUMS) || { echo "a part is corrupt or missing" >&2; exit 2; }
  fi
  mkdir -p "$ort_dir"
  cat "${parts[@]}" | xz -d -T0 | tar -C "$ort_dir" -xf - || { echo "unpacking failed" >&2; exit 2; }
fi
ort_dir=$(cd "$ort_dir" && pwd)

libs="$ort_dir"
for py in python3 /usr/bin/python3; do
  extra=$("$py" - 2>/dev/null <<'PY'
import glob, os, importlib.util
spec = importlib.util.find_spec("nvidia")
roots = list(spec.submodule_search_locations) if spec and spec.submodule_search_locations else []
print(":".join(d for r in roots for d in sorted(glob.glob(os.path.join(r, "*", "lib")))))
PY
  ) && [[ -n "$extra" ]] && { libs="$libs:$extra"; break; }
done
for d in /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do [[ -d $d ]] && libs="$libs:$d"; done
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ORT_DYLIB_PATH="$ort_dir/libonnxruntime.so"
export BENCH_ROOT="$PWD"

bench="${SPINE_BENCH:-.cache/gpu/spine-bench}"
[[ -x "$bench" ]] || { echo "no benchmark binary at $bench (run ops/gpu/pack.sh)" >&2; exit 2; }

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: no GPU visible"
echo "cores: $(nproc)  ORT: $ORT_DYLIB_PATH"
ldd "$ort_dir/libonnxruntime_providers_cuda.so" 2>/dev/null | grep "not found" && echo "(missing CUDA libraries above: the CUDA EP will fall back to CPU)"

status=0
for model in $MODELS; do
  for ep in $EPS; do
    for fp16 in 0 $([[ $ep == tensorrt ]] && echo 1); do
      label="$model / $ep$([[ $fp16 == 1 ]] && echo " (FP16 engines)")"
      echo
      echo "== $label"
      mkdir -p .cache/trt
      if ! BENCH_MODEL="models/$model" BENCH_EP="$ep,cpu" BENCH_TRT_FP16=$fp16 BENCH_EVENTS=$EVENTS \
        BENCH_SECONDS=$SECONDS_OFFERED BENCH_RATE=$RATE timeout "$RUN_TIMEOUT" "$bench" --bench 2>&1 \
        | grep -E "raw ORT|rows/call|throughput|events/s|p50|worker time|WARN|ERROR|execution provider|padded"; then
        echo "($label: failed or timed out after ${RUN_TIMEOUT}s)"
        status=1
      fi
    done
  done
done
exit $status
