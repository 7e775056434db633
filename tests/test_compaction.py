"""Compaction: a nightly ``reference`` run stops pointing into an earlier version that is mostly dead.

Real ``--dataset-root`` ingests of synth videos: a first version, then a night on which most videos
changed. The unchanged items' samples are then a small part of the first version's item shards, so
the second version copies them (byte for byte, not decoded again) and no longer points into the
first, which ``prune --keep 1`` deletes; the second version reads back whole on its own. With
``--compact-below 0`` it points into the first, which prune keeps.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from dataformat import format as fmt
from dataformat.manifest import earlier_versions
from pipeline import inspect as inspect_cli
from pipeline import versions
from pipeline.main import run
from pipeline.options import parse
from pipeline.summary import format_summary
from tests.dataset_files import dataset_table
from transforms.compaction import CopyFromSparseVersions, reused_bytes, sparse_versions, version_of_ref
from transforms.item_shards import EncodedItem
from transforms.reconcile import ReconciliationError
from transforms.tar_shards import END_OF_ARCHIVE

QUICK = ["--frame-size", "32", "--direct_running_mode=in_memory", "--direct_num_workers=1", "--quiet"]
CHANGED = 10
"""Videos of the first version replaced before the second run (of 16 items)."""


def test_sparse_versions_are_those_used_below_the_fraction():
    version_bytes = {"A": 1000, "B": 1000}
    assert sparse_versions({"A": 499, "B": 500}, version_bytes, 0.5) == {"A"}
    assert sparse_versions({"A": 1, "B": 1}, version_bytes, 0.0) == frozenset()
    assert sparse_versions({}, version_bytes, 0.5) == frozenset()
    with pytest.raises(ReconciliationError, match="C"):
        sparse_versions({"C": 1}, version_bytes, 0.5)


def test_a_reused_item_counts_its_sample_bytes_against_its_version():
    item = EncodedItem(
        "7", "/r/versions/A/items/items-000001.tar", (3,), {}, 512, 2048, "fp", "../A/items/items-000001.tar"
    )
    assert version_of_ref(item.shard_ref) == "A"
    assert reused_bytes(item) == [("A", 2048)]
    assert reused_bytes(item._replace(shard_ref=None)) == []
    with pytest.raises(ValueError, match="earlier version"):
        version_of_ref("items/items-000001.tar")


def test_copy_from_sparse_versions_drops_the_refs_into_sparse_versions_only():
    def item(item_id: str, ref: str | None, size: int) -> EncodedItem:
        return EncodedItem(item_id, f"/r/{item_id}", (1,), {}, 0, size, "fp", ref)

    items = [
        item("a1", "../A/items/items-000000.tar", 100),  # A: 100 of 1,000 bytes in use
        item("b1", "../B/items/items-000000.tar", 300),  # B: 600 of 1,000 bytes in use
        item("b2", "../B/items/items-000001.tar", 300),
        item("new", None, 50),
    ]
    with BeamTestPipeline() as p:
        out = p | beam.Create(items) | CopyFromSparseVersions({"A": 1000, "B": 1000}, 0.5)
        assert_that(
            out | beam.Map(lambda i: (i.item_id, i.shard_ref)),
            equal_to(
                [
                    ("a1", None),
                    ("b1", "../B/items/items-000000.tar"),
                    ("b2", "../B/items/items-000001.tar"),
                    ("new", None),
                ]
            ),
        )
    with BeamTestPipeline() as p:  # no reused item at all: nothing to count, nothing copied
        out = p | beam.Create([item("new", None, 50)]) | CopyFromSparseVersions({"A": 1000}, 0.5)
        assert_that(out | beam.Map(lambda i: i.item_id), equal_to(["new"]))


def test_compact_below_needs_a_dataset_root_and_a_fraction(capsys):
    with pytest.raises(SystemExit):
        parse(["--interactions", "x.csv", "--output", "out", "--compact-below", "0.3"])
    assert "--compact-below needs --dataset-root" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--interactions", "x.csv", "--dataset-root", "r", "--compact-below", "1.5"])
    assert "between 0 and 1" in capsys.readouterr().err
    config, _, _ = parse(["--interactions", "x.csv", "--dataset-root", "r"])
    assert config.compact_below == 0.5


def two_nights(tmp_path: Path, synth16: Path, donor_videos: Path, *flags: str):
    """A first version, then ``CHANGED`` of its videos replaced and a second run with ``flags``."""
    inputs = tmp_path / "inputs"
    shutil.copytree(synth16, inputs)
    root = str(tmp_path / "root")
    args = [
        "--interactions",
        str(inputs / "pairs.csv"),
        "--videos",
        str(inputs / "videos"),
        "--dataset-root",
        root,
    ]
    args += ["--shard-max-samples", "6", *QUICK]
    first = run(args)
    items = sorted(dataset_table(first.output, "items").column("item_id").to_pylist())
    changed = items[:CHANGED]
    for n, item in enumerate(changed):
        shutil.copyfile(donor_videos / "videos" / f"{n % 3 + 1}.mp4", inputs / "videos" / f"{item}.mp4")
    second = run([*args, *flags])
    return root, first, second, set(items) - set(changed), args


def sample_jpegs(dataset: str, row: dict) -> list[bytes]:
    shard = (Path(dataset) / row["shard"]).resolve()
    with open(shard, "rb") as handle:
        handle.seek(row["offset"])
        piece = handle.read(row["size"])
    with tarfile.open(fileobj=io.BytesIO(piece + END_OF_ARCHIVE), mode="r:") as archive:
        return [archive.extractfile(m).read() for m in archive if fmt.is_frame_member(m.name)]


def test_a_mostly_dead_earlier_version_is_copied_from_and_then_pruned(tmp_path, synth16, donor_videos):
    root, first, second, unchanged, _ = two_nights(tmp_path, synth16, donor_videos)
    assert first.manifest["num_items"] == 16 and len(unchanged) == 16 - CHANGED
    assert second.counters["items_reused"] == len(unchanged)
    assert second.counters["items_compacted"] == len(unchanged)
    assert second.stats["videos_compacted"] == len(unchanged)
    assert f"compacted   {len(unchanged)} reused item(s)" in format_summary(second.manifest, second.stats)
    assert not earlier_versions(second.manifest)
    shards = second.manifest["shards"][fmt.ITEM_SHARDS]
    assert sum(s["samples"] for s in shards) == 16 and not any(
        fmt.is_earlier_version_path(s["path"]) for s in shards
    )
    before = {r["item_id"]: r for r in dataset_table(first.output, "items").to_pylist()}
    after = {r["item_id"]: r for r in dataset_table(second.output, "items").to_pylist()}
    for item in unchanged:  # the same frames, copied by offset
        assert not fmt.is_earlier_version_path(after[item]["shard"])
        assert sample_jpegs(second.output, after[item]) == sample_jpegs(first.output, before[item])

    assert versions.prune(root, keep=1) == [Path(first.output).name]
    assert not Path(first.output).exists()
    assert versions.validate_manifest(second.output)["dataset_version"] == second.manifest["dataset_version"]
    assert inspect_cli.main([second.output]) == 0


def test_with_compact_below_0_the_earlier_version_is_kept_until_a_later_run_compacts(
    tmp_path, synth16, donor_videos
):
    root, first, second, unchanged, args = two_nights(tmp_path, synth16, donor_videos, "--compact-below", "0")
    first_id, second_id = Path(first.output).name, Path(second.output).name
    assert second.counters.get("items_compacted", 0) == 0
    assert earlier_versions(second.manifest) == {first_id}
    after = {r["item_id"]: r for r in dataset_table(second.output, "items").to_pylist()}
    assert all(after[item]["shard"].startswith(f"../{first_id}/") for item in unchanged)
    assert versions.prune(root, keep=1) == []
    assert Path(first.output).exists()

    # the next night (nothing changed, default --compact-below): the first version's samples are still
    # the 6 unchanged items, sparse; the second's are the 10 it decoded, all in use
    third = run(args)
    assert third.counters["items_reused"] == 16 and third.counters["items_compacted"] == len(unchanged)
    assert earlier_versions(third.manifest) == {second_id}
    assert versions.prune(root, keep=1) == [first_id]
    assert versions.validate_manifest(third.output)["dataset_version"] == third.manifest["dataset_version"]
    assert inspect_cli.main([third.output]) == 0
