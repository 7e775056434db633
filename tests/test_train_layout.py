"""Train samples by reference (format version 3) and the item index, on real ingests of synth data.

- ``--train-frames reference``: train shards read back with stock webdataset hold only the JSON
  window, and the writer never reads an item shard; ``--train-frames embedded`` keeps the frames;
- every items-table row's ``(shard, offset, size)`` is exactly that item's sample: the slice parses
  as its tar members (JSON, then JPEGs), and the slices tile their shard; this holds after a nightly
  run for reused and new items alike;
- the manifest says ``train_frames`` and version 3; a version-2 manifest reads as ``embedded``;
- ``videorec inspect`` finds a reference dataset whole.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from dataformat import format as fmt
from dataformat import manifest as manifest_format
from pipeline import inspect as inspect_cli
from pipeline import versions
from pipeline.main import run
from tests.dataset_files import dataset_table
from tests.test_incremental import append_interactions
from transforms import train_shards
from transforms.tar_shards import END_OF_ARCHIVE

QUICK = ["--frame-size", "32", "--direct_running_mode=in_memory", "--direct_num_workers=1", "--quiet"]
SHARD_MAX_BYTES = 16384
"""Less than one embedded train sample here, a dozen JSON-only ones."""


def ingest_args(inputs: Path, layout: str) -> list[str]:
    return [
        "--interactions",
        str(inputs / "pairs.csv"),
        "--videos",
        str(inputs / "videos"),
        "--train-frames",
        layout,
        "--shard-max-samples",
        "6",
        "--shard-max-bytes",
        str(SHARD_MAX_BYTES),
        *QUICK,
    ]


def never_read_item_frames(*_args, **_kwargs):
    raise AssertionError("the reference layout read frames back from an item shard")


@pytest.fixture(scope="module")
def nightly(tmp_path_factory, synth16, donor_videos):
    """Two ``--dataset-root`` runs in the reference layout: a first version, then one with 2 new items
    and 10 % more interactions. Reading item frames back for a train shard fails the run."""
    inputs = tmp_path_factory.mktemp("inputs")
    shutil.copytree(synth16, inputs, dirs_exist_ok=True)
    root = str(tmp_path_factory.mktemp("root"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_shards, "read_item_frames", never_read_item_frames)
        first = run([*ingest_args(inputs, fmt.TRAIN_FRAMES_REFERENCE), "--dataset-root", root])
        old_items = sorted(dataset_table(first.output, "items").column("item_id").to_pylist())
        new_items = ["901", "902"]
        for item, donor_item in zip(new_items, ["1", "2"], strict=True):
            shutil.copyfile(donor_videos / "videos" / f"{donor_item}.mp4", inputs / "videos" / f"{item}.mp4")
        append_interactions(inputs / "pairs.csv", new_items, old_items[3:], 0.10)
        second = run([*ingest_args(inputs, fmt.TRAIN_FRAMES_REFERENCE), "--dataset-root", root])
    return first, second, new_items


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, synth16):
    return run(
        [
            *ingest_args(synth16, fmt.TRAIN_FRAMES_EMBEDDED),
            "--output",
            str(tmp_path_factory.mktemp("e") / "d"),
        ]
    )


def shard_urls(result, kind: str) -> list[str]:
    return [str(Path(result.output) / s["path"]) for s in result.manifest["shards"][kind]]


def test_reference_train_shards_hold_only_the_json_window(nightly):
    for result in nightly[:2]:
        sequences = {r["user_id"]: r for r in dataset_table(result.output, "sequences").to_pylist()}
        samples = list(wds.WebDataset(shard_urls(result, fmt.TRAIN_SHARDS), shardshuffle=False))
        assert len(samples) == sum(s["samples"] for s in result.manifest["shards"][fmt.TRAIN_SHARDS]) > 0
        for sample in samples:
            assert {field for field in sample if not field.startswith("__")} == {fmt.METADATA_FIELD}
            window = json.loads(sample["json"])
            full = sequences[window["user_id"]]
            assert (
                window["item_indices"] == full["item_indices"][:-2][-(result.manifest["max_seq_len"] + 1) :]
            )
            assert window["user_index"] == full["user_index"]
        for shard in result.manifest["shards"][fmt.TRAIN_SHARDS]:  # gzip-compressed tars
            assert shard["path"] == fmt.COMPRESSED_TRAIN_SHARD_PATTERN.format(int(shard["path"][12:18]))
            assert (Path(result.output) / shard["path"]).read_bytes()[:2] == b"\x1f\x8b"
        # cut by the JSON's bytes: several users a shard (at most 6), where embedded samples go alone
        assert len(result.manifest["shards"][fmt.TRAIN_SHARDS]) <= len(samples) / 3


def test_embedded_train_shards_still_hold_the_frames(embedded):
    item_frames = {}
    for sample in wds.WebDataset(shard_urls(embedded, fmt.ITEM_SHARDS), shardshuffle=False):
        meta = json.loads(sample["json"])
        item_frames[meta["item_index"]] = [sample[f"{j}.jpg"] for j in range(meta["frames"])]
    frames_seen = 0
    for sample in wds.WebDataset(shard_urls(embedded, fmt.TRAIN_SHARDS), shardshuffle=False):
        window = json.loads(sample["json"])
        for index in set(window["item_indices"]):
            for j, frame in enumerate(item_frames[index]):
                assert sample[fmt.frame_field(fmt.train_frame_prefix(index), j)] == frame
                frames_seen += 1
    assert frames_seen > 0
    shards = embedded.manifest["shards"][fmt.TRAIN_SHARDS]
    assert all(s["samples"] == 1 and s["bytes"] > SHARD_MAX_BYTES for s in shards)
    assert all(s["path"].endswith(".tar") for s in shards)  # plain tars, as in format version 2
    assert embedded.manifest["train_frames"] == fmt.TRAIN_FRAMES_EMBEDDED


def check_item_index(result) -> int:
    """Every items-table row's ``(shard, offset, size)`` slice is that item's whole sample, and the
    slices of each of the version's own shards tile it up to the end-of-archive marker (an earlier
    version's shard, ``../<id>/...``, also holds samples this version does not index, under that
    version's item indices). Returns the items checked."""
    root, checked = Path(result.output), 0
    rows = dataset_table(root, fmt.ITEMS_TABLE).to_pylist()
    by_shard: dict[str, list[dict]] = {}
    for row in rows:
        by_shard.setdefault(row["shard"], []).append(row)
    assert sorted(by_shard) == sorted(s["path"] for s in result.manifest["shards"][fmt.ITEM_SHARDS])
    for shard, placed in by_shard.items():
        data = (root / shard).read_bytes()
        placed.sort(key=lambda r: r["offset"])
        ends = [0] + [r["offset"] + r["size"] for r in placed]
        own = not fmt.is_earlier_version_path(shard)
        if own:
            assert [r["offset"] for r in placed] == ends[:-1]  # back to back from byte 0
            assert data[ends[-1] :] == END_OF_ARCHIVE
        for row in placed:
            piece = data[row["offset"] : row["offset"] + row["size"]]
            with tarfile.open(fileobj=io.BytesIO(piece + END_OF_ARCHIVE), mode="r:") as archive:
                members = [(m.name, archive.extractfile(m).read()) for m in archive if m.isfile()]
            key = fmt.sanitize_key(row["item_id"])
            meta = json.loads(members[0][1])
            assert members[0][0] == fmt.metadata_member(key)
            assert meta["item_id"] == row["item_id"]
            assert meta["item_index"] == row["item_index"] or not own
            assert [name for name, _ in members[1:]] == [
                fmt.item_frame_member(key, j) for j in range(meta["frames"])
            ]
            for _, jpeg in members[1:]:
                assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
                Image.open(io.BytesIO(jpeg)).load()
            checked += 1
    return checked


