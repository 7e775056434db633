#!/usr/bin/env bash
# Try the newest releases that setup.py's ranges allow before the lock moves to them.
#   bash scripts/update_lock.sh           install them in a temporary venv, run the ingest, runner and trainer
#                                         tests there, and show how they differ from requirements.lock
#   bash scripts/update_lock.sh --write   the same; when the tests pass, write requirements.lock from that venv
# Then run the whole suite on the new lock (bash scripts/test.sh). docs/INGEST.md, "Upgrading Beam and the lock",
# says what to check in Beam's changelog first.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
write=0
[ "${1:-}" = "--write" ] && write=1
venv=$(mktemp -d -t videorec-newest-XXXXXX)
trap 'rm -rf "$venv"' EXIT
echo "==> newest allowed releases into $venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip setuptools
"$venv/bin/python" -m pip install --quiet -e ".[dev,bench]"
echo "==> how they differ from requirements.lock"
"$venv/bin/python" scripts/lock_diff.py requirements.lock || true
echo "==> ingest, runner and trainer tests on them"
"$venv/bin/python" -m pytest -q -x -p no:cacheprovider tests/test_beam_support.py tests/test_local_runner.py \
  tests/test_runner_buffers.py tests/test_ingest.py tests/test_trainer.py tests/test_resume.py
if [ "$write" = 1 ]; then
  {
    grep '^#' requirements.lock | grep -v '^# bootstrap:'
    echo "# bootstrap: $("$venv/bin/python" -m pip freeze --all | grep -E '^(pip|setuptools|wheel)==' | tr '\n' ' ')" \
      "(the installers; not in pip freeze, installed first by setup_venv.sh)"
    "$venv/bin/python" -m pip freeze --exclude-editable
  } > requirements.lock.new
  mv requirements.lock.new requirements.lock
  echo "==> wrote requirements.lock; now: rm -rf .venv && bash scripts/test.sh"
fi
