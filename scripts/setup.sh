#!/usr/bin/env bash
# Create (or refresh) the course's Python environment in .venv.
#
# Idempotent and quick when nothing changed: a stamp file records the hash of
# the dependency files, so a second run only checks it. Everything comes from
# PyPI; nothing else is downloaded (MNIST ships in data/).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$candidate; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "error: the course needs Python 3.11 (TensorFlow 2.21 wheels are pinned for it)." >&2
  echo "       Install it (pyenv install 3.11, apt install python3.11, or conda: environment.yml)" >&2
  echo "       or point PYTHON=/path/to/python3.11 at one." >&2
  exit 1
fi

stamp_value=$(cat requirements.txt constraints.txt pyproject.toml | sha256sum | cut -c1-16)
stamp_file=$VENV/.course-installed
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp_value" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
echo "==> installing pinned dependencies into $VENV (about a minute on first run)"
"$VENV/bin/python" -m pip install --quiet --upgrade pip==25.3 setuptools==80.9.0
"$VENV/bin/python" -m pip install --quiet -r requirements.txt -c constraints.txt
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
echo "$stamp_value" > "$stamp_file"
echo "==> environment ready: $VENV"
