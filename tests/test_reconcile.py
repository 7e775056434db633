"""Reconciliation: counts, shard summaries and the files beside them (issue 21, items 6 and 8)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dataformat.format import DEFAULT_TRAIN_FRAMES, train_shard_pattern
from pipeline.ingest_job import prepare, run_job
from pipeline.inspect import verify_dataset
from pipeline.root_run import run_on_root
from pipeline.staged_output import remove_unlisted_files, run_on_output
from pipeline.summary import format_summary
from transforms import storage
from transforms.manifest import ReconciliationError, reconcile
from transforms.reconcile import check_dataset_files, check_summaries

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL = ["--direct_running_mode=in_memory", "--direct_num_workers=1", "--quiet"]
FIRST_TRAIN_SHARD = train_shard_pattern(DEFAULT_TRAIN_FRAMES).format(0)
"""The first train shard's name in the default layout (``.tar``, or ``.tar.gz`` for ``reference``)."""

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


# ---------------------------------------------------------------------------------------------- summaries


def _shard(kind: str, number: int, samples: int) -> dict:
    return {
        "path": f"{kind}/{kind}-{number:06d}.tar",
        "samples": samples,
        "bytes": 1024 * samples,
        "sha256": "0",
    }


def _part(table: str, bucket: int, rows: int, planned: dict, train_samples: int | None = None) -> dict:
    part = {"table": table, "path": f"tables/{table}/part-{bucket:05d}.parquet", "rows": rows, "bytes": 9}
    part |= {"sha256": "0", "shards": planned}
    if train_samples is not None:
        part |= {"interactions": rows * 4, "train_samples": train_samples}
    return part


def summaries() -> dict:
    """What the writers of a job with 2 item and 2 user buckets report: bucket 0 of the users cut 2
    train shards, bucket 1 one; one user of bucket 1 has no training window."""
    items = [_shard("items", 0, 3), _shard("items", 1, 2)]
    train = [_shard("train", 0, 4), _shard("train", 1, 1), _shard("train", 2, 3)]
    tables = {
        "items": [
            _part("items", 0, 3, {items[0]["path"]: 3}),
            _part("items", 1, 2, {items[1]["path"]: 2}),
        ],
        "sequences": [
            _part("sequences", 0, 5, {train[0]["path"]: 4, train[1]["path"]: 1}, train_samples=5),
            _part("sequences", 1, 4, {train[2]["path"]: 3}, train_samples=3),
        ],
    }
    failures = [{"path": "failures/part-00000.jsonl", "records": 1, "bytes": 5, "sha256": "0"}]
    return {"item_shards": items, "train_shards": train, "tables": tables, "failures": failures}


def test_summaries_that_add_up_pass():
    check_summaries(**summaries())


def test_a_duplicated_shard_summary_fails_with_a_reconciliation_message():
    found = summaries()
    found["train_shards"].append(dict(found["train_shards"][1]))
    with pytest.raises(ReconciliationError, match=r"summarised more than once: train/train-000001\.tar"):
        check_summaries(**found)


@pytest.mark.parametrize("lost", [0, 1, 2])
def test_a_missing_shard_summary_fails_with_a_reconciliation_message(lost):
    found = summaries()
    path = found["train_shards"].pop(lost)["path"]
    with pytest.raises(ReconciliationError, match=rf"written by their bucket but never summarised: {path}"):
        check_summaries(**found)


def test_a_shard_with_fewer_samples_than_its_bucket_cut_fails():
    found = summaries()
    found["item_shards"][0]["samples"] = 2
    with pytest.raises(
        ReconciliationError, match=r"items-000000\.tar: summary says 2 samples, its bucket cut 3"
    ):
        check_summaries(**found)


def test_a_shard_no_bucket_planned_and_train_totals_that_differ_from_users_with_a_window_fail():
    found = summaries()
    found["train_shards"].append(_shard("train", 3, 2))
    with pytest.raises(ReconciliationError) as caught:
        check_summaries(**found)
    assert "summarised but planned by no bucket: train/train-000003.tar" in str(caught.value)
    assert "train shards hold 10 samples, 8 kept users have a training window" in str(caught.value)


def test_a_part_summary_without_its_planned_shards_fails():
    found = summaries()
    del found["tables"]["sequences"][1]["shards"]
    with pytest.raises(ReconciliationError, match=r"part-00001\.parquet: its summary names no planned train"):
        check_summaries(**found)


