#!/usr/bin/env bash
# Prepares the GPU check on a machine with the registries (this one), for a GPU machine
# without them: the ONNX Runtime GPU libraries from the onnxruntime-gpu wheel, xz-compressed
# and split into parts small enough to carry one per call, and the spine benchmark binary.
#
#   ops/gpu/pack.sh            # → .cache/gpu/parts/ort-gpu.tar.xz.part-NN, .cache/gpu/spine-bench
#
# Then on the GPU machine, from the repository root, once per part (in order):
#   mkdir -p .cache/gpu/recv && cp .cache/gpu/parts/ort-gpu.tar.xz.part-NN .cache/gpu/recv/
# and last:  bash ops/gpu/check.sh
# (see ops/gpu/README.md for the device-tool calls).
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION="${ORT_GPU_VERSION:-1.31.1}"
PART_MB="${PART_MB:-56}"
out=.cache/gpu
mkdir -p "$out/wheel" "$out/parts"

wheel=$(ls "$out"/wheel/onnxruntime_gpu-"$VERSION"-*.whl 2>/dev/null | head -1 || true)
if [[ -z "$wheel" ]]; then
  echo "downloading onnxruntime-gpu $VERSION ..." >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: "onnxruntime-gpu==$VERSION" -d "$out/wheel"
  wheel=$(ls "$out"/wheel/onnxruntime_gpu-"$VERSION"-*.whl | head -1)
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
echo "extracting the runtime and its CUDA / TensorRT providers from $(basename "$wheel") ..." >&2
python3 - "$wheel" "$stage" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        base = os.path.basename(n)
        if n.startswith("onnxruntime/capi/libonnxruntime") and ".so" in base:
            with z.open(n) as src, open(os.path.join(dest, base), "wb") as dst:
                dst.write(src.read())
PY
(cd "$stage" && ln -sf libonnxruntime.so."$VERSION" libonnxruntime.so && ls -la >&2)

echo "compressing (xz) and splitting into ${PART_MB} MiB parts ..." >&2
rm -f "$out"/parts/ort-gpu.tar.xz.part-*
tar -C "$stage" -cf - . | xz -6 -T0 | split -b "${PART_MB}M" -d - "$out/parts/ort-gpu.tar.xz.part-"
(cd "$out/parts" && sha256sum ort-gpu.tar.xz.part-* > SHA256SUMS)

echo "building the spine benchmark ..." >&2
bin=$(cargo bench --bench spine --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import sys, json
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "spine" and m.get("executable"):
        print(m["executable"])' | tail -1)
cp "$bin" "$out/spine-bench"
strip "$out/spine-bench"
ls -la "$out/parts" "$out/spine-bench" >&2
