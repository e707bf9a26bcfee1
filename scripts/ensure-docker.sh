#!/usr/bin/env bash
# Make sure Docker is ready for the course's container tests (chapter 02).
#
# Three cases:
#   - `docker info` already works (a laptop with Docker Desktop / Docker Engine):
#     nothing to do.
#   - We are root on Debian with apt-get (the course's CI machines): install
#     docker.io, start dockerd in the background (log: /var/log/course-dockerd.log),
#     wait until it answers, and make the local base image (no registry there;
#     see scripts/docker-base-image.sh).
#   - Anything else (a learner's laptop without Docker, or without root): never
#     install anything; say what is wrong and how to fix it. The Docker tests then
#     skip with the same reason. When the CI variable is set, missing Docker is a
#     failure instead: CI must run every test.
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/course-dockerd.log}
DOCKERD_WAIT_SECONDS=${DOCKERD_WAIT_SECONDS:-90}

TOOL=docker
SKIPPED="the tests marked 'docker' will be skipped."
# shellcheck source=scripts/provision.sh
source scripts/provision.sh

docker_answers() { command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; }

start_dockerd() {
  say "starting dockerd in the background (log: $DOCKERD_LOG)"
  # setsid + nohup: the daemon outlives `make test` like a system service would,
  # and is not killed with make's process group.
  setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  local waited=0
  until timeout 10 docker info >/dev/null 2>&1; do
    if [ "$waited" -ge "$DOCKERD_WAIT_SECONDS" ]; then
      echo "---- last lines of $DOCKERD_LOG ----" >&2
      tail -n 20 "$DOCKERD_LOG" >&2 || true
      unavailable "dockerd did not answer within ${DOCKERD_WAIT_SECONDS}s." \
                  "read $DOCKERD_LOG; raise DOCKERD_WAIT_SECONDS if the machine is just slow."
    fi
    sleep 1; waited=$((waited + 1))
  done
  say "dockerd is up after ${waited}s"
}

if ! docker_answers; then
  if ! can_provision; then
    if ! command -v docker >/dev/null 2>&1; then
      unavailable "Docker is not installed (no 'docker' command on PATH)." \
                  "install Docker Desktop (macOS/Windows) or Docker Engine (Linux: https://docs.docker.com/engine/install/)."
    fi
    reason=$(timeout 20 docker info 2>&1 >/dev/null | grep -v '^WARNING' | grep -iE 'cannot connect|permission denied|error' | head -n 1 || true)
    case "$reason" in
      *"permission denied"*)
        unavailable "you may not use the Docker daemon: $reason" \
                    "add yourself to the docker group ('sudo usermod -aG docker \$USER'), then log out and in again." ;;
      *)
        unavailable "the Docker daemon is not reachable: ${reason:-docker info did not answer}" \
                    "start Docker Desktop, or on Linux 'sudo systemctl start docker'; if DOCKER_HOST is set, check where it points." ;;
    esac
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    say "installing docker.io with apt-get (about a minute)"
    apt_get update
    apt_get install -y --no-install-recommends docker.io
  fi
  # The package may have started the daemon itself (on machines with an init system).
  docker_answers || start_dockerd
fi

# On the machines we provision there is no image registry: make the base image
# locally (unless MNIST_BASE_IMAGE names another base for the tests).
if can_provision && [ -z "${MNIST_BASE_IMAGE:-}" ]; then
  scripts/docker-base-image.sh
fi
