#!/usr/bin/env bash
# Renders a `verdict backtest` HTML report in headless Chromium (Debian's `chromium`) and
# writes a PNG screenshot; fails if the page logs anything to the console (the page has no
# scripts, so any console message is a broken page).
#   scripts/backtest-screenshot.sh backtest.html backtest.png [width height]
set -euo pipefail
html=$(realpath "$1")
png=$(realpath -m "$2")
width=${3:-1400}
height=${4:-2200}
chromium=${CHROMIUM:-chromium}
command -v "$chromium" >/dev/null || { echo "$chromium not found (apt-get install chromium)" >&2; exit 3; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
log="$profile/log"
# --enable-logging=stderr --v=0 prints the page's console messages as "CONSOLE(...)" lines.
timeout 60 "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --user-data-dir="$profile" --enable-logging=stderr --v=0 \
  --window-size="$width,$height" --screenshot="$png" "file://$html" 2>"$log" >/dev/null || {
  cat "$log" >&2
  exit 1
}
if grep -E "CONSOLE|Uncaught|Failed to load" "$log" >&2; then
  echo "console messages while rendering $html" >&2
  exit 1
fi
[ -s "$png" ] || { echo "no screenshot written" >&2; cat "$log" >&2; exit 1; }
echo "screenshot: $png"
