"""Reconciliation: counts, shard summaries and the files beside them (issue 21, items 6 and 8)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from transforms.manifest import ReconciliationError, reconcile

REPO_ROOT = Path(__file__).resolve().parents[1]

BROKEN_COUNTS = {
    "rows_read": 10,
    "rows_used": 9,
    "rows_dropped": {},
    "items_seen": 2,
    "items_encoded": 2,
    "items_failed": {},
    "users_seen": 1,
    "users_kept": 1,
    "users_dropped": {},
}


def test_a_reconciliation_failure_is_not_an_assertion():
    """An ``AssertionError`` means "an assert statement failed", the kind ``python -O`` removes and
    handlers for test failures catch; reconciliation is a check the job always makes."""
    with pytest.raises(ReconciliationError, match="rows: 10 seen != 9 accounted for") as caught:
        reconcile(BROKEN_COUNTS)
    assert not isinstance(caught.value, AssertionError)
    assert isinstance(caught.value, RuntimeError)


def test_reconciliation_raises_under_python_dash_o():
    script = (
        "from transforms.manifest import reconcile\n"
        f"counts = {BROKEN_COUNTS!r}\n"
        "try:\n"
        "    reconcile(counts)\n"
        "except AssertionError:\n"
        "    print('swallowed as an assertion')\n"
        "    raise SystemExit(0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-O", "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "swallowed" not in done.stdout
    assert "ReconciliationError: counts do not reconcile: rows: 10 seen != 9 accounted for" in done.stderr
