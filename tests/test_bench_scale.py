"""The measuring parts of benchmarks/bench_scale.py and benchmarks/stress_ingest.py, on real processes
and a real (small) ingest."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from benchmarks.bench_scale import REPO, Code, ingest, linear_fit, reconciles, run_measured
from benchmarks.gen_logs import LogShape, generate
from benchmarks.stress_ingest import describe_missing, expected_users

GRANDCHILD = textwrap.dedent(
    """
    import subprocess, sys
    big = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(1.5)"
    # Named like a Beam SDK worker process, which is how bench_scale tells workers from the driver.
    child = subprocess.Popen([sys.executable, "-c", big, "apache_beam.runners.worker.sdk_worker_main"])
    sum(range(3_000_000))
    child.wait()
    """
)


def test_peak_rss_is_the_largest_process_of_the_tree_and_cpu_includes_descendants(tmp_path):
    run = run_measured([sys.executable, "-c", GRANDCHILD], tmp_path, {}, tmp_path / "log", 0.05)
    assert run["returncode"] == 0
    assert 300 <= run["peak_rss_largest_mb"] < 400  # the grandchild's 300 MB, not the parent's
    assert run["peak_rss_worker_mb"] == run["peak_rss_largest_mb"]
    assert run["peak_rss_driver_mb"] < 100 and run["peak_rss_tree_mb"] > run["peak_rss_largest_mb"]
    assert run["maxrss_reaped_mb"] >= 300  # rusage saw the reaped grandchild too
    assert run["cpu_s"] > 0 and run["largest_process"] == "worker"


def test_a_failing_command_is_reported_with_its_exit_code(tmp_path):
    run = run_measured([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, {}, tmp_path / "log", 0.05)
    assert run["returncode"] == 3


def counts(**changes) -> dict:
    base = {
        "rows_read": 10,
        "rows_used": 7,
        "rows_dropped": {"duplicate": 2, "user_too_few_interactions": 1},
        "items_seen": 4,
        "items_encoded": 4,
        "items_failed": {},
        "users_seen": 3,
        "users_kept": 2,
        "users_dropped": {"too_few_interactions": 1},
    }
    return {**base, **changes}


def test_reconciliation_needs_rows_items_and_users_to_add_up():
    assert reconciles(counts())
    assert not reconciles(counts(rows_used=6))
    assert not reconciles(counts(items_failed={"corrupt": 1}))
    assert not reconciles(counts(users_kept=1))


def test_linear_fit_and_its_largest_residual():
    fit = linear_fit([1, 2, 3], [12.0, 14.0, 16.0])
    assert fit["fixed"] == pytest.approx(10.0) and fit["slope"] == pytest.approx(2.0)
    assert fit["max_relative_residual"] == 0.0
    assert linear_fit([1, 2, 4], [10.0, 20.0, 30.0])["max_relative_residual"] > 0.05
    assert linear_fit([5], [1.0]) is None


def test_missing_users_are_placed_in_index_order():
    expected = np.arange(1, 1001)
    lost = expected[900::2]  # every other user among the last 10 %
    found = np.setdiff1d(expected, lost)
    summary = describe_missing(expected, found)
    assert summary["missing"] == 50 and summary["unexpected"] == 0 and summary["duplicated"] == 0
    assert summary["rank_range_fraction"] == [0.9, 0.999]
    assert summary["density_in_range"] == pytest.approx(50 / 99, abs=1e-3)
    assert summary["missing_even_rank"] == 50 and summary["missing_odd_id"] == 50
    assert describe_missing(expected, expected) == {"missing": 0, "unexpected": 0, "duplicated": 0}
    assert describe_missing(expected, None) is None


@pytest.mark.slow
def test_expected_users_match_a_real_ingest_and_its_outputs(tmp_path):
    """The stress harness's reference (computed from the CSV) agrees with the ingest's own counts."""
    from benchmarks.stress_ingest import sequence_table_users, train_shard_users

    csv = tmp_path / "pairs.csv"
    generate(LogShape(rows=3_000, users=300, items=200, seed=5, repeat_fraction=0.2), csv)
    users, first_seen, rows = expected_users(csv, 5)
    run = ingest(Code("project", REPO), [f"--interactions={csv}"], tmp_path / "out", 1, 0.2)
    assert run["returncode"] == 0 and run["reconciled"], run["error"]
    assert run["counts"]["users_dropped"]  # repeats pushed some users under 5 rows
    assert run["counts"]["users_kept"] == users.size and run["counts"]["rows_used"] == rows
    assert run["rows_per_s"] > 0 and run["peak_rss_driver_mb"] > 50 and run["peak_rss_worker_mb"] > 50
    assert describe_missing(users, sequence_table_users(tmp_path / "out"))["missing"] == 0
    assert describe_missing(users, train_shard_users(tmp_path / "out"))["missing"] == 0
    assert sorted(first_seen) == list(users) and list(first_seen) != list(users)


def test_the_parquet_input_holds_the_csv_rows_and_the_ratios_compare_the_two_runs(tmp_path):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from benchmarks.bench_scale import id_only_input, parquet_input, parquet_ratios

    data = id_only_input(tmp_path, 3000, 9.5, 100, seed=1)
    path = parquet_input(data)
    assert pq.read_table(path).equals(pacsv.read_csv(data["csv"]))
    runs = [
        {"rows": 3000, "format": "csv", "peak_rss_largest_mb": 200.0, "wall_s": 10.0},
        {"rows": 3000, "format": "parquet", "peak_rss_largest_mb": 220.0, "wall_s": 12.0},
    ]
    assert parquet_ratios(runs) == ["- 3,000 rows: Parquet / CSV largest process x1.10, wall x1.20"]


@pytest.mark.slow
def test_nightly_mode_measures_a_first_and_a_nightly_run_that_reuses_every_video(tmp_path):
    from benchmarks.bench_scale import nightly_input, nightly_ratios, nightly_runs

    data = nightly_input(tmp_path, 3_000, 9.5, 40, seed=1, pool=10)
    links = sorted(data["videos_dir"].iterdir())
    pool = {path.stat().st_ino for path in (tmp_path / "synth-10v-s1" / "videos").glob("*.mp4")}
    assert len(links) == 40 and {path.stat().st_ino for path in links} == pool  # hard links to the pool
    assert len(data["new_rows_csv"].read_text().splitlines()) == 300 + 1
    root = tmp_path / "root"
    first, nightly = nightly_runs(Code("project", REPO), data, root, 1, 0.2)
    assert first["reconciled"] and nightly["reconciled"], (first["error"], nightly["error"])
    assert nightly["counts"]["rows_read"] == first["counts"]["rows_read"] + 300
    encoded = first["counts"]["items_encoded"]
    assert first["videos_decoded"] >= encoded > 0 and first["videos_reused"] == 0
    assert nightly["videos_decoded"] == 0 and nightly["videos_reused"] == encoded
    assert not root.exists()  # removed after the pair
    runs = [{**first, "rows": 3_000}, {**nightly, "rows": 3_000}]
    runs += [{**run, "rows": 6_000, "peak_rss_largest_mb": 2 * run["peak_rss_largest_mb"]} for run in runs]
    assert nightly_ratios(runs) == [
        "- project, first run: largest process x2.00 from 3,000 to 6,000 rows",
        "- project, nightly run: largest process x2.00 from 3,000 to 6,000 rows",
    ]