def test_the_items_table_indexes_each_items_sample(nightly, embedded):
    first, _, _ = nightly
    assert check_item_index(first) == first.manifest["num_items"]
    assert check_item_index(embedded) == embedded.manifest["num_items"]


def test_after_a_nightly_run_reused_and_new_items_are_indexed(nightly):
    first, second, new_items = nightly
    assert second.counters["items_reused"] == first.manifest["num_items"]
    assert second.manifest["num_items"] == first.manifest["num_items"] + len(new_items)
    assert check_item_index(second) == second.manifest["num_items"]
    before = {r["item_id"]: r for r in dataset_table(first.output, "items").to_pylist()}
    after = {r["item_id"]: r for r in dataset_table(second.output, "items").to_pylist()}
    assert set(after) - set(before) == set(new_items)
    first_id = Path(first.output).name
    for item_id, row in before.items():  # reused in place: the first version's bytes, not a copy
        assert after[item_id]["shard"] == f"../{first_id}/{row['shard']}"
        assert (after[item_id]["offset"], after[item_id]["size"]) == (row["offset"], row["size"])
    own = [
        s for s in second.manifest["shards"][fmt.ITEM_SHARDS] if not fmt.is_earlier_version_path(s["path"])
    ]
    assert sum(s["samples"] for s in own) == len(new_items)  # only the new items were written
    for item_id in new_items:
        assert not fmt.is_earlier_version_path(after[item_id]["shard"])


