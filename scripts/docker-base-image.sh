#!/usr/bin/env bash
# Build a local stand-in for python:3.11-slim-bookworm, for machines with no image
# registry (the course's CI). On a laptop you do not need this: the Dockerfile's
# default base, python:3.11-slim-bookworm, is pulled from Docker Hub.
#
#   scripts/docker-base-image.sh [--force] [TAG]      (default TAG: course-base:bookworm)
#
# How: debootstrap a minimal Debian 12 (whose python3 is 3.11) with python3-venv,
# pip and CA certificates, add this host's extra CA certificates (machines that
# reach PyPI through a TLS-inspecting proxy need them, else pip fails with
# CERTIFICATE_VERIFY_FAILED), and `docker import` the folder. Needs root
# (debootstrap makes device nodes and chroots). Skips if the image already exists.
set -euo pipefail

force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
TAG=${1:-course-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,python3-pip,ca-certificates

if [ "$force" = 0 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "==> base image $TAG already exists (scripts/docker-base-image.sh --force rebuilds it)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "error: building $TAG needs root (debootstrap). Run it with sudo, or build the" >&2
  echo "       course image from the official base instead: docker build -t mnist-course ." >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "==> installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends debootstrap >/dev/null 2>&1 ||
    { apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null &&
      apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends debootstrap >/dev/null; }
fi

root=$(mktemp -d /var/tmp/course-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
start=$SECONDS
echo "==> debootstrap --variant=minbase bookworm (+ $PACKAGES) from $MIRROR (about a minute)"
if ! debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" \
     >"$root.log" 2>&1; then
  tail -n 20 "$root.log" >&2
  echo "error: debootstrap failed (full log: $root.log). Is $MIRROR reachable?" >&2
  exit 1
fi
rm -f "$root.log"

# This host's extra CAs (e.g. a proxy's), trusted inside the image too.
shopt -s nullglob
extra=(/usr/local/share/ca-certificates/*.crt)
if [ ${#extra[@]} -gt 0 ]; then
  cp "${extra[@]}" "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1
fi
# Smaller image: no package lists or downloaded .debs.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb

echo "==> docker import -> $TAG"
# `docker import` keeps no environment: set PATH (else `ENV PATH=/x:$PATH` in a
# Dockerfile would drop /usr/bin) and point pip at the system CA bundle.
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' \
  --message "debootstrap --variant=minbase bookworm + $PACKAGES (scripts/docker-base-image.sh)" \
  - "$TAG" >/dev/null
echo "==> base image $TAG ready in $((SECONDS - start))s: $(docker run --rm "$TAG" python3 --version)"
