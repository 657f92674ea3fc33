#!/usr/bin/env bash
# The one demo command: fetches the ONNX Runtime library if needed, then runs the
# whole pipeline in-process (mock Kafka, synthetic transactions, the bundled model).
# Extra arguments go to `verdict demo` (e.g. --events 1000000 --rate 0, or --scenario clickstream).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-ort.sh
# Settings: config/demo.toml, built into the binary (--config FILE layers over it).
exec cargo run --release --quiet -- demo "$@"
