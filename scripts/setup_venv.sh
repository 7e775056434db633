#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install the project into it.
# Usage: scripts/setup_venv.sh EXTRAS     e.g. scripts/setup_venv.sh train   or   scripts/setup_venv.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
echo "==> installing videorec-pipeline[$extras] into .venv (torch comes in the train/dev extras; first time takes a few minutes)"
# This machine's pip config lists local wheel folders that may be absent; hide only that warning.
quiet_pip() { .venv/bin/python -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
quiet_pip install --quiet --upgrade pip
quiet_pip install --quiet -e ".[$extras]"