def test_a_version_that_reuses_shards_in_place_keeps_them_through_prune(nightly, tmp_path, capsys):
    first, second, _ = nightly
    root = tmp_path / "root"
    shutil.copytree(Path(second.output).parents[1], root)
    assert versions.prune(root, keep=1) == []  # the first version is pointed into: kept
    second_copy = root / "versions" / Path(second.output).name
    assert versions.validate_manifest(second_copy)["dataset_version"] == second.manifest["dataset_version"]
    assert inspect_cli.main([str(second_copy)]) == 0
    shards = second.manifest["shards"][fmt.ITEM_SHARDS]
    earlier = [s["path"] for s in shards if fmt.is_earlier_version_path(s["path"])]
    assert earlier and all(path.startswith(f"../{Path(first.output).name}/items/") for path in earlier)
    (second_copy / earlier[0]).unlink()
    assert inspect_cli.main([str(second_copy)]) == 1
    assert "missing" in capsys.readouterr().out


def jpegs(sample: bytes) -> list[bytes]:
    with tarfile.open(fileobj=io.BytesIO(sample + END_OF_ARCHIVE), mode="r:") as archive:
        return [archive.extractfile(m).read() for m in archive if fmt.is_frame_member(m.name)]


def test_the_manifest_records_the_layout_and_version_3(nightly, embedded):
    manifest = nightly[1].manifest
    assert (manifest["format_version"], manifest["train_frames"]) == (3, fmt.TRAIN_FRAMES_REFERENCE)
    assert fmt.FORMAT_VERSION == 3 and manifest_format.manifest_problems(manifest) == []
    assert manifest_format.train_frames_of(manifest) == fmt.TRAIN_FRAMES_REFERENCE
    assert manifest_format.train_frames_of(embedded.manifest) == fmt.TRAIN_FRAMES_EMBEDDED


def test_a_version_2_manifest_still_reads_as_embedded(embedded):
    old = {k: v for k, v in embedded.manifest.items() if k != "train_frames"} | {"format_version": 2}
    assert manifest_format.parse_manifest(json.dumps(old).encode(), "m") == old
    assert manifest_format.train_frames_of(old) == fmt.TRAIN_FRAMES_EMBEDDED
    unknown = {**embedded.manifest, "train_frames": "linked"}
    assert manifest_format.manifest_problems(unknown) == [
        "train_frames is 'linked', not one of reference, embedded"
    ]
    assert manifest_format.manifest_problems({**old, "format_version": 4})[0].startswith(
        "format_version is 4"
    )


def test_inspect_finds_a_reference_dataset_whole(nightly, capsys):
    assert inspect_cli.main([nightly[1].output]) == 0
    assert "dataset OK" in capsys.readouterr().out
