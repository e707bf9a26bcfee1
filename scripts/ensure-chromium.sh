#!/usr/bin/env bash
# Make sure a headless Chromium and playwright-core are ready for the browser test
# (tests/test_browser.py: JupyterLab runs chapter 07 in a real browser).
#
# Three cases, as scripts/ensure-docker.sh:
#   - /usr/bin/chromium (or $CHROMIUM) exists: nothing to install.
#   - We are root on Debian with apt-get (the course's CI machines): install
#     Debian's chromium package.
#   - Anything else (a laptop without Chromium, or without root): never install
#     anything; say what is wrong and how to fix it. The browser test then skips
#     with the same reason. When the CI variable is set, this is a failure instead.
# Then `npm ci` installs the pinned playwright-core from tests/browser/package-lock.json.
# Playwright never downloads a browser here: the test drives Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

TOOL=chromium
SKIPPED="tests/test_browser.py will be skipped."
# shellcheck source=scripts/provision.sh
source scripts/provision.sh

if [ ! -x "$CHROMIUM" ]; then
  if ! can_provision; then
    unavailable "no Chromium at $CHROMIUM." \
                "install it (Debian/Ubuntu: 'sudo apt-get install chromium') or set CHROMIUM=/path/to/chromium."
  fi
  say "installing Debian's chromium with apt-get (a minute or two)"
  apt_get update
  apt_get install -y --no-install-recommends chromium
  [ -x "$CHROMIUM" ] || unavailable "apt-get installed chromium, but $CHROMIUM is missing." \
                                    "set CHROMIUM=/path/to/chromium."
fi

if ! command -v npm >/dev/null 2>&1; then
  if can_provision; then
    say "installing nodejs and npm with apt-get"
    apt_get install -y --no-install-recommends nodejs npm
  else
    unavailable "npm is not installed (needed for playwright-core)." "install Node.js 18 or newer."
  fi
fi

installed_matches_pin() {
  (cd tests/browser && node -e '
    const want = require("./package.json").dependencies["playwright-core"];
    const have = require("./node_modules/playwright-core/package.json").version;
    process.exit(want === have ? 0 : 1);' 2>/dev/null)
}

if ! installed_matches_pin; then
  say "npm ci in tests/browser (pinned playwright-core; no browser download)"
  # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: belt and braces, playwright-core itself downloads nothing.
  if ! (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error); then
    unavailable "npm ci in tests/browser failed (output above)." "check access to the npm registry, then rerun."
  fi
fi
say "chromium: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
