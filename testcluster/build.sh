#!/usr/bin/env bash
# Builds the test control plane once per version into a cache outside the checkout:
# one multi-call binary (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl) from Kubernetes' modules, KWOK with its stage files, and helm.
# Prints the bin directory as its last line. A warm rerun takes well under a second.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$HERE/go.mod")
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0  # only its PodMonitor and PrometheusRule CRDs, for the chart's dry runs
KEDA_VERSION=v2.21.0  # only its ScaledObject CRD, for engine: keda
CACHE=${RILLET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rillet}
KEY=$(cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/main.go" "$HERE/build.sh" "$HERE"/promqlcheck/* \
  | sha256sum | cut -c1-12)
OUT="$CACHE/k8s-$K8S_VERSION-$KEY"

built() {
  [[ -x "$OUT/bin/k8s" && -x "$OUT/bin/kwok" && -x "$OUT/bin/helm" && -x "$OUT/bin/promqlcheck" \
    && -f "$OUT/kwok-stages.yaml" && -d "$OUT/crds" && -d "$OUT/crds-keda" ]]
}
if built; then
  echo "$OUT/bin"
  exit 0
fi
# One build at a time: another process building the same version is waited for, then reused.
mkdir -p "$CACHE"
exec 9>"$OUT.lock"
flock 9
if built; then
  echo "$OUT/bin"
  exit 0
fi

command -v go >/dev/null || { echo "go is needed to build the test control plane" >&2; exit 1; }
export GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOTOOLCHAIN=local GOFLAGS=-mod=mod
STAGING="$OUT.partial"
rm -rf "$STAGING"
mkdir -p "$STAGING/bin"

minor=$(echo "$K8S_VERSION" | cut -d. -f2)
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
done
echo "building Kubernetes $K8S_VERSION (cold: about 7 minutes on 2 cores)..." >&2
(cd "$HERE" && go build -trimpath -ldflags "$ldflags" -o "$STAGING/bin/k8s" .)
for component in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  ln -sf k8s "$STAGING/bin/$component"
done

echo "building KWOK $KWOK_VERSION and helm $HELM_VERSION..." >&2
GOBIN="$STAGING/bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
GOBIN="$STAGING/bin" go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

# Prometheus' own PromQL parser, to check every query the project writes.
(cd "$HERE/promqlcheck" && go build -trimpath -ldflags "-s -w" -o "$STAGING/bin/promqlcheck" .)

# KWOK v0.8 has no built-in stages: fast node and pod lifecycles, from its own module.
stages="$GOMODCACHE/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
  pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
  echo "---"
  cat "$stages/$stage.yaml"
done > "$STAGING/kwok-stages.yaml"

# The real PodMonitor and PrometheusRule CRDs, so the chart's are checked against their schemas.
operator_module=github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION
(cd "$STAGING" && GOFLAGS= go mod download "$operator_module")  # outside our module
mkdir -p "$STAGING/crds"
for kind in podmonitors prometheusrules; do
  cp "$GOMODCACHE/$operator_module/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" \
    "$STAGING/crds/"
done

# KEDA's ScaledObject CRD, installed by the tests that want KEDA present.
keda_module=github.com/kedacore/keda/v2@$KEDA_VERSION
(cd "$STAGING" && GOFLAGS= go mod download "$keda_module")
mkdir -p "$STAGING/crds-keda"
cp "$GOMODCACHE/$keda_module/config/crd/bases/keda.sh_scaledobjects.yaml" "$STAGING/crds-keda/"

rm -rf "$OUT"
mv "$STAGING" "$OUT"
echo "$OUT/bin"
