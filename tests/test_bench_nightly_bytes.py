"""benchmarks/bench_nightly_bytes.py at a tiny size: both layouts measured, the report's shape holds."""

from __future__ import annotations

import json

import pytest

from benchmarks.bench_nightly_bytes import main
from dataformat.format import ITEM_SHARDS, TRAIN_FRAMES_LAYOUTS, TRAIN_SHARDS


@pytest.mark.slow
def test_the_benchmark_reports_full_and_nightly_bytes_for_both_layouts(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--items", "10", "--users", "24", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["inputs"]["new_items"] == 1 and results["inputs"]["new_rows"] >= 1
    for layout in TRAIN_FRAMES_LAYOUTS:
        full, nightly = results[layout]["full"], results[layout]["nightly"]
        assert (full["videos_decoded"], full["items_reused"]) == (10, 0)
        assert (nightly["videos_decoded"], nightly["items_reused"]) == (1, 10)
        for run in (full, nightly):
            stored = run["stored"]
            assert stored["total"] == sum(v for k, v in stored.items() if k != "total")
            assert min(stored[ITEM_SHARDS], stored[TRAIN_SHARDS], stored["tables"], run["write_calls"]) > 0
        assert results[layout]["nightly_vs_full_bytes"] == round(
            nightly["stored"]["total"] / full["stored"]["total"], 3
        )
    reference, embedded = results["reference"]["full"]["stored"], results["embedded"]["full"]["stored"]
    assert reference[ITEM_SHARDS] == embedded[ITEM_SHARDS]  # the same item shards in both layouts
    assert reference[TRAIN_SHARDS] * 10 < embedded[TRAIN_SHARDS]
    assert "| reference | nightly / full |" in capsys.readouterr().out
