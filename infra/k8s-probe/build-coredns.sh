#!/usr/bin/env bash
# PROBE — not wired into CI yet (issue 6).
# Builds CoreDNS from the Go module proxy (github.com/coredns/coredns@$COREDNS_VERSION, main
# package at the module root) inside a copy of the module, so its own go.mod/go.sum apply.
set -euo pipefail
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.0}   # client-go v0.31: fits a 1.32 apiserver
WORK=${1:-/tmp/k8s-probe/coredns}
NICE="nice -n 19 ionice -c3"
mkdir -p "$WORK" && cd "$WORK"
[ -f go.mod ] || printf 'module k8sprobe/coredns\ngo 1.23\n' > go.mod
t0=$(date +%s)
DIR=$($NICE go mod download -json "github.com/coredns/coredns@$COREDNS_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
rm -rf src && cp -r "$DIR" src && chmod -R u+w src
cd src && $NICE go mod download && echo "download: $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
CGO_ENABLED=0 $NICE go build -trimpath -ldflags "-s -w" -o "$WORK/bin/coredns" .
echo "build coredns $COREDNS_VERSION: $(( $(date +%s) - t0 )) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
"$WORK/bin/coredns" -version
