"""Nightly runs plan from the previous version's item facts, joined by key (transforms/item_facts.py).

- the facts are read from the items and ``item_failures`` tables as a PCollection; the failures
  parts (one record per dropped row) are never read back;
- a nightly run whose base lost its failures parts still reuses, retries and gives up as before;
- a failed video's facts are written to ``item_failures`` (fingerprint, reason, attempts);
- a format-2 base (no ``item_failures``) still works: its failed videos are decoded again as new,
  and the run says so in one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from dataformat.format import FAILURE_PART_PATTERN, ITEM_FAILURES_TABLE, ITEMS_TABLE, SEQUENCES_TABLE
from pipeline import versions
from pipeline.cli import main as videorec
from pipeline.inspect import verify_dataset
from transforms.failures import failure
from transforms.item_facts import ItemFacts, ReadPreviousItems, item_failures_table
from transforms.item_shards import EncodedItem, ItemRow
from transforms.reuse import PlanDecodes
from transforms.tables import items_table, write_table_part

BROKEN = "3"
"""The item whose video is replaced by bytes no decoder opens."""


def write_version(folder: Path) -> str:
    """A version with items a, b (fingerprints fp-a, fp-b), failed videos c (1 attempt) and d
    (2 attempts), and a failures part that is not JSON at all."""
    version = str(folder)
    rows = [
        ItemRow(item_id, index, None, 3, EncodedItem(item_id, fingerprint=f"fp-{item_id}"), None)
        for index, item_id in enumerate(["a", "b"], start=1)
    ]
    failed = [
        {**failure("item", "decode", "corrupt", "bad", item_id="c"), "fingerprint": "fp-c", "attempts": 1},
        {**failure("item", "decode", "timeout", "slow", item_id="d"), "fingerprint": "fp-d", "attempts": 2},
    ]
    tables = {
        ITEMS_TABLE: [write_table_part(version, ITEMS_TABLE, 0, items_table(rows))["path"]],
        ITEM_FAILURES_TABLE: [
            write_table_part(version, ITEM_FAILURES_TABLE, 0, item_failures_table(failed))["path"]
        ],
    }
    (folder / FAILURE_PART_PATTERN.format(0)).parent.mkdir()
    (folder / FAILURE_PART_PATTERN.format(0)).write_bytes(b"per-row records: never read back\n")
    counts = {
        **{"rows_read": 0, "rows_used": 0, "rows_dropped": {}, "users_seen": 0, "users_kept": 0},
        **{"users_dropped": {}, "items_seen": 4, "items_encoded": 2},
        "items_failed": {"corrupt": 1, "timeout": 1},
    }
    manifest = {
        **{"format_version": 3, "train_frames": "reference", "dataset_version": "v1"},
        **{"num_items": 2, "num_users": 0, "shards": {"items": [], "train": []}, "counts": counts},
        "tables": {**tables, SEQUENCES_TABLE: []},
        "failures": [FAILURE_PART_PATTERN.format(0)],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))  # sound: a base version is checked
    return version


def test_previous_items_come_from_the_tables_and_are_joined_by_key(tmp_path):
    version = write_version(tmp_path / "v1")
    current = {"a": "fp-a", "b": "fp-b2", "c": "fp-c", "d": "fp-d", "e": "fp-e"}
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        previous = pipeline | "Read" >> ReadPreviousItems(version)
        assert_that(
            previous,
            equal_to(
                [
                    ("a", ItemFacts("fp-a", "ok", 1)),
                    ("b", ItemFacts("fp-b", "ok", 1)),
                    ("c", ItemFacts("fp-c", "corrupt", 1)),
                    ("d", ItemFacts("fp-d", "timeout", 2)),
                ]
            ),
            label="Facts",
        )
        planned = (
            {
                "uri": pipeline | "Uris" >> beam.Create([(i, f"{i}.mp4") for i in current]),
                "fingerprint": pipeline | "Fingerprints" >> beam.Create(list(current.items())),
                "previous": previous,
            }
            | beam.CoGroupByKey()
            | beam.ParDo(PlanDecodes(max_attempts=2)).with_outputs(
                "reused", "attempts", "given_up", main="decode"
            )
        )
        # a has no frames recorded here, so it is decoded (as the old code did); b changed, c is
        # retried (attempt 2), d reached --max-attempts 2, e is new
        assert_that(planned.decode, equal_to([(i, f"{i}.mp4") for i in ("a", "b", "c", "e")]), label="Decode")
        assert_that(
            planned.attempts,
            equal_to([("a", ("fp-a", 1)), ("b", ("fp-b2", 1)), ("c", ("fp-c", 2)), ("e", ("fp-e", 1))]),
            label="Attempts",
        )
        assert_that(
            planned.given_up | beam.Map(lambda r: (r["item_id"], r["reason"], r["attempts"])),
            equal_to([("d", "timeout", 2)]),
            label="GivenUp",
        )


def test_a_first_version_has_no_previous_items():
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        assert_that(pipeline | ReadPreviousItems(None), equal_to([]))


# ---------------------------------------------------------------------------------------------- end to end


def nightly(capsys, synth: Path, tmp_path: Path):
    """A root, its videos (one permanently broken) and a function running one nightly ingest:
    ``(exit status, stderr, published version folder)``."""
    videos = tmp_path / "videos"
    shutil.copytree(synth / "videos", videos)
    (videos / f"{BROKEN}.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(3000))
    root = tmp_path / "root"
    argv = ["ingest", "--interactions", str(synth / "pairs.csv"), "--videos", str(videos)]
    argv += ["--dataset-root", str(root), "--max-attempts", "3", "--frame-size", "32"]
    argv += ["--direct_running_mode=in_memory", "--direct_num_workers=1"]

    def run_once():
        status = videorec(argv)
        return status, capsys.readouterr().err, Path(versions.resolve_latest(root))

    return run_once


def item_failures(version: Path) -> list[dict]:
    manifest = json.loads((version / "manifest.json").read_text())
    rows = []
    for path in manifest["tables"][ITEM_FAILURES_TABLE]:
        rows += pq.read_table(version / path).to_pylist()
    return rows


def stats(version: Path) -> tuple[int, int, int]:
    run = json.loads((version / "run_stats.json").read_text())
    return run["videos_decoded"], run["videos_reused"], run["videos_retried"]


def test_failed_videos_are_kept_apart_and_a_base_without_failure_records_still_plans(synth, tmp_path, capsys):
    run_once = nightly(capsys, synth, tmp_path)
    status, err, first = run_once()
    assert status == 0, err
    (row,) = item_failures(first)
    assert (row["item_id"], row["reason"], row["attempts"]) == (BROKEN, "corrupt", 1)
    assert row["fingerprint"].startswith("fp1-")
    assert verify_dataset(str(first)) == []

    for part in first.glob("failures/*"):  # the next run must not need the per-row records
        part.unlink()
    status, err, second = run_once()
    assert status == 0, err
    assert stats(second) == (1, 7, 1)  # only the broken video is decoded again: its second attempt
    (row,) = item_failures(second)
    assert (row["item_id"], row["attempts"]) == (BROKEN, 2)
    assert "is format" not in err


def test_a_format_2_base_still_works_and_its_failed_videos_start_again(synth, tmp_path, capsys):
    run_once = nightly(capsys, synth, tmp_path)
    status, err, first = run_once()
    assert status == 0, err
    manifest = json.loads((first / "manifest.json").read_text())
    for part in manifest["tables"].pop(ITEM_FAILURES_TABLE):  # what format 2 wrote: no such table
        (first / part).unlink()
    manifest["table_files"].pop(ITEM_FAILURES_TABLE)
    manifest.pop("train_frames", None)
    (first / "manifest.json").write_text(json.dumps({**manifest, "format_version": 2}))

    status, err, second = run_once()
    assert status == 0, err
    assert f"the base version {first} is format 2" in err and "decoded again as new (attempt 1)" in err
    assert stats(second) == (1, 7, 0)  # reused as before; the broken video counts as new, not retried
    (row,) = item_failures(second)
    assert (row["item_id"], row["attempts"]) == (BROKEN, 1)
