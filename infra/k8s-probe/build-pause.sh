#!/usr/bin/env bash
# PROBE — not wired into CI yet (issue 6).
# The pod sandbox ("pause") image, made locally (no registry here): a static Go program
# (pause.go: sleep until SIGTERM, reap zombies) in an otherwise empty image, imported into Docker
# as k8s-probe/pause:local; cluster.sh copies it into the node's containerd (docker save | ctr import),
# where it is docker.io/k8s-probe/pause:local = containerd's sandbox_image.
set -euo pipefail
WORK=${1:-/tmp/k8s-probe/pause}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$WORK" && cd "$WORK"
cp "$HERE/pause.go" main.go
[ -f go.mod ] || printf 'module k8sprobe/pause\ngo 1.23\n' > go.mod
CGO_ENABLED=0 nice -n 19 ionice -c3 go build -trimpath -ldflags "-s -w" -o pause .
tar -c pause | docker import --change 'ENTRYPOINT ["/pause"]' - k8s-probe/pause:local
