#!/usr/bin/env bash
# Installs the JavaScript test clients (package-lock.json: LangGraph's JS SDK, and
# playwright-core, which drives Debian's chromium) once per lock into a cache outside the
# checkout, as testcluster/build.sh does for the control plane. Prints the node_modules
# folder as its last line; a warm rerun takes milliseconds.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${RILLET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rillet}
KEY=$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -c1-12)
OUT="$CACHE/js-clients-$KEY"

mkdir -p "$CACHE"
exec 9>"$OUT.lock"
flock 9  # two test runs at once: one installs, the other waits and reuses
if [[ ! -f "$OUT/.installed" ]]; then
  command -v npm >/dev/null || { echo "Node.js 20+ with npm is needed for the JavaScript tests" >&2; exit 1; }
  rm -rf "$OUT"
  mkdir -p "$OUT"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$OUT/"
  # --ignore-scripts: playwright-core downloads nothing anyway; the tests use Debian's chromium.
  (cd "$OUT" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
  touch "$OUT/.installed"
fi
echo "$OUT/node_modules"
