#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv with exactly the versions in requirements.lock,
# then install the project into it (editable). Both README commands and .ci/run start here.
# The lock is for CPython 3.11 on Linux x86_64; elsewhere this script stops and says how to install from ranges.
# Regenerate the lock: bash scripts/update_lock.sh --write (docs/INGEST.md, "Upgrading Beam and the lock").
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
lock=requirements.lock
platform=$("$python" -c 'import platform, sys; print(f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}-{platform.system()}-{platform.machine()}")')
if [ "$platform" != "cpython-3.11-Linux-x86_64" ]; then
  echo "setup_venv: error: $lock is for CPython 3.11 on Linux x86_64, this is $platform; use that platform," \
    "or install from setup.py's ranges into your own environment (pip install -e '.[dev]'), which is not the tested set" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
# This machine's pip config lists local wheel folders that may be absent; hide only that warning.
quiet_pip() { .venv/bin/python -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
echo "==> installing the locked set ($lock: $(grep -c '^[^#].*==' "$lock") packages, torch included; first time takes a few minutes)"
# The installers first, at the versions on the lock's "# bootstrap:" line.
read -r -a bootstrap <<<"$(sed -n 's/^# bootstrap: \([^(]*\).*/\1/p' "$lock")"
quiet_pip install --quiet --disable-pip-version-check "${bootstrap[@]}"
quiet_pip install --quiet -r "$lock"
PYTHONWARNINGS=ignore quiet_pip install --quiet --no-deps --no-build-isolation -e .
extras=$(.venv/bin/python scripts/lock_diff.py "$lock" --extras)
if [ -n "$extras" ]; then
  echo "==> removing packages that are not in $lock: $(echo "$extras" | tr '\n' ' ')"
  # shellcheck disable=SC2086
  quiet_pip uninstall --quiet --yes $extras
fi
if ! .venv/bin/python scripts/lock_diff.py "$lock"; then
  echo "setup_venv: error: .venv does not match $lock (above); delete .venv and run this again" >&2
  exit 1
fi
quiet_pip check >/dev/null
