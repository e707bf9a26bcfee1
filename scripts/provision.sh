# Shared by scripts/ensure-docker.sh and scripts/ensure-chromium.sh (sourced, not run).
#
# They follow one rule: on the course's CI machines (root on Debian, apt-get) a
# missing tool is installed; anywhere else nothing is ever installed, the problem
# and its fix are printed, and the tests that need the tool skip. When the CI
# variable is set, a missing tool is a failure instead: CI must run every test.
#
# The sourcing script sets TOOL (its name in messages) and SKIPPED (which tests skip).

say() { echo "==> $*"; }

# unavailable PROBLEM [FIX]: report, then exit (1 under CI, 0 elsewhere so tests skip).
unavailable() {
  echo "$TOOL: $1" >&2
  [ -n "${2:-}" ] && echo "        fix: $2" >&2
  if [ -n "${CI:-}" ]; then
    echo "error: CI is set, so the tests that need $TOOL must run; failing." >&2
    exit 1
  fi
  echo "note: $SKIPPED" >&2
  exit 0
}

can_provision() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ -r /etc/debian_version ]
}

# Run apt-get quietly; on failure show its output. DPkg::Lock::Timeout waits for
# another apt run instead of failing at once.
apt_get() {
  local log; log=$(mktemp)
  if ! DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q "$@" >"$log" 2>&1; then
    tail -n 20 "$log" >&2; rm -f "$log"
    unavailable "apt-get $* failed (output above)." "check the network and apt sources, then rerun."
  fi
  rm -f "$log"
}
