#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library from the PyPI wheel into .cache/onnxruntime/
# (the place verdict looks when neither model.ort_library nor ORT_DYLIB_PATH is set).
# Idempotent: does nothing when the library is already there.
set -euo pipefail
VERSION="${ORT_VERSION:-1.32.0}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/onnxruntime"
lib="$dest/libonnxruntime.so"
if [ -f "$lib" ]; then
  exit 0
fi
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching onnxruntime $VERSION wheel from PyPI ..." >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --python-version 3.11 --implementation cp \
  "onnxruntime==$VERSION" -d "$tmp"
wheel="$(ls "$tmp"/onnxruntime-*.whl | head -n1)"
python3 - "$wheel" "$dest" <<'PY'
import sys, zipfile, os, shutil
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so")]
    if not names:
        sys.exit("no libonnxruntime.so in " + wheel)
    name = max(names, key=len)  # the versioned file, e.g. libonnxruntime.so.1.32.0
    with z.open(name) as src, open(os.path.join(dest, os.path.basename(name)), "wb") as out:
        shutil.copyfileobj(src, out)
    versioned = os.path.basename(name)
if versioned != "libonnxruntime.so":
    link = os.path.join(dest, "libonnxruntime.so")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(versioned, link)
print("ONNX Runtime library:", os.path.join(dest, versioned), file=sys.stderr)
PY
