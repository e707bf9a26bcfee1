#!/usr/bin/env bash
# PROBE — not wired into CI yet (issue 6).
# Builds the Kubernetes components (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy) from the Go module proxy, using
# k8s.io/kubernetes@$K8S_VERSION as a module dependency of a tiny main module.
# The staging modules (k8s.io/api, apimachinery, client-go, ...) are replaced by
# their published v0.x twins; the replace list is generated from
# k8s.io/kubernetes's own go.mod (its "=> ./staging/src/..." lines).
# Heavy steps run under nice/ionice so they don't disturb other work.
# Usage: build-k8s.sh [WORKDIR] [component ...]   (default WORKDIR /tmp/k8s-probe/build)
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.32.13}          # last 1.32 patch: newest line supporting containerd 1.6
STAGING_VERSION=v0.${K8S_VERSION#v1.}         # v1.32.13 -> v0.32.13
WORK=${1:-/tmp/k8s-probe/build}; shift || true
ALL="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
COMPONENTS=${*:-$ALL}
NICE="nice -n 19 ionice -c3"
mkdir -p "$WORK/bin" && cd "$WORK"

if [ ! -f go.mod ] || ! grep -q "k8s.io/kubernetes $K8S_VERSION" go.mod; then
  cat > go.mod <<EOM
module k8sprobe/build

go 1.23.0

godebug default=go1.23
EOM
  t0=$(date +%s)
  $NICE go mod download k8s.io/kubernetes@"$K8S_VERSION"
  KMOD=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod
  # every "k8s.io/x => ./staging/src/k8s.io/x" becomes "k8s.io/x => k8s.io/x v0.N.P"
  sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$KMOD" | while read -r m; do
    echo "replace $m => $m $STAGING_VERSION" >> go.mod
  done
  echo "require k8s.io/kubernetes $K8S_VERSION" >> go.mod
  # tools.go-like file so that `go mod tidy` keeps the commands' dependencies
  printf 'package main\n\nimport (\n' > tools.go
  for c in $ALL; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c" >> tools.go; done
  printf ')\n\nfunc main() {}\n' >> tools.go
  # The proxy reachable here lacks a few staging versions (k8s.io/endpointslice@v0.32.13:
  # "403 Forbidden ... This module version is not available"): step such a module down one
  # patch at a time and say so.
  for attempt in 1 2 3 4 5 6; do
    if $NICE go mod tidy 2> tidy.err; then break; fi
    missing=$(grep -oE 'k8s\.io/[a-z0-9-]+@v0\.[0-9]+\.[0-9]+: reading [^ ]*: 403' tidy.err | cut -d: -f1 | sort -u)
    [ -n "$missing" ] && [ "$attempt" -lt 6 ] || { cat tidy.err; exit 1; }
    for mv in $missing; do
      m=${mv%@*}; v=${mv#*@}; p=${v##*.}; nv=${v%.*}.$((p - 1))
      echo "WARNING: $mv not served by the proxy; using $m $nv"
      sed -i "s#^replace $m => $m $v\$#replace $m => $m $nv#" go.mod
    done
  done
  echo "module download + tidy: $(( $(date +%s) - t0 )) s"
fi
for c in $COMPONENTS; do
  t0=$(date +%s)
  CGO_ENABLED=0 $NICE go build -trimpath -ldflags "-s -w \
    -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) \
    -X k8s.io/component-base/version.gitTreeState=clean" \
    -o bin/ k8s.io/kubernetes/cmd/"$c"
  echo "build $c: $(( $(date +%s) - t0 )) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
done
ls -la bin/