# ---------------------------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """An interaction log of 30 users (IDs only), so the train shards come in several buckets."""
    folder = tmp_path_factory.mktemp("log")
    lines = ["user,item,timestamp"]
    for user in range(30):
        lines += [f"u{user},i{(user * 7 + t) % 11},{1000 + t}" for t in range(3 + user % 4)]
    (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
    return folder / "pairs.csv"


def _argv(pairs: Path, *where: str) -> list[str]:
    return ["--interactions", str(pairs), *where, "--shard-max-samples", "4", *LOCAL]


def _run_planting(argv: list[str], plant: dict[str, bytes]):
    """``videorec ingest ARGV`` as ``pipeline.ingest_job.run`` runs it, with ``plant`` (relative path ->
    bytes) put into the folder the job writes before the job starts."""
    config, beam_args, runner, quiet = prepare(argv)

    def job(staged, reuse=None):
        for relative, data in plant.items():
            target = Path(staged.output) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return run_job(staged, beam_args, runner, quiet, reuse)

    if config.dataset_root is None:
        return run_on_output(config, job, quiet)
    return run_on_root(config, job, quiet)


def test_a_leftover_attempt_of_a_listed_shard_is_removed_and_counted(pairs, tmp_path, capsys):
    out = tmp_path / "out"
    leftover = f"{FIRST_TRAIN_SHARD}.tmp-4242-1"
    result = _run_planting(_argv(pairs, "--output", str(out)), {leftover: b"half of an earlier attempt"})
    assert not (out / leftover).exists()
    assert len(result.manifest["shards"]["train"]) > 2
    stats = json.loads((out / "run_stats.json").read_text())
    assert stats["leftover_files_removed"] == 1 and result.stats["leftover_files_removed"] == 1
    assert verify_dataset(str(out)) == []
    assert "leftovers   1 temporary file(s) of retried attempts removed" in format_summary(
        result.manifest, stats
    )


def test_a_shard_whose_summary_was_dropped_fails_the_run_before_publishing(pairs, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(
        Exception, match=r"data files that no summary lists: train/train-000777\.tar"
    ) as caught:
        _run_planting(_argv(pairs, "--output", str(out)), {"train/train-000777.tar": b"orphan"})
    assert isinstance(caught.value, ReconciliationError), repr(caught.value)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_nightly_version_with_an_unlisted_shard_is_not_published(pairs, tmp_path):
    root = tmp_path / "root"
    first = _run_planting(_argv(pairs, "--dataset-root", str(root)), {})
    latest = (root / "LATEST").read_text()
    with pytest.raises(Exception, match=r"no summary lists: train/train-000005\.tar\.tmp-1-2"):
        # the temporary of a shard no summary lists is not a leftover of a listed one
        _run_planting(_argv(pairs, "--dataset-root", str(root)), {"train/train-000005.tar.tmp-1-2": b"x"})
    assert (root / "LATEST").read_text() == latest
    assert sorted(p.name for p in (root / "versions").iterdir()) == [first.manifest["dataset_version"]]


def test_after_the_job_an_unlisted_file_fails_and_a_leftover_is_counted(pairs, tmp_path):
    out = tmp_path / "out"
    result = _run_planting(_argv(pairs, "--output", str(out)), {})
    (out / f"{FIRST_TRAIN_SHARD}.tmp-7-8").write_bytes(b"a straggler's attempt")
    (out / "tables" / "sequences" / "part-00099.parquet").write_bytes(b"no summary")
    with pytest.raises(ReconciliationError, match=r"no summary lists: tables/sequences/part-00099\.parquet"):
        remove_unlisted_files(str(out), result.manifest, quiet=True)
    assert (out / f"{FIRST_TRAIN_SHARD}.tmp-7-8").exists()  # nothing deleted before it failed
    (out / "tables" / "sequences" / "part-00099.parquet").unlink()
    assert remove_unlisted_files(str(out), result.manifest, quiet=True) == 1
    assert json.loads((out / "run_stats.json").read_text())["leftover_files_removed"] == 1
    assert verify_dataset(str(out)) == []


def test_a_listed_file_cut_short_or_missing_fails(pairs, tmp_path):
    out = tmp_path / "out"
    result = _run_planting(_argv(pairs, "--output", str(out)), {})
    shard = out / result.manifest["shards"]["train"][1]["path"]
    cut = shard.read_bytes()[: shard.stat().st_size // 2]
    shard.write_bytes(cut)
    with pytest.raises(
        ReconciliationError, match=rf"train-000001\.tar(\.gz)?: {len(cut)} bytes on storage, its summary says"
    ):
        check_dataset_files(str(out), result.manifest)
    shard.unlink()
    with pytest.raises(ReconciliationError, match=r"train-000001\.tar(\.gz)?: listed but not on storage"):
        check_dataset_files(str(out), result.manifest)


@pytest.mark.gcs
def test_on_gcs_an_unlisted_object_fails_and_a_listed_one_passes(pairs, tmp_path, gcs_emulator):
    out = tmp_path / "out"
    result = _run_planting(_argv(pairs, "--output", str(out)), {})
    gcs_emulator.make_bucket("reconcile")
    for path in out.rglob("*"):
        if path.is_file():
            storage.write_bytes(f"gs://reconcile/ds/{path.relative_to(out).as_posix()}", path.read_bytes())
    assert check_dataset_files("gs://reconcile/ds", result.manifest) == []
    storage.write_bytes("gs://reconcile/ds/items/items-000003.tar", b"orphan")
    with pytest.raises(ReconciliationError, match=r"no summary lists: items/items-000003\.tar"):
        check_dataset_files("gs://reconcile/ds", result.manifest)
