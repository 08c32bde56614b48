#!/usr/bin/env bash
# Builds the image from the project's Dockerfile (what `make image` runs), tags it with the
# version and the git revision, and writes its SBOM beside it.
#
#   IMAGE     the tag to build (default ghcr.io/rillet-dev/rillet:$VERSION); the same
#             repository also gets the revision as a tag
#   ENGINE    docker, podman or buildah (default: the first of them that works)
#   BASE      python: the Dockerfile's default base (python:3.11 slim, from Docker Hub);
#             debian: Debian bookworm's own python3, made with mmdebstrap from Debian's
#             packages and cached by its package list (for machines that reach Debian's
#             archive but no registry of images, as CI does). Default: python, or debian
#             when buildah cannot pull the python base
#   BUILDAH_ROOT  buildah only: a store of its own (vfs driver), e.g. under a cache folder
#   OUT       where the SBOM goes (default dist/)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)}
REVISION=${REVISION:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
IMAGE=${IMAGE:-ghcr.io/rillet-dev/rillet:$VERSION}
OUT=${OUT:-dist}
REVISION_TAG="${IMAGE%:*}:$REVISION"

works() { command -v "$1" >/dev/null && "$1" info >/dev/null 2>&1; }
if [[ -z "${ENGINE:-}" ]]; then
  for candidate in docker podman buildah; do
    if works "$candidate"; then ENGINE=$candidate; break; fi
  done
fi
[[ -n "${ENGINE:-}" ]] || { echo "no container engine works here: install docker, podman or buildah" >&2; exit 1; }

engine=("$ENGINE")
build=(build)
if [[ "$ENGINE" == buildah ]]; then
  [[ -n "${BUILDAH_ROOT:-}" ]] && engine+=(--root "$BUILDAH_ROOT/storage" --runroot "$BUILDAH_ROOT/run" --storage-driver vfs)
  # chroot isolation: no OCI runtime or user namespaces needed, the host's network.
  build=(bud --isolation chroot)
fi
args=(--build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" -t "$IMAGE" -t "$REVISION_TAG")

if [[ -z "${BASE:-}" ]]; then
  BASE=python
  python_image=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
  if [[ "$ENGINE" == buildah ]] && ! "${engine[@]}" pull --quiet --retry 0 "$python_image" >/dev/null 2>&1; then
    echo "$python_image cannot be pulled here: building on Debian's python3 (BASE=debian)" >&2
    BASE=debian
  fi
fi

if [[ "$BASE" == debian ]]; then
  [[ "$ENGINE" == buildah ]] || { echo "BASE=debian is built with buildah" >&2; exit 1; }
  # The runtime base has the interpreter only; the build stage's adds venv (and pip's wheel).
  runtime_packages=python3,ca-certificates
  build_packages=$runtime_packages,python3-venv
  key=$( { echo bookworm "$runtime_packages" "$build_packages"; mmdebstrap --version; } | sha256sum | cut -c1-12)
  for kind in runtime build; do
    name="localhost/rillet-base-$kind:$key"
    "${engine[@]}" inspect --type image "$name" >/dev/null 2>&1 && continue
    packages=${kind}_packages
    tarball=$(mktemp --suffix=.tar)
    echo "making $name from Debian's packages: ${!packages}" >&2
    mmdebstrap --quiet --variant=minbase --include="${!packages}" bookworm "$tarball"
    container=$("${engine[@]}" from scratch)
    "${engine[@]}" add --quiet "$container" "$tarball" / >/dev/null
    "${engine[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --cmd /bin/sh "$container"
    "${engine[@]}" commit --quiet --rm "$container" "$name" >/dev/null
    rm -f "$tarball"
  done
  args+=(--pull=never --build-arg "PYTHON_IMAGE=localhost/rillet-base-runtime:$key"
    --build-arg "BUILD_IMAGE=localhost/rillet-base-build:$key")
fi
# The build trusts the CAs this host trusts (a TLS-intercepting proxy's, where there is one).
if [[ "$ENGINE" != docker && -f /etc/ssl/certs/ca-certificates.crt ]]; then
  args+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi

echo "building $IMAGE ($REVISION_TAG) with $ENGINE, base $BASE" >&2
"${engine[@]}" "${build[@]}" --quiet "${args[@]}" . >/dev/null

# The SBOM the build wrote into the image (CycloneDX, the app's venv), copied out beside it.
mkdir -p "$OUT"
sbom="$OUT/rillet-$VERSION.cdx.json"
if [[ "$ENGINE" == buildah ]]; then
  container=$("${engine[@]}" from --quiet --pull=never "$IMAGE")
  "${engine[@]}" run --isolation chroot "$container" -- cat /opt/rillet/sbom.cdx.json > "$sbom"
  "${engine[@]}" rm "$container" >/dev/null
  "${engine[@]}" rmi --prune >/dev/null 2>&1 || true  # the images these tags left behind
else
  "${engine[@]}" run --rm --entrypoint cat "$IMAGE" /opt/rillet/sbom.cdx.json > "$sbom"
fi
echo "$IMAGE"
echo "$REVISION_TAG"
echo "$sbom"
