#!/usr/bin/env bash
# The whole test suite, as a new user (and CI) runs it: installs what it needs into .venv
# (and Chromium through apt-get for the dashboard test), then lint, types, architecture, tests.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo -n"; fi
    echo "installing chromium for the dashboard test (apt-get)"
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null; }; then
      echo "could not install chromium: the dashboard test will be skipped"
    fi
  else
    echo "no apt-get here to install chromium: the dashboard test will be skipped"
  fi
fi

echo "== dependency audit"
# pip-audit exits 1 on any known vulnerability; scripts/audit.py fails only on those with a fixed
# release (and on a report it cannot read, e.g. when pip-audit itself could not run).
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
.venv/bin/pip-audit --format json --skip-editable --progress-spinner off --output "$report" || true
.venv/bin/python scripts/audit.py "$report"

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy (strict)"
.venv/bin/mypy
.venv/bin/mypy --strict scripts/audit.py
echo "== import contracts"
.venv/bin/lint-imports
echo "== pytest"
.venv/bin/python -m pytest "$@"
