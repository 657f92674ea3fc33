#!/usr/bin/env bash
# The one test command: installs what the tests need (redis-server and docker-compose
# via apt-get when absent, the ONNX Runtime library from its PyPI wheel), validates
# docker-compose.yml, then runs every test and checks that the benchmarks build.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
scripts/fetch-ort.sh

echo "validating docker-compose.yml ..." >&2
docker-compose -f docker-compose.yml config -q

cargo build --release --benches --bins
cargo test --release
