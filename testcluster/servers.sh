#!/usr/bin/env bash
# Builds the real servers the tests drive, beyond the control plane, from their Go modules
# into a cache outside the checkout, keyed by this file (so by every version below).
# Prints the bin directory as its last line. A warm rerun takes well under a second.
set -euo pipefail

TOXIPROXY_VERSION=v2.12.0  # fault injection between the runtime and Redis or the model
CACHE=${RILLET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rillet}
KEY=$(sha256sum "$0" | cut -c1-12)
OUT="$CACHE/servers-$KEY"

if [[ -x "$OUT/bin/toxiproxy-server" ]]; then
  echo "$OUT/bin"
  exit 0
fi

command -v go >/dev/null || { echo "go is needed to build the test servers" >&2; exit 1; }
export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOTOOLCHAIN=local GOFLAGS=
STAGING="$OUT.partial"
rm -rf "$STAGING"
mkdir -p "$STAGING/bin"

echo "building Toxiproxy $TOXIPROXY_VERSION (cold: about 30 seconds)..." >&2
GOBIN="$STAGING/bin" go install -trimpath -ldflags "-s -w" \
  "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION"
mv "$STAGING/bin/server" "$STAGING/bin/toxiproxy-server"

rm -rf "$OUT"
mv "$STAGING" "$OUT"
echo "$OUT/bin"
