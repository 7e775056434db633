"""benchmarks/bench_compaction.py at a tiny size: both arms measured night by night, compaction copies."""

from __future__ import annotations

import json

import pytest

from benchmarks.bench_compaction import main


@pytest.mark.slow
def test_the_benchmark_compares_a_compacted_root_with_one_never_compacted(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(["--items", "12", "--users", "40", "--nights", "1", "--changed", "0.7", "--json", str(out)]) == 0
    )
    results = json.loads(out.read_text())
    compact, never = results["compact"], results["never"]
    assert len(compact) == len(never) == 2
    assert compact[0]["decoded"] == never[0]["decoded"] == 12
    # night 1: 9 of 12 videos changed; the 3 left are a small part of the first version
    assert compact[1]["decoded"] == never[1]["decoded"] == 9 and compact[1]["reused"] == 3
    assert (compact[1]["compacted"], never[1]["compacted"]) == (3, 0)
    assert (compact[1]["versions"], never[1]["versions"]) == (1, 2)  # --keep 1 pruned the first
    assert compact[1]["root_bytes"] < never[1]["root_bytes"]
    for run in compact + never:
        assert run["root_vs_live"] == round(run["root_bytes"] / run["live_frame_bytes"], 3)
    assert "root / frames in use" in capsys.readouterr().out
