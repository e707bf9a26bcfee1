#!/usr/bin/env bash
# Start the test cluster's Go builds (the slow part of infra/k8s/build.sh: about 8-14 min
# cold on 2 cores, seconds when cached) in the background, so that they overlap with
# creating the venv, installing Docker and the library tests. `make test` calls this first.
# kustomize comes first (about 1 min cold): tests/test_room_kustomize.py needs it early, and
# build.sh's lock would otherwise keep it waiting for the whole build.
#
# Only where the cluster can run (Linux, root, Go installed): elsewhere the cluster tests
# skip and say why, and a laptop should not spend ten minutes compiling for nothing.
# The build is niced (build.sh), so it takes only the CPU the tests leave idle; the pytest
# fixture that starts the cluster runs build.sh again, which waits on the same lock and
# then finds everything cached. Components that need the venv (etcd) or apt and Docker
# (cni, pause, local-path-helper) are left to that second run, so nothing here races with apt or pip.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then PATH=/usr/local/go/bin:$PATH; fi  # as build.sh
if [ "$(uname -s)" != Linux ] || [ "$(id -u)" != 0 ] || ! command -v go >/dev/null 2>&1; then
  exit 0
fi
mkdir -p test-artifacts
echo "==> building the test cluster's Kubernetes components in the background (log: test-artifacts/k8s-build.log)"
nohup infra/k8s/build.sh kustomize kubernetes training-operator coredns local-path > test-artifacts/k8s-build.log 2>&1 < /dev/null &
