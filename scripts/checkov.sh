#!/usr/bin/env bash
# Scan terraform/ with checkov, offline, from its own virtual environment. Arguments, when given,
# say what to scan instead (e.g. --framework dockerfile -f Dockerfile).
#
# checkov pins an older boto3 than the project's test dependencies, so it lives in
# .venv-checkov/ at the repository root (created on first use from PyPI). Exit status: checkov's
# own (0: no failed check), or 75 when checkov could not be installed (e.g. no package index).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CHECKOV_VENV:-$repo/.venv-checkov}"
python="${PYTHON:-python3}"
spec="${CHECKOV_SPEC:-checkov>=3.2,<4}"

if [[ ! -x "$venv/bin/checkov" ]]; then
  if ! "$python" -m venv "$venv" >&2 \
    || ! "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2; then
    echo "checkov.sh: could not install $spec into $venv" >&2
    exit 75
  fi
fi

cd "$repo"
if [[ $# -eq 0 ]]; then
  set -- -d terraform --framework terraform
fi
exec "$venv/bin/checkov" "$@" --quiet --compact --skip-download
